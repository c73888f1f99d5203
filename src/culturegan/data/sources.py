"""Fetch a style dataset (local folder, local or http(s) archive, s3:// prefix) into a local folder.

Downloads are retried, resumable and atomic; archives are unpacked defensively (no path escapes,
links, devices or bombs) into a cache; ingest then scans `FetchedSource.root` for images.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import gzip
import hashlib
import http.client
import json
import logging
import lzma
import os
import re
import shutil
import ssl
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from culturegan.config import DownloadConfig
from culturegan.data.manifest import Reason, RejectRow
from culturegan.errors import SourceError
from culturegan.fileio import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
CHUNK = 1 << 20
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
# No common image encoding spends more than 8 bytes a pixel (16-bit RGBA); the slack covers
# headers, ICC profiles and EXIF.
MAX_BYTES_PER_PIXEL = 8
MEMBER_SLACK_BYTES = 1 << 20
MAX_BACKOFF_S = 60.0
S3_WORKERS = 8
# Part of every extraction key: bump it when the extraction rules change so old caches are redone.
_EXTRACT_VERSION = "1"
_DRIVE = re.compile(r"^[A-Za-z]:")
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
# Errors that make one member or object unwritable (name clashes, over-long names): a reject.
# Any other OSError (a full disk) stops the fetch.
_MEMBER_ERRNOS = {
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENAMETOOLONG,
    errno.EINVAL,
    errno.EILSEQ,
}


@dataclass
class FetchedSource:
    """A local folder to scan for images, where each file in it came from, and what was refused."""

    # local directory holding the files to scan (ingest never modifies it)
    root: Path
    # a file under root (absolute, or relative to root) -> its origin URI for the manifest and
    # rejects, e.g. "/abs/folder/trainA/x.jpg", "https://host/ds.zip#ds/trainA/x.jpg",
    # "s3://bucket/prefix/trainA/x.jpg"; a picklable object, so worker processes can use it
    origin: Callable[[Path], str]
    # members or objects refused while fetching or extracting (reasons from manifest.Reason)
    rejects: list[RejectRow] = field(default_factory=list)


def fetch_source(
    source: str, cache_dir: Path, download: DownloadConfig, max_pixels: int | None = None
) -> FetchedSource:
    """Make `source` available as a local folder (under `cache_dir` unless it already is one).

    `max_pixels` bounds the bytes of one archive member or S3 object: a file larger than any
    encoding of that many pixels is rejected without being written.
    """
    cache_dir = Path(os.path.abspath(cache_dir))
    limits = _Limits(download.max_archive_bytes, max_pixels)
    if source.startswith("s3://"):
        return _fetch_s3(source, cache_dir, download, limits)
    if source.startswith(("http://", "https://")):
        archive = _download_http(source, cache_dir / "downloads", download)
        return _extract_cached(
            archive,
            label=redact_url(source),
            identity=source,
            name=_url_basename(source),
            cache_dir=cache_dir,
            limits=limits,
            discard_on_corrupt=True,
        )
    path = _local_path(source)
    if path.is_dir():
        return FetchedSource(root=path, origin=_PrefixOrigin(path, str(path).rstrip("/") + "/"))
    if path.is_file():
        if _archive_kind(path) is None:
            raise SourceError(
                f"source {path} is a file but not a zip or tar archive",
                hint="point data.source at a folder of images or a .zip/.tar(.gz/.bz2/.xz) archive",
            )
        st = path.stat()
        return _extract_cached(
            path,
            label=str(path),
            identity=f"{path}|{st.st_size}|{st.st_mtime_ns}",
            name=path.name,
            cache_dir=cache_dir,
            limits=limits,
            discard_on_corrupt=False,
        )
    raise SourceError(
        f"source folder {path} does not exist",
        hint="check data.source in params.yaml (a relative path starts at the current folder)",
    )


def redact_url(url: str) -> str:
    """`url` without user info and with its query string masked: safe for messages and manifests."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    shown = urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
    # Signed URLs carry their credential in the query string.
    return shown + ("?<redacted>" if parts.query else "")


# --- origins: small picklable callables, so ingest can hand them to worker processes ---


def _rel_posix(root: Path, path: Path) -> str:
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.resolve().relative_to(root.resolve()).as_posix()


@dataclass(frozen=True)
class _PrefixOrigin:
    root: Path
    prefix: str

    def __call__(self, path: Path) -> str:
        return self.prefix + _rel_posix(self.root, path)


@dataclass(frozen=True)
class _ViewOrigin:
    """Origins in an S3 view: plain objects map to their key, files in a mount to archive#member."""

    root: Path
    prefix: str  # s3://bucket/<base>
    mounts: dict[str, str]  # view folder -> "s3://bucket/key#"

    def __call__(self, path: Path) -> str:
        rel = _rel_posix(self.root, path)
        head = rel
        while "/" in head:
            head = head.rsplit("/", 1)[0]
            if head in self.mounts:
                return self.mounts[head] + rel[len(head) + 1 :]
        return self.prefix + rel


# --- helpers ---


@dataclass(frozen=True)
class _Limits:
    max_archive_bytes: int
    max_pixels: int | None

    @property
    def member_bytes(self) -> int | None:
        if self.max_pixels is None:
            return None
        return self.max_pixels * MAX_BYTES_PER_PIXEL + MEMBER_SLACK_BYTES


class _Retryable(Exception):
    """A transfer that ended early or oddly but may well succeed if tried again."""


class _CorruptArchive(Exception):
    pass


class _Gone(Exception):
    """An S3 object listed a moment ago is no longer there."""


# A damaged zip member (bad CRC, unknown method) spoils only itself; the rest can still be read.
_ZIP_MEMBER_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[-100:].lstrip(".") or "download"


def _url_basename(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path).rstrip("/").rsplit("/", 1)[-1]


def _is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _strip_archive_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _local_path(source: str) -> Path:
    if source.startswith("file://"):
        parts = urllib.parse.urlsplit(source)
        if parts.netloc not in ("", "localhost"):
            raise SourceError(
                f"file URI {source!r} names another host ({parts.netloc})",
                hint="use file:///absolute/path or a plain path",
            )
        return Path(os.path.abspath(urllib.request.url2pathname(parts.path)))
    return Path(os.path.abspath(Path(source).expanduser()))


def _backoff(cfg: DownloadConfig, retry: int, retry_after: float | None = None) -> float:
    delay = min(cfg.backoff_s * 2 ** (retry - 1), MAX_BACKOFF_S)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_BACKOFF_S))
    return delay


def _too_big(what: str, limit: int) -> SourceError:
    return SourceError(
        f"{what}, more than data.download.max_archive_bytes ({limit})",
        hint="this looks like an archive bomb; raise the limit only if the archive is genuine",
    )


def _ratio_detail(ratio: float) -> str:
    return f"compression ratio {ratio:.0f}:1 above {MAX_COMPRESSION_RATIO}:1: an archive bomb?"


def _too_large_detail(size: int, max_pixels: int | None) -> str:
    return f"{size} bytes: larger than any image of at most data.max_pixels={max_pixels} pixels"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _progress(**kwargs: Any) -> tqdm:
    # disable=None turns the bar off when stderr is not a terminal (CI, KFP logs).
    return tqdm(disable=None, leave=False, **kwargs)


# --- HTTP(S) ---


def _split_userinfo(url: str) -> tuple[str, str | None]:
    """The URL without user:password@ and the matching Basic Authorization header, if any."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, None
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), f"Basic {token}"


def _scrub(text: str, url: str) -> str:
    """Remove any secret part of `url` that an exception message may have echoed."""
    parts = urllib.parse.urlsplit(url)
    for secret in (parts.password, parts.query, url):
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def _describe(err: BaseException | None) -> str:
    if isinstance(err, _Retryable):
        return str(err)
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return f"{type(err).__name__}: {err}" if err is not None else "unknown error"


def _retryable_status(code: int) -> bool:
    return code == 429 or 500 <= code < 600


def _http_hint(code: int) -> str:
    if code in (401, 403):
        return "access refused: check the URL (a signed URL may have expired) and any credentials"
    if code in (404, 410):
        return "no file at this URL: check data.source in params.yaml"
    return "check data.source in params.yaml"


def _retry_after(err: urllib.error.HTTPError) -> float | None:
    value = err.headers.get("Retry-After") if err.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _content_range(value: str | None) -> tuple[int, int | None]:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (value or "").strip())
    if not match:
        raise _Retryable(f"unusable Content-Range {value!r} on a resumed download")
    total = None if match.group(2) == "*" else int(match.group(2))
    return int(match.group(1)), total


def _download_http(url: str, downloads: Path, cfg: DownloadConfig) -> Path:
    """Download `url` to downloads/<sha256(url)[:16]>-<name>, reusing a completed download."""
    shown = redact_url(url)
    dest = downloads / f"{_sha(url)[:16]}-{_safe_name(_url_basename(url))}"
    if dest.is_file():
        log.info("reusing %s, downloaded earlier from %s", dest, shown)
        return dest
    downloads.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    # The validator (ETag or Last-Modified) of the bytes in .part: a resume sends it in If-Range so
    # a file changed on the server restarts from zero instead of being spliced.
    meta = dest.with_name(dest.name + ".part.json")
    request_url, auth = _split_userinfo(url)
    attempts = cfg.retries + 1
    last: BaseException | None = None
    retry_after: float | None = None
    try:
        for attempt in range(attempts):
            if attempt:
                delay = _backoff(cfg, attempt, retry_after)
                log.warning(
                    "download of %s failed (%s); retry %d/%d in %.1f s",
                    shown,
                    _scrub(_describe(last), url),
                    attempt,
                    cfg.retries,
                    delay,
                )
                time.sleep(delay)
            retry_after = None
            try:
                _stream_once(request_url, auth, part, meta, cfg, shown)
            except urllib.error.HTTPError as err:
                err.close()  # frees the connection; the body is not needed
                if not _retryable_status(err.code):
                    raise SourceError(
                        f"{shown} answered HTTP {err.code} {err.reason}", hint=_http_hint(err.code)
                    ) from None
                last, retry_after = err, _retry_after(err)
            except urllib.error.URLError as err:
                if isinstance(err.reason, ssl.SSLCertVerificationError):
                    raise SourceError(
                        f"TLS certificate of {shown} not verified: {err.reason.verify_message}",
                        hint="check the URL's host name; a private CA needs SSL_CERT_FILE",
                    ) from None
                last = err
            except (http.client.HTTPException, ConnectionError, TimeoutError, _Retryable) as err:
                last = err
            else:
                if _archive_kind(part) is None:
                    with open(part, "rb") as f:
                        head = f.read(16)
                    raise SourceError(
                        f"{shown} is not a zip or tar archive (it starts with {head!r})",
                        hint="the URL may point at a web page; use the direct download link",
                    )
                os.replace(part, dest)
                log.info("downloaded %s (%d bytes) to %s", shown, dest.stat().st_size, dest)
                return dest
        reason = _scrub(_describe(last), url)
        raise SourceError(
            f"download of {shown} failed after {attempts} attempt(s): {reason}",
            hint="check the URL and the network, or raise data.download.retries / timeout_s",
        )
    except (KeyboardInterrupt, SystemExit):
        raise  # an interrupted download keeps its .part so that the next run resumes it
    except BaseException:
        part.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        raise
    finally:
        if dest.exists():
            meta.unlink(missing_ok=True)


def _stream_once(
    url: str, auth: str | None, part: Path, meta: Path, cfg: DownloadConfig, shown: str
) -> None:
    """One GET of `url` into `part`, resumed by a Range request when `part` holds a known prefix."""
    offset = part.stat().st_size if part.exists() else 0
    validator = _read_json(meta).get("validator") if offset else None
    headers = {"User-Agent": "culturegan", "Accept-Encoding": "identity"}
    if auth:
        headers["Authorization"] = auth
    if offset and validator:
        headers["Range"] = f"bytes={offset}-"
        headers["If-Range"] = validator
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=cfg.timeout_s
        )
    except urllib.error.HTTPError as err:
        if err.code == 416 and "Range" in headers:
            part.unlink(missing_ok=True)
            raise _Retryable("the server refused to resume (HTTP 416)") from None
        raise
    with response:
        if "Range" in headers and response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(f"the server resumed at byte {start}, not {offset}")
            mode, received = "ab", offset
            log.info("resuming %s at byte %d", shown, offset)
        else:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode, received = "wb", 0
            etag = response.headers.get("ETag")
            new_validator = (
                etag
                if etag and not etag.startswith("W/")
                else response.headers.get("Last-Modified")
            )
            if new_validator:
                atomic_write_text(meta, json.dumps({"validator": new_validator}))
            else:
                meta.unlink(missing_ok=True)
        if total is not None and total > cfg.max_archive_bytes:
            raise _too_big(f"{shown} is {total} bytes", cfg.max_archive_bytes)
        with (
            open(part, mode) as out,
            _progress(
                total=total, initial=received, unit="B", unit_scale=True, desc=part.name
            ) as bar,
        ):
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
                if received > cfg.max_archive_bytes:
                    raise _too_big(f"{shown} sent over {received} bytes", cfg.max_archive_bytes)
    # http.client returns a short body without complaint when the peer closes early.
    if total is not None and received != total:
        raise _Retryable(f"the connection closed after {received} of {total} bytes")


# --- archives ---


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


def _member_parts(name: str) -> tuple[str, ...] | str:
    """The path components of an archive member or S3 key, or why it may not be written."""
    norm = name.replace("\\", "/")
    if "\x00" in norm:
        return "name contains a NUL byte"
    if norm.startswith("/") or _DRIVE.match(norm):
        return "absolute path"
    parts = tuple(p for p in norm.split("/") if p not in ("", "."))
    if ".." in parts:
        return "'..' in path would escape the target folder (zip-slip)"
    return parts


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


def _extract_tar(path: Path, sink: _Sink) -> None:
    with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tf:
        for member in tf:
            name = member.name
            if _is_archiver_metadata(name):
                continue
            if member.isdir():
                sink.mkdir(name)
            elif member.issym():
                sink.reject(name, Reason.UNSAFE_PATH, f"symbolic link to {member.linkname!r}")
            elif member.islnk():
                sink.reject(name, Reason.UNSAFE_PATH, f"hard link to {member.linkname!r}")
            elif member.isdev():
                sink.reject(name, Reason.UNSAFE_PATH, "device or fifo")
            elif not member.isreg():
                sink.reject(name, Reason.UNSAFE_PATH, f"unsupported member type {member.type!r}")
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


# --- S3 ---


@dataclass(frozen=True)
class _S3Object:
    key: str
    size: int
    etag: str


def _s3_client(cfg: DownloadConfig) -> Any:
    # Endpoint and credentials come only from the environment (AWS_ENDPOINT_URL_S3,
    # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_PROFILE, ...), which boto3 >= 1.28 reads itself.
    import boto3
    from botocore.config import Config

    config = Config(
        # botocore reads "max_attempts" here as retries after the first try; say the total instead.
        retries={"mode": "standard", "total_max_attempts": cfg.retries + 1},
        connect_timeout=cfg.timeout_s,
        read_timeout=cfg.timeout_s,
        max_pool_connections=S3_WORKERS,
    )
    return boto3.session.Session().client("s3", config=config)


_S3_HINT = "check that AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 point at the right S3 server"
_S3_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
    "403",
}


def _s3_error(err: Exception, what: str, bucket: str) -> SourceError:
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(err, NoCredentialsError):
        return SourceError(
            f"no AWS credentials to read {what}",
            hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
        )
    if not isinstance(err, ClientError):
        return SourceError(f"cannot reach S3 to read {what}: {err}", hint=f"{_S3_HINT}; then rerun")
    code = str(err.response.get("Error", {}).get("Code", ""))
    message = str(err.response.get("Error", {}).get("Message", ""))
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchBucket":
        return SourceError(
            f"S3 bucket '{bucket}' does not exist (reading {what})",
            hint=f"check the bucket name in data.source, and {_S3_HINT}",
        )
    if code in _S3_AUTH_CODES or status == 403:
        return SourceError(
            f"access to {what} denied ({code})",
            hint=f"check the AWS credentials in the environment, the bucket policy, and {_S3_HINT}",
        )
    return SourceError(f"S3 error reading {what}: {code} {message}".rstrip(), hint=_S3_HINT)


def _parse_s3(source: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(source)
    bucket, prefix = parts.netloc, parts.path.lstrip("/")
    if not _BUCKET.match(bucket):
        raise SourceError(
            f"{source!r} does not name a valid S3 bucket", hint="write it as s3://bucket/prefix"
        )
    return bucket, prefix


def _list_s3(client: Any, bucket: str, prefix: str, source: str) -> tuple[str, list[_S3Object]]:
    """The objects under `prefix` and the key folder ('base') their local paths are relative to."""
    from botocore.exceptions import BotoCoreError, ClientError

    found: list[_S3Object] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                found.append(
                    _S3Object(obj["Key"], int(obj["Size"]), str(obj.get("ETag", "")).strip('"'))
                )
    except (ClientError, BotoCoreError) as err:
        raise _s3_error(err, source, bucket) from None
    stem = prefix.rstrip("/")
    if len(found) == 1 and found[0].key == stem and stem:
        return (
            stem.rpartition("/")[0] + "/" if "/" in stem else ""
        ), found  # the source is one object
    base = f"{stem}/" if stem else ""
    # 's3://b/styles' means the folder styles/, not also styles2/...; folder markers hold no data.
    objects = [o for o in found if o.key.startswith(base) and not o.key.endswith("/")]
    if not objects:
        raise SourceError(
            f"no objects under {source}",
            hint=f"check the prefix (it is case-sensitive) and the bucket, and {_S3_HINT}",
        )
    return base, objects


def _s3_download(
    client: Any, bucket: str, obj: _S3Object, dest: Path, meta: Path, cfg: DownloadConfig
) -> bool:
    """Download one object atomically unless an identical copy is already there; True if fetched."""
    from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if dest.is_file() and dest.stat().st_size == obj.size:
        recorded = _read_json(meta).get("etag")
        if recorded in (None, obj.etag):
            return False
    uri = f"s3://{bucket}/{obj.key}"
    last: BaseException | None = None
    for attempt in range(cfg.retries + 1):
        if attempt:
            time.sleep(_backoff(cfg, attempt))
        try:
            # botocore already retries the request itself; this loop covers a body cut short.
            response = client.get_object(Bucket=bucket, Key=obj.key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise _Gone(f"{uri} was deleted after it was listed") from None
            raise _s3_error(err, uri, bucket) from None
        except BotoCoreError as err:
            raise _s3_error(err, uri, bucket) from None
        try:
            expected = int(response.get("ContentLength", -1))
            with atomic_path(dest) as tmp, open(tmp, "wb") as out:
                received = 0
                for chunk in response["Body"].iter_chunks(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                if expected >= 0 and received != expected:
                    raise _Retryable(f"got {received} of {expected} bytes")
        except (BotoConnectionError, HTTPClientError, IncompleteReadError, _Retryable) as err:
            last = err
            log.warning(
                "download of %s failed (%s); retry %d/%d", uri, err, attempt + 1, cfg.retries
            )
            continue
        atomic_write_text(
            meta, json.dumps({"etag": str(response.get("ETag", "")).strip('"'), "size": received})
        )
        return True
    raise SourceError(
        f"download of {uri} failed after {cfg.retries + 1} attempt(s): {last}",
        hint=f"{_S3_HINT}; rerun to resume (finished objects are kept)",
    )


def _fetch_s3(source: str, cache_dir: Path, cfg: DownloadConfig, limits: _Limits) -> FetchedSource:
    bucket, prefix = _parse_s3(source)
    client = _s3_client(cfg)
    base, objects = _list_s3(client, bucket, prefix, source)
    mirror = cache_dir / "s3" / bucket
    # Bucket names cannot start with '.', so the sidecars cannot clash with a bucket's folder.
    meta_root = cache_dir / "s3" / ".meta" / bucket
    rejects: list[RejectRow] = []
    wanted: list[tuple[_S3Object, Path, Path]] = []
    seen: dict[tuple[str, ...], str] = {}
    for obj in objects:
        uri = f"s3://{bucket}/{obj.key}"
        parts = _member_parts(obj.key)
        if isinstance(parts, str) or not parts:
            rejects.append(RejectRow(uri, Reason.UNSAFE_PATH, parts or "empty key"))
            continue
        if parts in seen:  # 'a//b' and 'a/b' would share one local file
            rejects.append(
                RejectRow(uri, Reason.UNSAFE_PATH, f"same local path as {seen[parts]!r}")
            )
            continue
        seen[parts] = obj.key
        if _is_archive_name(obj.key):
            if obj.size > limits.max_archive_bytes:
                raise _too_big(f"{uri} is {obj.size} bytes", limits.max_archive_bytes)
        elif limits.member_bytes is not None and obj.size > limits.member_bytes:
            rejects.append(
                RejectRow(uri, Reason.TOO_LARGE, _too_large_detail(obj.size, limits.max_pixels))
            )
            continue
        wanted.append(
            (obj, mirror.joinpath(*parts), meta_root.joinpath(*parts[:-1], parts[-1] + ".json"))
        )

    def fetch(item: tuple[_S3Object, Path, Path]) -> RejectRow | bool:
        """The reject row for this object, or whether it had to be downloaded."""
        obj, dest, meta = item
        try:
            return _s3_download(client, bucket, obj, dest, meta, cfg)
        except _Gone as err:
            # One object deleted since the listing is one missing file, not a broken source.
            return RejectRow(f"s3://{bucket}/{obj.key}", Reason.DOWNLOAD_FAILED, str(err))
        except OSError as err:
            if err.errno not in _MEMBER_ERRNOS:
                raise
            # e.g. both 'a' and 'a/b' exist as keys: they cannot both be local paths.
            return RejectRow(
                f"s3://{bucket}/{obj.key}", Reason.UNSAFE_PATH, f"cannot be written: {err.strerror}"
            )

    with (
        ThreadPoolExecutor(S3_WORKERS) as pool,
        _progress(total=len(wanted), unit="file", desc=source) as bar,
    ):
        futures = [pool.submit(fetch, item) for item in wanted]
        for future in futures:
            future.add_done_callback(lambda _: bar.update(1))
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        results = [f.result() for f in futures]
    rejects += [row for row in results if isinstance(row, RejectRow)]
    downloaded = sum(row is True for row in results)
    log.info("%s: %d object(s) downloaded, %d reused", source, downloaded, len(wanted) - downloaded)
    fetched = {
        item[0].key
        for item, row in zip(wanted, results, strict=True)
        if not isinstance(row, RejectRow)
    }

    archives: dict[str, FetchedSource] = {}
    plain: dict[str, Path] = {}
    for obj, dest, meta in wanted:
        if obj.key not in fetched:
            continue
        if _is_archive_name(obj.key):
            etag = _read_json(meta).get("etag", obj.etag)
            archives[obj.key] = _extract_cached(
                dest,
                label=f"s3://{bucket}/{obj.key}",
                identity=f"s3://{bucket}/{obj.key}|{etag}|{obj.size}",
                name=dest.name,
                cache_dir=cache_dir,
                limits=limits,
                discard_on_corrupt=True,
            )
            rejects += archives[obj.key].rejects
        else:
            rel = _member_parts(obj.key[len(base) :])
            assert not isinstance(rel, str)  # the whole key passed this check already
            plain["/".join(rel)] = dest
    if len(objects) == 1 and len(archives) == 1:
        only = next(iter(archives.values()))
        return FetchedSource(root=only.root, origin=only.origin, rejects=rejects)
    return _build_view(cache_dir, f"s3://{bucket}/{base}", plain, archives, base, rejects)


def _build_view(
    cache_dir: Path,
    prefix: str,
    plain: dict[str, Path],
    archives: dict[str, FetchedSource],
    base: str,
    rejects: list[RejectRow],
) -> FetchedSource:
    """One folder to scan: hard links to the downloaded objects and to each archive's contents.

    Rebuilt on every fetch so it holds exactly what the prefix holds now, whatever the cache
    kept from earlier runs; links cost no copy.
    """
    views = cache_dir / "views"
    view = views / _sha(prefix)[:16]
    taken = set(plain)
    for rel in plain:
        parts = rel.split("/")
        taken.update("/".join(parts[:i]) for i in range(1, len(parts)))
    mounts: dict[str, str] = {}
    mount_of: dict[str, str] = {}
    for key in archives:
        mount = _strip_archive_suffix(key[len(base) :])
        while mount in taken or mount in mount_of.values():
            mount += ".extracted"  # the archive's plain name is already a folder of loose objects
        mount_of[key] = mount
        mounts[mount] = f"{prefix}{key[len(base) :]}#"

    views.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".view.", suffix=".tmp", dir=views))
    try:
        for rel, src in plain.items():
            _link(src, tmp / rel)
        for key, fetched in archives.items():
            for dirpath, _, files in os.walk(fetched.root):
                for fname in files:
                    src = Path(dirpath) / fname
                    _link(src, tmp / mount_of[key] / src.relative_to(fetched.root))
        trash = None
        if view.exists():
            trash = Path(tempfile.mkdtemp(prefix=".old.", dir=views))
            view.rename(trash / "view")
        tmp.rename(view)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return FetchedSource(root=view, origin=_ViewOrigin(view, prefix, mounts), rejects=rejects)


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError as err:
        if err.errno == errno.EEXIST:
            raise
        shutil.copyfile(src, dest)  # file systems without hard links
