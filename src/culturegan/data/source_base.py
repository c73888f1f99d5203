"""Shared pieces of source fetching: the fetched-source type, origins, limits and small helpers.

Internal to culturegan.data (sources, archives, http_source, s3_source); callers use
`culturegan.data.sources.fetch_source`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from culturegan.config import DownloadConfig
from culturegan.data.manifest import RejectRow
from culturegan.errors import SourceError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
CHUNK = 1 << 20
# No common image encoding spends more than 8 bytes a pixel (16-bit RGBA); the slack covers
# headers, ICC profiles and EXIF.
MAX_BYTES_PER_PIXEL = 8
MEMBER_SLACK_BYTES = 1 << 20
MAX_BACKOFF_S = 60.0
_DRIVE = re.compile(r"^[A-Za-z]:")
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


def _backoff(cfg: DownloadConfig, retry: int) -> float:
    return min(cfg.backoff_s * 2 ** (retry - 1), MAX_BACKOFF_S)


def _too_big(what: str, limit: int) -> SourceError:
    return SourceError(
        f"{what}, more than data.download.max_archive_bytes ({limit})",
        hint="this looks like an archive bomb; raise the limit only if the archive is genuine",
    )


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
