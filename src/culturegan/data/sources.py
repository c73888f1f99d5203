"""Fetch a style dataset (local folder, local or http(s) archive, s3:// prefix) into a local folder.

Downloads are retried, resumable and atomic (http_source, s3_source); archives are unpacked
defensively (no path escapes, links, devices or bombs) into a cache (archives); ingest then scans
`FetchedSource.root` for images.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from culturegan.config import DownloadConfig
from culturegan.data.archives import _archive_kind, _extract_cached
from culturegan.data.http_source import _download_http
from culturegan.data.s3_source import _fetch_s3
from culturegan.data.source_base import (
    FetchedSource,
    _Limits,
    _PrefixOrigin,
    _url_basename,
    redact_url,
)
from culturegan.errors import SourceError


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
