"""fetch_source against real local servers: folders, http(s) archives, hostile archives and S3."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from conftest import serving

from culturegan.config import DownloadConfig
from culturegan.data import archives, s3_source, source_base
from culturegan.data.manifest import Reason
from culturegan.data.source_base import redact_url
from culturegan.data.sources import fetch_source
from culturegan.errors import SourceError

FAST = DownloadConfig(retries=2, backoff_s=0.01, timeout_s=5)
IMAGES = {"ds/trainA/a.png": b"\x89PNG-a" * 50, "ds/trainB/b.png": b"\x89PNG-b" * 50}


def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buf.getvalue()


def make_tar(
    members: dict[str, bytes], mode: str = "w:gz", extra: list[tarfile.TarInfo] = ()
) -> bytes:
    """A tar with regular `members` plus `extra` special members (links, devices) added first."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for info in extra:
            tf.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def files_under(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()
    }


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def serve() -> Iterator[
    Callable[[Callable[[BaseHTTPRequestHandler, int], None]], tuple[str, list[dict]]]
]:
    """Start a one-off HTTP server on 127.0.0.1 whose GET runs `respond(handler, hit_number)`.

    Returns (base_url, hits): one dict of request headers per request received.
    """

    def start(respond: Callable[[BaseHTTPRequestHandler, int], None]) -> tuple[str, list[dict]]:
        hits: list[dict] = []
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    hits.append(dict(self.headers))
                    n = len(hits)
                respond(self, n)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return servers.enter_context(serving(Handler)), hits

    with contextlib.ExitStack() as servers:
        yield start


def send(
    handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


# --- local sources ---


def test_local_folder_is_returned_as_is_and_left_untouched(tmp_path: Path) -> None:
    folder = tmp_path / "styles"
    for name, data in IMAGES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    before = snapshot(folder)
    cache = tmp_path / "cache"

    fetched = fetch_source(str(folder), cache, FAST)

    assert fetched.root == folder
    assert fetched.rejects == []
    assert fetched.origin(folder / "ds/trainA/a.png") == f"{folder}/ds/trainA/a.png"
    assert fetched.origin(Path("ds/trainB/b.png")) == f"{folder}/ds/trainB/b.png"
    assert snapshot(folder) == before
    assert not cache.exists()  # nothing copied
    assert fetch_source(folder.as_uri(), cache, FAST).root == folder


def test_missing_local_folder_is_a_source_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="nowhere"):
        fetch_source(str(tmp_path / "nowhere"), tmp_path / "cache", FAST)


def test_local_archive_file_is_extracted_and_not_modified(tmp_path: Path) -> None:
    archive = tmp_path / "ds.zip"
    archive.write_bytes(make_zip(IMAGES))
    before = archive.stat().st_mtime_ns

    fetched = fetch_source(str(archive), tmp_path / "cache", FAST)

    assert files_under(fetched.root) == set(IMAGES)
    assert fetched.root.parent == tmp_path / "cache" / "extracted"
    assert fetched.origin(fetched.root / "ds/trainA/a.png") == f"{archive}#ds/trainA/a.png"
    assert archive.stat().st_mtime_ns == before


def test_local_file_that_is_not_an_archive_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SourceError, match="not a zip or tar archive"):
        fetch_source(str(tmp_path / "notes.txt"), tmp_path / "cache", FAST)


# --- http(s) downloads ---


@pytest.mark.parametrize(
    ("served_name", "payload"),
    [
        ("ds.zip", make_zip(IMAGES)),
        ("ds.tar.gz", make_tar(IMAGES, "w:gz")),
        ("ds.tar.bz2", make_tar(IMAGES, "w:bz2")),
        ("ds.tar.xz", make_tar(IMAGES, "w:xz")),
        ("ds.tar", make_tar(IMAGES, "w")),
        ("ds.zip", make_tar(IMAGES, "w:gz")),  # the content decides, not the extension
        ("download", make_zip(IMAGES)),
    ],
)
def test_http_archive_is_downloaded_and_extracted(
    http_server: tuple[str, Path], tmp_path: Path, served_name: str, payload: bytes
) -> None:
    base_url, www = http_server
    (www / served_name).write_bytes(payload)
    cache = tmp_path / "cache"

    fetched = fetch_source(f"{base_url}/{served_name}", cache, FAST)

    assert files_under(fetched.root) == set(IMAGES)
    for name, data in IMAGES.items():
        assert (fetched.root / name).read_bytes() == data
    assert (
        fetched.origin(fetched.root / "ds/trainA/a.png")
        == f"{base_url}/{served_name}#ds/trainA/a.png"
    )
    assert fetched.rejects == []
    downloads = files_under(cache / "downloads")
    assert len(downloads) == 1 and downloads.pop().endswith(f"-{served_name}")
    # ingest may hand the origin to worker processes
    assert pickle.loads(pickle.dumps(fetched.origin))(fetched.root / "x") == fetched.origin(
        fetched.root / "x"
    )


def test_rerun_reuses_the_download_and_the_extraction(
    http_server: tuple[str, Path], tmp_path: Path
) -> None:
    base_url, www = http_server
    (www / "ds.zip").write_bytes(make_zip({**IMAGES, "../evil.png": b"x"}))
    cache = tmp_path / "cache"
    first = fetch_source(f"{base_url}/ds.zip", cache, FAST)
    stamps = {
        p: p.stat().st_mtime_ns for p in [*(cache / "downloads").iterdir(), *first.root.rglob("*")]
    }
    (www / "ds.zip").unlink()  # a second request would now get a 404

    second = fetch_source(f"{base_url}/ds.zip", cache, FAST)

    assert second.root == first.root
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert second.rejects == first.rejects and len(second.rejects) == 1  # rejects survive the cache


def test_http_404_fails_at_once_naming_the_url(serve, tmp_path: Path) -> None:
    base_url, hits = serve(lambda h, n: send(h, 404, b"no such file"))
    cfg = DownloadConfig(retries=4, backoff_s=1.0, timeout_s=5)

    with pytest.raises(SourceError, match=f"{base_url}/missing.zip answered HTTP 404") as err:
        fetch_source(f"{base_url}/missing.zip", tmp_path / "cache", cfg)

    assert len(hits) == 1  # no retry
    assert "data.source" in err.value.hint
    assert files_under(tmp_path / "cache") == set()


def test_http_503_twice_then_success_is_retried(serve, tmp_path: Path) -> None:
    payload = make_zip(IMAGES)
    base_url, hits = serve(lambda h, n: send(h, 503, b"busy") if n <= 2 else send(h, 200, payload))

    fetched = fetch_source(f"{base_url}/ds.zip", tmp_path / "cache", FAST)

    assert len(hits) == 3
    assert files_under(fetched.root) == set(IMAGES)


def test_http_429_and_5xx_give_up_after_the_configured_retries(serve, tmp_path: Path) -> None:
    base_url, hits = serve(lambda h, n: send(h, 429 if n % 2 else 500, b"slow down"))

    with pytest.raises(SourceError, match=r"failed after 3 attempt\(s\): HTTP 429") as err:
        fetch_source(f"{base_url}/ds.zip", tmp_path / "cache", FAST)

    assert len(hits) == 3
    assert f"{base_url}/ds.zip" in str(err.value) and err.value.hint


def test_redirects_are_followed_without_spending_retries_and_retries_log_no_secret(
    serve, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    payload = make_zip(IMAGES)

    def respond(handler: BaseHTTPRequestHandler, n: int) -> None:
        if handler.path.startswith("/moved"):
            send(handler, 302, b"", {"Location": "/ds.zip?sig=t0ken"})
        else:
            send(handler, 503, b"busy") if n == 2 else send(handler, 200, payload)

    base_url, hits = serve(respond)
    cfg = DownloadConfig(retries=1, backoff_s=0.01, timeout_s=5)

    fetched = fetch_source(f"{base_url}/moved.zip?sig=t0ken", tmp_path / "cache", cfg)

    assert len(hits) == 3  # redirect, 503, 200 (retried at the redirected URL)
    assert files_under(fetched.root) == set(IMAGES)
    assert "t0ken" not in caplog.text and "retry 1" in caplog.text


def drop_mid_body(handler: BaseHTTPRequestHandler, n: int) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "5000")
    handler.end_headers()
    handler.wfile.write(b"PK\x03\x04" + b"\0" * 996)
    handler.close_connection = True  # the socket closes with 4000 bytes still owed


def test_connection_dropped_mid_body_leaves_no_partial_file(serve, tmp_path: Path) -> None:
    base_url, hits = serve(drop_mid_body)
    cache = tmp_path / "cache"

    with pytest.raises(
        SourceError, match=r"ds\.zip failed after 3 attempt\(s\).*1000 of 5000 bytes"
    ):
        fetch_source(f"{base_url}/ds.zip", cache, FAST)

    assert len(hits) == 3
    assert files_under(cache / "downloads") == set()  # no .part, no half file, no sidecar
    assert not (cache / "extracted").exists()


def test_interrupted_download_resumes_with_a_range_request(serve, tmp_path: Path) -> None:
    payload = make_zip(IMAGES, zipfile.ZIP_STORED)
    cut = len(payload) // 2
    etag = '"v1"'

    def respond(handler: BaseHTTPRequestHandler, n: int) -> None:
        if n == 1:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(payload)))
            handler.send_header("ETag", etag)
            handler.end_headers()
            handler.wfile.write(payload[:cut])
            handler.close_connection = True
            return
        start = int(handler.headers["Range"].removeprefix("bytes=").rstrip("-"))
        assert handler.headers["If-Range"] == etag
        send(
            handler,
            206,
            payload[start:],
            {"Content-Range": f"bytes {start}-{len(payload) - 1}/{len(payload)}"},
        )

    base_url, hits = serve(respond)

    fetched = fetch_source(f"{base_url}/ds.zip", tmp_path / "cache", FAST)

    assert len(hits) == 2 and hits[1]["Range"] == f"bytes={cut}-"
    assert [p.read_bytes() for p in (tmp_path / "cache" / "downloads").iterdir()] == [payload]
    assert files_under(fetched.root) == set(IMAGES)


def test_a_web_page_instead_of_an_archive_is_refused_and_not_cached(
    http_server, tmp_path: Path
) -> None:
    base_url, www = http_server
    (www / "ds.zip").write_bytes(b"<!DOCTYPE html><html>Please log in</html>")

    with pytest.raises(SourceError, match="not a zip or tar archive"):
        fetch_source(f"{base_url}/ds.zip", tmp_path / "cache", FAST)

    assert files_under(tmp_path / "cache" / "downloads") == set()


def test_credentials_in_the_url_are_sent_but_never_shown(serve, tmp_path: Path) -> None:
    base_url, hits = serve(lambda h, n: send(h, 403, b"denied"))
    host = base_url.removeprefix("http://")
    url = f"http://alice:s3cr3t@{host}/ds.zip?X-Amz-Signature=t0ken"

    with pytest.raises(SourceError) as err:
        fetch_source(url, tmp_path / "cache", FAST)

    shown = f"{err.value} {err.value.hint}"
    assert "s3cr3t" not in shown and "t0ken" not in shown and "alice" not in shown
    assert f"http://{host}/ds.zip?<redacted>" in shown
    assert hits[0]["Authorization"] == "Basic YWxpY2U6czNjcjN0"  # base64("alice:s3cr3t")
    assert redact_url(url) == f"http://{host}/ds.zip?<redacted>"


# --- hostile archives ---


def test_zip_slip_and_absolute_members_are_rejected_and_nothing_lands_outside(
    http_server: tuple[str, Path], tmp_path: Path
) -> None:
    base_url, www = http_server
    outside = tmp_path / "outside"
    outside.mkdir()
    hostile = {
        "../evil.png": b"evil",
        "ds/../../../evil2.png": b"evil",
        f"{outside}/abs.png": b"evil",
        "ds\\..\\..\\win.png": b"evil",
        "C:/win/abs.png": b"evil",
    }
    (www / "ds.zip").write_bytes(make_zip({**IMAGES, **hostile}))
    cache = tmp_path / "cache"
    before = files_under(tmp_path)

    fetched = fetch_source(f"{base_url}/ds.zip", cache, FAST)

    assert files_under(fetched.root) == set(IMAGES)
    assert {(r.source, r.reason) for r in fetched.rejects} == {
        (f"{base_url}/ds.zip#{name}", Reason.UNSAFE_PATH) for name in hostile
    }
    new = files_under(tmp_path) - before
    key = fetched.root.name
    assert all(
        n.startswith((f"cache/extracted/{key}/", "cache/downloads/"))
        or n == f"cache/extracted/{key}.json"
        for n in new
    ), new
    assert files_under(outside) == set()


def test_tar_links_and_devices_are_rejected_and_nothing_lands_outside(
    http_server: tuple[str, Path], tmp_path: Path
) -> None:
    base_url, www = http_server
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.png").write_bytes(b"precious")
    extra = [
        special("ds/link", tarfile.SYMTYPE, str(outside)),
        special("ds/rel_link", tarfile.SYMTYPE, "../../../outside"),
        special("ds/hard.png", tarfile.LNKTYPE, str(outside / "target.png")),
        special("ds/hard2.png", tarfile.LNKTYPE, "ds/trainA/a.png"),
        special("ds/fifo", tarfile.FIFOTYPE),
        special("ds/null", tarfile.CHRTYPE),
    ]
    # Written after the symlink: extracted naively, it would go through the link into `outside`.
    members = {**IMAGES, "ds/link/evil.png": b"evil", "/abs_evil.png": b"evil"}
    (www / "ds.tgz").write_bytes(make_tar(members, "w:gz", extra))

    fetched = fetch_source(f"{base_url}/ds.tgz", tmp_path / "cache", FAST)

    rejected = {r.source.split("#", 1)[1]: r for r in fetched.rejects}
    assert set(rejected) == {i.name for i in extra} | {"/abs_evil.png"}
    assert {r.reason for r in rejected.values()} == {Reason.UNSAFE_PATH}
    assert (
        "symbolic link" in rejected["ds/link"].detail
        and "hard link" in rejected["ds/hard.png"].detail
    )
    assert (
        files_under(outside) == {"target.png"}
        and (outside / "target.png").read_bytes() == b"precious"
    )
    # the would-be link is a plain folder inside the target now
    assert files_under(fetched.root) == {*IMAGES, "ds/link/evil.png"}
    assert not any(p.is_symlink() for p in fetched.root.rglob("*"))
    assert not (tmp_path / "abs_evil.png").exists()


def test_tar_members_escaping_the_folder_are_refused_by_the_data_filter(
    http_server: tuple[str, Path], tmp_path: Path
) -> None:
    base_url, www = http_server
    hostile = {"../evil.png": b"evil", "ds/../../evil2.png": b"evil"}
    (www / "ds.tar").write_bytes(make_tar({**IMAGES, **hostile}, "w"))

    fetched = fetch_source(f"{base_url}/ds.tar", tmp_path / "cache", FAST)

    assert files_under(fetched.root) == set(IMAGES)
    rejected = {r.source.split("#", 1)[1]: r for r in fetched.rejects}
    assert set(rejected) == set(hostile)
    assert {r.reason for r in rejected.values()} == {Reason.UNSAFE_PATH}
    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: tarfile's own check says why
        assert all("data filter" in r.detail for r in rejected.values())
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "cache" / "evil2.png").exists()


def test_archive_whose_total_size_exceeds_the_bound_is_refused(http_server, tmp_path: Path) -> None:
    base_url, www = http_server
    (www / "ds.zip").write_bytes(make_zip({"a.png": b"a" * 600, "b.png": b"b" * 600}))
    (www / "ds.tar").write_bytes(make_tar({"a.png": b"a" * 600, "b.png": b"b" * 600}, "w"))
    cfg = DownloadConfig(retries=0, backoff_s=0, timeout_s=5, max_archive_bytes=100_000)
    cfg_small = cfg.model_copy(update={"max_archive_bytes": 1000})

    for name in ("ds.zip", "ds.tar"):
        # fine under a generous bound, refused under a tight one, with no folder left behind
        assert len(files_under(fetch_source(f"{base_url}/{name}", tmp_path / "ok", cfg).root)) == 2
        with pytest.raises(SourceError, match="max_archive_bytes") as err:
            fetch_source(f"{base_url}/{name}", tmp_path / name, cfg_small)
        assert "bomb" in err.value.hint or "raise" in err.value.hint
        assert (
            not (tmp_path / name / "extracted").exists()
            or files_under(tmp_path / name / "extracted") == set()
        )


def test_zip_member_with_absurd_compression_ratio_is_rejected(http_server, tmp_path: Path) -> None:
    base_url, www = http_server
    (www / "ds.zip").write_bytes(make_zip({**IMAGES, "ds/trainA/bomb.png": bytes(4 << 20)}))

    fetched = fetch_source(f"{base_url}/ds.zip", tmp_path / "cache", FAST)

    assert files_under(fetched.root) == set(IMAGES)
    [row] = fetched.rejects
    assert row.source.endswith("#ds/trainA/bomb.png") and row.reason == Reason.UNSAFE_PATH
    assert "compression ratio" in row.detail


def test_tar_gz_member_expanding_absurdly_is_stopped_while_streaming(
    http_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the read-ahead allowance a 4 MiB member is enough to show the guard at work; with
    # it (production) the guard needs ~85 MB of zeros, too much for a unit test.
    monkeypatch.setattr(archives, "RAW_READAHEAD_BYTES", 0)
    base_url, www = http_server
    incompressible = os.urandom(2 << 20)  # a real image barely compresses: it must pass
    (www / "ds.tgz").write_bytes(
        make_tar({"ds/trainA/ok.png": incompressible, "ds/trainA/bomb.png": bytes(4 << 20)})
    )

    fetched = fetch_source(f"{base_url}/ds.tgz", tmp_path / "cache", FAST)

    assert files_under(fetched.root) == {"ds/trainA/ok.png"}
    assert (fetched.root / "ds/trainA/ok.png").read_bytes() == incompressible
    [row] = fetched.rejects
    assert row.source.endswith("#ds/trainA/bomb.png") and "compression ratio" in row.detail


def test_member_larger_than_any_allowed_image_is_rejected_unwritten(
    http_server, tmp_path: Path
) -> None:
    base_url, www = http_server
    big = os.urandom(source_base.MEMBER_SLACK_BYTES + 8 * 100 + 1)
    (www / "ds.zip").write_bytes(
        make_zip({**IMAGES, "ds/trainA/huge.png": big}, zipfile.ZIP_STORED)
    )

    fetched = fetch_source(f"{base_url}/ds.zip", tmp_path / "cache", FAST, max_pixels=100)

    assert files_under(fetched.root) == set(IMAGES)
    [row] = fetched.rejects
    assert row.reason == Reason.TOO_LARGE and row.source.endswith("#ds/trainA/huge.png")


def test_corrupt_download_is_discarded_so_a_rerun_fetches_it_again(
    http_server, tmp_path: Path
) -> None:
    base_url, www = http_server
    whole = make_tar(IMAGES)
    (www / "ds.tgz").write_bytes(whole[: len(whole) // 2])  # a truncated gzip stream
    cache = tmp_path / "cache"

    with pytest.raises(SourceError, match="cannot be unpacked") as err:
        fetch_source(f"{base_url}/ds.tgz", cache, FAST)
    assert "rerun" in err.value.hint
    assert files_under(cache / "downloads") == set()

    (www / "ds.tgz").write_bytes(make_tar(IMAGES))
    assert files_under(fetch_source(f"{base_url}/ds.tgz", cache, FAST).root) == set(IMAGES)


# --- S3 ---


@pytest.fixture
def bucket(s3_server: str) -> str:
    """A new, empty bucket: moto keeps its buckets in this process from one server to the next."""
    import boto3

    name = f"art-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def put_objects(bucket: str, objects: dict[str, bytes]) -> None:
    import boto3

    s3 = boto3.client("s3")
    for key, data in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)


def test_s3_client_uses_the_endpoint_from_the_environment(s3_server: str, monkeypatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # AWS_ENDPOINT_URL_S3 alone must be enough
    client = s3_source._s3_client(FAST)
    assert client.meta.endpoint_url == s3_server
    assert client.meta.config.retries == {
        "mode": "standard",
        "total_max_attempts": FAST.retries + 1,
    }


def test_s3_prefix_is_listed_downloaded_and_resumed(bucket: str, tmp_path: Path) -> None:
    objects = {
        "styles/trainA/a.png": b"a" * 100,
        "styles/trainB/b.png": b"b" * 100,
        "styles/testA/c.png": b"c" * 100,
        "styles/": b"",  # a folder marker, not data
        "styles2/other.png": b"not under the prefix",
    }
    put_objects(bucket, objects)
    cache = tmp_path / "cache"

    fetched = fetch_source(f"s3://{bucket}/styles", cache, FAST)

    assert files_under(fetched.root) == {"trainA/a.png", "trainB/b.png", "testA/c.png"}
    assert (fetched.root / "trainA/a.png").read_bytes() == b"a" * 100
    assert fetched.origin(fetched.root / "trainA/a.png") == f"s3://{bucket}/styles/trainA/a.png"
    assert fetched.rejects == []
    mirror = cache / "s3" / bucket
    assert files_under(mirror) == {
        "styles/trainA/a.png",
        "styles/trainB/b.png",
        "styles/testA/c.png",
    }
    stamps = {p: p.stat().st_mtime_ns for p in mirror.rglob("*.png")}

    # an interrupted fetch: one object missing locally, the others complete
    (mirror / "styles/testA/c.png").unlink()
    time.sleep(0.01)
    again = fetch_source(f"s3://{bucket}/styles/", cache, FAST)

    assert files_under(again.root) == files_under(fetched.root)
    changed = {
        p.relative_to(mirror).as_posix() for p, t in stamps.items() if p.stat().st_mtime_ns != t
    }
    assert changed == {"styles/testA/c.png"}
    third = {p: p.stat().st_mtime_ns for p in mirror.rglob("*.png")}
    fetch_source(f"s3://{bucket}/styles", cache, FAST)
    assert {p: p.stat().st_mtime_ns for p in third} == third  # nothing downloaded at all


def test_s3_changed_object_is_downloaded_again(bucket: str, tmp_path: Path) -> None:
    put_objects(bucket, {"styles/a.png": b"old!"})
    cache = tmp_path / "cache"
    fetch_source(f"s3://{bucket}/styles", cache, FAST)
    put_objects(bucket, {"styles/a.png": b"new!"})  # same size, new ETag

    fetched = fetch_source(f"s3://{bucket}/styles", cache, FAST)

    assert (fetched.root / "a.png").read_bytes() == b"new!"


def test_s3_archive_objects_are_extracted_beside_plain_objects(bucket: str, tmp_path: Path) -> None:
    put_objects(
        bucket,
        {
            "data/ds.zip": make_zip({**IMAGES, "../evil.png": b"x"}),
            "data/loose/x.png": b"x" * 10,
        },
    )

    single = fetch_source(f"s3://{bucket}/data/ds.zip", tmp_path / "cache", FAST)
    mixed = fetch_source(f"s3://{bucket}/data", tmp_path / "cache", FAST)

    assert files_under(single.root) == set(IMAGES)
    assert (
        single.origin(single.root / "ds/trainA/a.png")
        == f"s3://{bucket}/data/ds.zip#ds/trainA/a.png"
    )
    assert [(r.source, r.reason) for r in single.rejects] == [
        (f"s3://{bucket}/data/ds.zip#../evil.png", Reason.UNSAFE_PATH)
    ]
    assert files_under(mixed.root) == {"loose/x.png", *(f"ds/{n}" for n in IMAGES)}
    assert (
        mixed.origin(mixed.root / "ds/ds/trainA/a.png")
        == f"s3://{bucket}/data/ds.zip#ds/trainA/a.png"
    )
    assert mixed.origin(mixed.root / "loose/x.png") == f"s3://{bucket}/data/loose/x.png"
    assert (
        pickle.loads(pickle.dumps(mixed.origin))(mixed.root / "loose/x.png")
        == f"s3://{bucket}/data/loose/x.png"
    )


def test_s3_unsafe_keys_are_rejected_and_not_written_outside(bucket: str, tmp_path: Path) -> None:
    put_objects(bucket, {"styles/a.png": b"a", "styles/../../../../evil.png": b"evil"})
    before = files_under(tmp_path)

    fetched = fetch_source(f"s3://{bucket}/styles", tmp_path / "cache", FAST)

    assert files_under(fetched.root) == {"a.png"}
    assert [(r.source, r.reason) for r in fetched.rejects] == [
        (f"s3://{bucket}/styles/../../../../evil.png", Reason.UNSAFE_PATH)
    ]
    assert all(n.startswith("cache/") for n in files_under(tmp_path) - before)
    assert not any(p.name == "evil.png" for p in tmp_path.rglob("*"))


def test_s3_missing_bucket_and_empty_prefix_are_source_errors(bucket: str, tmp_path: Path) -> None:
    put_objects(bucket, {"styles/a.png": b"a"})

    with pytest.raises(SourceError, match="bucket 'nosuch' does not exist") as err:
        fetch_source("s3://nosuch/styles", tmp_path / "cache", FAST)
    assert "AWS_ENDPOINT_URL" in err.value.hint
    with pytest.raises(SourceError, match=f"no objects under s3://{bucket}/nothing"):
        fetch_source(f"s3://{bucket}/nothing", tmp_path / "cache", FAST)
    with pytest.raises(SourceError, match="valid S3 bucket"):
        fetch_source("s3://../x", tmp_path / "cache", FAST)
