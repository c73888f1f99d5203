"""Defensive unpacking of zip and tar archives into a cache: no path escapes, links, devices or
bombs; what is refused becomes reject rows.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import IO

from culturegan.data.manifest import Reason, RejectRow
from culturegan.data.source_base import (
    _MEMBER_ERRNOS,
    CHUNK,
    FetchedSource,
    _Limits,
    _member_parts,
    _PrefixOrigin,
    _read_json,
    _safe_name,
    _sha,
    _too_big,
    _too_large_detail,
)
from culturegan.errors import SourceError
from culturegan.fileio import atomic_write_text

log = logging.getLogger(__name__)

# Deflate tops out near 1032:1 and real images (PNG, JPEG) barely compress at all, so a member
# far above this is filler built to exhaust the disk. Small members do no harm whatever their
# ratio.
MAX_COMPRESSION_RATIO = 250
RATIO_MIN_BYTES = 1 << 20
# In a compressed tar the ratio is measured on the raw file offset, which the decompressor reads
# ahead of the data in chunks (8 KiB in Python 3.11, 128 KiB in 3.12+); counting this much extra
# input keeps a legitimate member from looking like a bomb, at the cost of noticing a real one
# only after it wrote about READAHEAD * ratio limit bytes (~85 MB for a 1000:1 gzip bomb).
RAW_READAHEAD_BYTES = 256 << 10
# Part of every extraction key: bump it when the extraction rules change so old caches are redone.
_EXTRACT_VERSION = "1"


class _CorruptArchive(Exception):
    pass


# A damaged zip member (bad CRC, unknown method) spoils only itself; the rest can still be read.
_ZIP_MEMBER_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
)


def _ratio_detail(ratio: float) -> str:
    return f"compression ratio {ratio:.0f}:1 above {MAX_COMPRESSION_RATIO}:1: an archive bomb?"


def _archive_kind(path: Path) -> str | None:
    """'zip', 'tar' (maybe compressed) or None, from the file's content whatever its name."""
    with open(path, "rb") as f:
        head = f.read(512)
    # Compressed streams first: a tar that ends with a zip member would fool zipfile.is_zipfile.
    if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")):
        return "tar"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head[257:262] == b"ustar":
        return "tar"
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    return None


def _is_archiver_metadata(name: str) -> bool:
    # macOS archivers add resource forks (__MACOSX/, ._name): archive-tool metadata, not content.
    norm = name.replace("\\", "/").lstrip("./")
    return norm.startswith("__MACOSX/") or norm.rsplit("/", 1)[-1].startswith("._")


class _Sink:
    """Writes archive members under `target`, refusing anything unsafe, and keeps the rejects."""

    def __init__(self, target: Path, label: str, limits: _Limits) -> None:
        self.target = target
        self.real_target = target.resolve()
        self.label = label
        self.limits = limits
        self.rejects: list[RejectRow] = []
        self.total = 0

    def reject(self, name: str, reason: str, detail: str) -> None:
        log.warning("refused %s#%s: %s", self.label, name, detail)
        self.rejects.append(RejectRow(source=f"{self.label}#{name}", reason=reason, detail=detail))

    def count(self, size: int, name: str) -> None:
        self.total += size
        if self.total > self.limits.max_archive_bytes:
            raise _too_big(
                f"{self.label} unpacks to over {self.total} bytes (at member {name!r})",
                self.limits.max_archive_bytes,
            )

    def _dest(self, name: str, *, is_dir: bool) -> Path | None:
        parts = _member_parts(name)
        if isinstance(parts, str):
            self.reject(name, Reason.UNSAFE_PATH, parts)
            return None
        if not parts:
            if not is_dir:
                self.reject(name, Reason.UNSAFE_PATH, "empty member name")
            return None
        return self.target.joinpath(*parts)

    def _inside(self, path: Path) -> bool:
        # Only regular files and folders are ever created here, so this holds unless someone
        # else tampers with the folder; it is the last line should the name checks miss a case.
        return path.resolve().is_relative_to(self.real_target)

    def mkdir(self, name: str) -> None:
        dest = self._dest(name, is_dir=True)
        if dest is None:
            return
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            if err.errno not in _MEMBER_ERRNOS:
                raise
            self.reject(name, Reason.UNSAFE_PATH, f"cannot create folder: {err.strerror}")

    def write(
        self,
        name: str,
        src: IO[bytes],
        size: int,
        raw_pos: Callable[[], int] | None = None,
        member_errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        """Copy one member; `raw_pos` (the compressed stream's offset) enables the ratio guard."""
        dest = self._dest(name, is_dir=False)
        if dest is None:
            return
        limit = self.limits.member_bytes
        if limit is not None and size > limit:
            self.reject(name, Reason.TOO_LARGE, _too_large_detail(size, self.limits.max_pixels))
            return
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not self._inside(dest.parent):
                self.reject(name, Reason.UNSAFE_PATH, "would land outside the target folder")
                return
            problem = self._copy(src, dest, size, raw_pos)
        except member_errors as err:
            problem = (Reason.CORRUPT, f"unreadable member: {err}")
        except OSError as err:
            if err.errno not in _MEMBER_ERRNOS:
                raise
            problem = (Reason.UNSAFE_PATH, f"cannot be written: {err.strerror}")
        if problem is not None:
            with contextlib.suppress(OSError):
                if dest.is_file():
                    dest.unlink()
            self.reject(name, *problem)

    @staticmethod
    def _copy(
        src: IO[bytes], dest: Path, size: int, raw_pos: Callable[[], int] | None
    ) -> tuple[str, str] | None:
        start = raw_pos() if raw_pos else 0
        written = 0
        # O_NOFOLLOW: never write through a link, even one planted by someone else.
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                if written > size:
                    return (
                        Reason.UNSAFE_PATH,
                        f"holds more data than the {size} bytes its header declares",
                    )
                if raw_pos is not None and written >= RATIO_MIN_BYTES:
                    ratio = written / max(raw_pos() - start + RAW_READAHEAD_BYTES, 1)
                    if ratio > MAX_COMPRESSION_RATIO:
                        return Reason.UNSAFE_PATH, _ratio_detail(ratio)
                out.write(chunk)
        return None


def _extract_zip(path: Path, sink: _Sink) -> None:
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        declared = sum(info.file_size for info in infos)
        if declared > sink.limits.max_archive_bytes:
            raise _too_big(f"{sink.label} declares {declared} bytes", sink.limits.max_archive_bytes)
        for info in infos:
            name = info.filename
            if _is_archiver_metadata(name):
                continue
            if info.is_dir():
                sink.mkdir(name)
                continue
            mode = info.external_attr >> 16
            # create_system 3: made on Unix, so the mode bits are meaningful
            if info.create_system == 3 and stat.S_ISLNK(mode):
                sink.reject(name, Reason.UNSAFE_PATH, "symbolic link")
                continue
            if info.create_system == 3 and stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                sink.reject(name, Reason.UNSAFE_PATH, f"not a regular file (mode {mode:o})")
                continue
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size >= RATIO_MIN_BYTES and ratio > MAX_COMPRESSION_RATIO:
                sink.reject(name, Reason.UNSAFE_PATH, _ratio_detail(ratio))
                continue
            if info.flag_bits & 0x1:
                sink.reject(name, Reason.CORRUPT, "encrypted member")
                continue
            try:
                src = zf.open(info)
            except _ZIP_MEMBER_ERRORS as err:
                sink.reject(name, Reason.CORRUPT, f"unreadable member: {err}")
                continue
            with src:
                sink.write(name, src, info.file_size, member_errors=_ZIP_MEMBER_ERRORS)


# tarfile's "data" extraction filter (PEP 706: Python >= 3.11.4 and 3.12+) vets a member against
# the destination: absolute or escaping names, links pointing outside, devices and fifos. It lets
# through links that stay inside, so links are refused before it is asked. Where it is missing
# (an older Python), the hand-written type checks below stand in for it; the names themselves are
# always checked again by _Sink (which also guards zip members and S3 keys).
_TAR_DATA_FILTER: Callable[[tarfile.TarInfo, str], tarfile.TarInfo | None] | None = getattr(
    tarfile, "data_filter", None
)


def _tar_refusal(member: tarfile.TarInfo, dest: str) -> str | None:
    """Why a tar member may not be unpacked into `dest`, or None for a plain file or folder."""
    if member.issym():
        return f"symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"hard link to {member.linkname!r}"
    if _TAR_DATA_FILTER is not None:
        try:
            _TAR_DATA_FILTER(member, dest)
        except tarfile.SpecialFileError:
            return "device or fifo"
        except tarfile.FilterError as err:
            return f"refused by tarfile's data filter: {err}"
    elif member.isdev():
        return "device or fifo"
    if not (member.isdir() or member.isreg()):
        return f"unsupported member type {member.type!r}"
    return None


def _extract_tar(path: Path, sink: _Sink) -> None:
    dest = str(sink.target)
    with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tf:
        for member in tf:
            name = member.name
            if _is_archiver_metadata(name):
                continue
            refusal = _tar_refusal(member, dest)
            if refusal is not None:
                sink.reject(name, Reason.UNSAFE_PATH, refusal)
            elif member.isdir():
                sink.mkdir(name)
            else:
                sink.count(member.size, name)
                src = tf.extractfile(member)
                assert src is not None  # always a file object for a regular member
                with src:
                    sink.write(name, src, member.size, raw_pos=raw.tell)


def _extract(archive: Path, target: Path, label: str, limits: _Limits) -> list[RejectRow]:
    kind = _archive_kind(archive)
    if kind is None:
        raise _CorruptArchive("not a zip or tar archive")
    sink = _Sink(target, label, limits)
    try:
        if kind == "zip":
            _extract_zip(archive, sink)
        else:
            _extract_tar(archive, sink)
    except (
        zipfile.BadZipFile,
        tarfile.TarError,
        EOFError,
        zlib.error,
        lzma.LZMAError,
        gzip.BadGzipFile,
    ) as err:
        raise _CorruptArchive(f"{type(err).__name__}: {err}") from None
    except OSError as err:
        if err.errno is not None:  # a file-system error (full disk), not bad archive data
            raise
        raise _CorruptArchive(f"{type(err).__name__}: {err}") from None
    return sink.rejects


def _extract_cached(
    archive: Path,
    *,
    label: str,
    identity: str,
    name: str,
    cache_dir: Path,
    limits: _Limits,
    discard_on_corrupt: bool,
) -> FetchedSource:
    """Unpack `archive` into cache_dir/extracted/<key>/ once; reruns reuse it and its rejects."""
    key = f"{_sha(f'{identity}|{limits.member_bytes}|{_EXTRACT_VERSION}')[:16]}-{_safe_name(name)}"
    extracted = cache_dir / "extracted"
    target = extracted / key
    # The rejects live beside the folder, not in it, so that ingest does not scan them.
    record = extracted / f"{key}.json"
    origin = _PrefixOrigin(target, f"{label}#")
    if target.is_dir():
        if record.is_file():
            log.info("reusing %s, unpacked earlier from %s", target, label)
            rows = _read_json(record).get("rejects", [])
            return FetchedSource(root=target, origin=origin, rejects=[RejectRow(**r) for r in rows])
        shutil.rmtree(target)  # a folder without its record is not trusted
    extracted.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=extracted))
    try:
        try:
            rejects = _extract(archive, tmp, label, limits)
        except _CorruptArchive as err:
            hint = "check that the source is a complete zip or tar archive"
            if discard_on_corrupt:
                archive.unlink(missing_ok=True)
                hint = (
                    "the downloaded copy was deleted; rerun to fetch it again, or check the source"
                )
            raise SourceError(f"{label} cannot be unpacked: {err}", hint=hint) from None
        atomic_write_text(
            record,
            json.dumps({"archive": label, "rejects": [asdict(r) for r in rejects]}, indent=1),
        )
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():
                raise
            # Another process unpacked the same archive first; its result is the same.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("unpacked %s into %s (%d member(s) refused)", label, target, len(rejects))
    return FetchedSource(root=target, origin=origin, rejects=rejects)
