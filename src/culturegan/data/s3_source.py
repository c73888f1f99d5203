"""S3 source: list a prefix, download its objects into a mirror, and build one view to scan
(plain objects beside the contents of archive objects).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from culturegan.config import DownloadConfig
from culturegan.data.archives import _extract_cached
from culturegan.data.manifest import Reason, RejectRow
from culturegan.data.source_base import (
    _MEMBER_ERRNOS,
    CHUNK,
    FetchedSource,
    _backoff,
    _is_archive_name,
    _Limits,
    _member_parts,
    _progress,
    _read_json,
    _Retryable,
    _sha,
    _strip_archive_suffix,
    _too_big,
    _too_large_detail,
    _ViewOrigin,
)
from culturegan.errors import SourceError
from culturegan.fileio import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

S3_WORKERS = 8
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


class _Gone(Exception):
    """An S3 object listed a moment ago is no longer there."""


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
