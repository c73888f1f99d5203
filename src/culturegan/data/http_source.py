"""HTTP(S) download of an archive: retried, resumable (Range + If-Range) and atomic."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import urllib3
from urllib3.exceptions import MaxRetryError, ProtocolError
from urllib3.util import Retry

from culturegan.config import DownloadConfig
from culturegan.data.archives import _archive_kind
from culturegan.data.source_base import (
    CHUNK,
    MAX_BACKOFF_S,
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

RETRY_STATUSES = frozenset({429, *range(500, 600)})
MAX_REDIRECTS = 10


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
    if isinstance(err, MaxRetryError):
        err = err.reason
    if isinstance(err, (_Retryable, ProtocolError)):
        return str(err)
    return f"{type(err).__name__}: {err}" if err is not None else "unknown error"


def _cert_error(err: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind a urllib3 error, if that is what it is."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            return cur
        todo += [cur.__cause__, cur.__context__, getattr(cur, "reason", None)]
        todo += [a for a in cur.args if isinstance(a, BaseException)]
    return None


def _http_hint(code: int) -> str:
    if code in (401, 403):
        return "access refused: check the URL (a signed URL may have expired) and any credentials"
    if code in (404, 410):
        return "no file at this URL: check data.source in params.yaml"
    return "check data.source in params.yaml"


class _Retry(Retry):
    """urllib3's Retry where `total` counts failures only, as data.download.retries means (a
    redirect is no failed attempt: `redirect` alone bounds those), logging each retry with the URL
    redacted (`shown`)."""

    def __init__(self, *args: Any, shown: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shown = shown

    def new(self, **kw: Any) -> _Retry:
        kw.setdefault("shown", self.shown)
        return super().new(**kw)

    def increment(  # type: ignore[override]
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> _Retry:
        redirect = error is None and response is not None and response.get_redirect_location()
        retry = self.new(total=self.total + 1) if redirect and self.total is not None else self
        new = Retry.increment(retry, method, url, response, error, _pool, _stacktrace)
        if not redirect:
            cause = f"HTTP {response.status}" if error is None and response else _describe(error)
            failures = sum(h.redirect_location is None for h in new.history)
            log.warning(
                "download of %s failed (%s); retry %d in %.1f s",
                self.shown,
                _scrub(cause, url) if url else cause,
                failures,
                new.get_backoff_time(),
            )
        return new


def _pool_manager(url: str, cfg: DownloadConfig) -> urllib3.PoolManager:
    """A connection pool, through the proxy that http(s)_proxy / no_proxy name for `url`, if any."""
    timeout = urllib3.Timeout(connect=cfg.timeout_s, read=cfg.timeout_s)
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return urllib3.ProxyManager(proxy, timeout=timeout)
    return urllib3.PoolManager(timeout=timeout)


class _RetryLogFilter(logging.Filter):
    """Drops urllib3's own retry warnings, which show the query string (signed URLs carry their
    credential there); _Retry logs each retry with the URL redacted instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Retrying (")


def _content_range(value: str | None) -> tuple[int, int | None]:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (value or "").strip())
    if not match:
        raise _Retryable(f"unusable Content-Range {value!r} on a resumed download")
    total = None if match.group(2) == "*" else int(match.group(2))
    return int(match.group(1)), total


def _download_http(url: str, downloads: Path, cfg: DownloadConfig) -> Path:
    """Download `url` to downloads/<sha256(url)[:16]>-<name>, reusing a completed download.

    urllib3's Retry retries connection errors, timeouts, 429 and 5xx with exponential backoff
    (honouring Retry-After up to MAX_BACKOFF_S); a body cut short spends the same budget, and the
    next request resumes the partial file with Range + If-Range.
    """
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
    quiet = _RetryLogFilter()
    urllib3_log = logging.getLogger("urllib3.connectionpool")
    urllib3_log.addFilter(quiet)
    try:
        _download_to_part(url, part, meta, cfg, shown)
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
    except (KeyboardInterrupt, SystemExit):
        raise  # an interrupted download keeps its .part so that the next run resumes it
    except BaseException:
        part.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        raise
    finally:
        urllib3_log.removeFilter(quiet)
        if dest.exists():
            meta.unlink(missing_ok=True)


def _download_to_part(url: str, part: Path, meta: Path, cfg: DownloadConfig, shown: str) -> None:
    request_url, auth = _split_userinfo(url)
    retry = _Retry(
        total=cfg.retries,
        other=0,  # TLS and other non-transport failures do not heal by retrying
        redirect=MAX_REDIRECTS,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=cfg.backoff_s,
        backoff_max=MAX_BACKOFF_S,
        retry_after_max=int(MAX_BACKOFF_S),
        raise_on_status=False,
        shown=shown,
    )
    pool = _pool_manager(request_url, cfg)
    try:
        while True:
            retry, broken = _stream_once(pool, request_url, auth, part, meta, cfg, shown, retry)
            if broken is None:
                return
            # urllib3 retries the requests; a body cut short spends the same budget here.
            retry = retry.increment("GET", request_url, error=ProtocolError(broken))
            retry.sleep()
    except MaxRetryError as err:
        cert = _cert_error(err)
        if cert is not None:
            raise SourceError(
                f"TLS certificate of {shown} not verified: {cert.verify_message}",
                hint="check the URL's host name; a private CA needs SSL_CERT_FILE",
            ) from None
        raise _gave_up(shown, url, cfg, _describe(err)) from None
    finally:
        pool.clear()


def _gave_up(shown: str, url: str, cfg: DownloadConfig, reason: str) -> SourceError:
    return SourceError(
        f"download of {shown} failed after {cfg.retries + 1} attempt(s): {_scrub(reason, url)}",
        hint="check the URL and the network, or raise data.download.retries / timeout_s",
    )


def _stream_once(
    pool: urllib3.PoolManager,
    url: str,
    auth: str | None,
    part: Path,
    meta: Path,
    cfg: DownloadConfig,
    shown: str,
    retry: Retry,
) -> tuple[Retry, str | None]:
    """GET `url` into `part` (urllib3 retrying the request), resumed by a Range request when
    `part` holds a known prefix: the Retry state after the request, and why the body broke off
    (None once `part` is complete)."""
    offset = part.stat().st_size if part.exists() else 0
    validator = _read_json(meta).get("validator") if offset else None
    headers = {"User-Agent": "culturegan", "Accept-Encoding": "identity"}
    if auth:
        headers["Authorization"] = auth
    if offset and validator:
        headers["Range"] = f"bytes={offset}-"
        headers["If-Range"] = validator
    # Length checked by _receive, not urllib3: urllib3 would drop the bytes that did arrive, and a
    # resume needs them.
    response = pool.request(
        "GET",
        url,
        headers=headers,
        retries=retry,
        preload_content=False,
        enforce_content_length=False,
    )
    retry = response.retries or retry
    try:
        _receive(response, headers, offset, part, meta, cfg, shown)
    except _Retryable as err:
        return retry, str(err)
    finally:
        response.release_conn()
    return retry, None


def _receive(
    response: urllib3.BaseHTTPResponse,
    headers: dict[str, str],
    offset: int,
    part: Path,
    meta: Path,
    cfg: DownloadConfig,
    shown: str,
) -> None:
    """Check the answer to one GET and write its body to `part` (appended when it resumes)."""
    if response.status in RETRY_STATUSES:  # still failing once the retries are spent
        raise _gave_up(shown, "", cfg, f"HTTP {response.status} {response.reason}")
    if response.status == 416 and "Range" in headers:
        part.unlink(missing_ok=True)
        raise _Retryable("the server refused to resume (HTTP 416)")
    if response.status >= 400:
        raise SourceError(
            f"{shown} answered HTTP {response.status} {response.reason}",
            hint=_http_hint(response.status),
        )
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
            etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified")
        )
        if new_validator:
            atomic_write_text(meta, json.dumps({"validator": new_validator}))
        else:
            meta.unlink(missing_ok=True)
    if total is not None and total > cfg.max_archive_bytes:
        raise _too_big(f"{shown} is {total} bytes", cfg.max_archive_bytes)
    with (
        open(part, mode) as out,
        _progress(total=total, initial=received, unit="B", unit_scale=True, desc=part.name) as bar,
    ):
        try:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
                if received > cfg.max_archive_bytes:
                    raise _too_big(f"{shown} sent over {received} bytes", cfg.max_archive_bytes)
        except (
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            ConnectionError,
            TimeoutError,
        ) as err:
            if total is not None:
                raise _Retryable(
                    f"the connection closed after {received} of {total} bytes"
                ) from None
            raise _Retryable(f"the transfer broke after {received} bytes: {err}") from None
    # A peer closing early is a short body, not an error.
    if total is not None and received != total:
        raise _Retryable(f"the connection closed after {received} of {total} bytes")
