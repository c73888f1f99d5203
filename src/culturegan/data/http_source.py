"""HTTP(S) download of an archive: retried, resumable (Range + If-Range) and atomic."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from culturegan.config import DownloadConfig
from culturegan.data.archives import _archive_kind
from culturegan.data.source_base import (
    CHUNK,
    _backoff,
    _progress,
    _read_json,
    _Retryable,
    _safe_name,
    _sha,
    _too_big,
    _url_basename,
    redact_url,
)
from culturegan.errors import SourceError
from culturegan.fileio import atomic_write_text

log = logging.getLogger(__name__)


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
