"""`culturegan serve` of a registered generator: stylised images over HTTP (MLflow's scoring
protocol), 400 for bad requests, 413 for bodies over the model's limit, and no error that quotes
the request."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import free_port
from test_registry import champion, load, random_images, store  # noqa: F401 - fixtures

from culturegan.config import Params, dump_params
from culturegan.model_server import request_byte_limit

VENV_BIN = Path(sys.executable).parent


@contextlib.contextmanager
def model_server(
    model_uri: str, params: Params, log_path: Path, timeout_s: float = 90.0
) -> Iterator[str]:
    """`culturegan serve` in its own process group on a free 127.0.0.1 port; yields its URL."""
    port = free_port()
    params_path = log_path.with_suffix(".params.yaml")
    params_path.write_text(yaml.safe_dump(dump_params(params)))
    cmd = [
        str(VENV_BIN / "culturegan"),
        "serve",
        "--model",
        model_uri,
        "--params",
        str(params_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow models serve exited {proc.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no /ping answer in {timeout_s} s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def post(url: str, body: bytes | str) -> tuple[int, Any]:
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(
        f"{url}/invocations", data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def server(
    champion: dict[str, Any],  # noqa: F811 - the fixture imported from test_registry
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """One `culturegan serve` of the champion for the module: starting one takes ~10 s."""
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    with model_server(champion["model_uri"], champion["params"], log_path) as url:
        yield url


@pytest.mark.slow
def test_served_model_stylises_json_images_and_answers_400_to_bad_requests(
    champion: dict[str, Any],  # noqa: F811 - the fixture imported from test_registry
    server: str,
) -> None:
    params = champion["params"]
    images = random_images(2, 20, 24, seed=11)  # sides not multiples of 4
    expected = load(champion["model_uri"], params).predict(images)

    url = server
    status, answer = post(url, json.dumps({"inputs": images.tolist()}))
    assert status == 200, answer
    got = np.asarray(answer["predictions"])
    assert got.shape == (2, 20, 24, 3) and got.min() >= 0 and got.max() <= 255
    assert np.array_equal(got, expected)

    wide = np.zeros((1, 8, 65, 3), np.uint8)  # max_side is 64 in these params
    ragged = [np.zeros((8, 8, 3), int).tolist(), np.zeros((12, 8, 3), int).tolist()]
    bad_requests = {
        "a string": (json.dumps({"inputs": "not an image"}), ""),
        "a 2-D array": (json.dumps({"inputs": [[1, 2, 3], [4, 5, 6]]}), "shape"),
        "too wide": (json.dumps({"inputs": wide.tolist()}), "outside the accepted 8..64"),
        "too many": (json.dumps({"inputs": random_images(5, 8, 8).tolist()}), "limit is 4"),
        "ragged": (json.dumps({"inputs": ragged}), ""),
        "not uint8": (
            json.dumps({"inputs": np.full((1, 8, 8, 3), 300).tolist()}),
            "out of bounds",
        ),
        "not JSON": ("{inputs: nope", ""),
        "no inputs key": (json.dumps({"images": [1]}), ""),
    }
    for what, (body, message) in bad_requests.items():
        status, answer = post(url, body)
        assert status == 400, (what, status, answer)
        assert answer.get("error_code") in {"BAD_REQUEST", "INVALID_PARAMETER_VALUE"}, (
            what,
            answer,
        )
        assert message in answer.get("message", ""), (what, answer)

    # After the bad requests the server still serves.
    status, answer = post(url, json.dumps({"inputs": images[:1].tolist()}))
    assert status == 200 and np.array_equal(np.asarray(answer["predictions"]), expected[:1])
    assert len(answer.get("message", "")) <= 200, (what, answer)


def raw_request(url: str, head: str, body: bytes = b"") -> tuple[socket.socket, bytes]:
    """Send `head` (request line and headers) and `body` on a fresh socket; returns it and
    whatever the server answered so far (all of it once the server closes)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    raw = b""
    # The head and the body of the answer may come in separate segments: read until the body
    # that Content-Length announces is complete, or the server closes.
    while True:
        head_end = raw.find(b"\r\n\r\n")
        if head_end >= 0:
            length = re.search(rb"(?im)^content-length:\s*(\d+)", raw[:head_end])
            if length and len(raw) - head_end - 4 >= int(length.group(1)):
                return sock, raw
        chunk = sock.recv(1 << 16)
        if not chunk:
            return sock, raw
        raw += chunk


def status_and_json(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.slow
def test_oversized_bodies_are_refused_before_parsing_and_errors_never_echo_the_request(
    champion: dict[str, Any],  # noqa: F811 - the fixture imported from test_registry
    server: str,
) -> None:
    import http.client

    limit = request_byte_limit(max_side=64, max_images=4)  # the registry params of the fixture
    assert limit == 4 * 64 * 64 * 3 * 6 + 65536
    small = json.dumps({"inputs": random_images(1, 8, 8).tolist()})
    expected = load(champion["model_uri"], champion["params"]).predict(random_images(1, 8, 8))

    # 200 MB announced, nothing sent: refused from the headers alone (curl sends this Expect).
    sock, raw = raw_request(
        server,
        "POST /invocations HTTP/1.1\nHost: x\nContent-Type: application/json\n"
        "Content-Length: 200000000\nExpect: 100-continue\n",
    )
    sock.close()
    status, answer = status_and_json(raw)
    assert status == 413 and answer["error_code"] == "REQUEST_TOO_LARGE", raw
    assert f"larger than the {limit} bytes" in answer["message"]

    # While a big upload is still arriving (no Expect: the server reads and drops it), a small
    # request on another connection is answered.
    host, port = server.removeprefix("http://").split(":")
    slow = socket.create_connection((host, int(port)), timeout=30)
    slow.sendall(
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n" + b"[" * 65536
    )
    status, answer = post(server, small)
    assert status == 200 and np.array_equal(np.asarray(answer["predictions"]), expected)
    slow.close()

    marker = "ECHO-ME-NOT"
    over = {
        "JSON over the limit": json.dumps({"inputs": random_images(8, 64, 64).tolist(), "x": marker}),
        "not JSON, over the limit": marker + "x" * (limit + 1),
    }
    for what, body in over.items():
        assert len(body) > limit
        status, answer = post(server, body)
        assert status == 413, (what, status, answer)
        assert marker not in json.dumps(answer) and len(answer["message"]) <= 200, what

    # A chunked body (no Content-Length) is counted as it arrives.
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    chunks = (marker.encode() + b"x" * 65536 for _ in range(limit // 65536 + 2))
    conn.request("POST", "/invocations", body=chunks, headers={"Content-Type": "application/json"}, encode_chunked=True)
    reply = conn.getresponse()
    assert reply.status == 413 and marker.encode() not in reply.read()
    conn.close()

    # Under the limit but not JSON: MLflow's 400 used to quote the whole body back.
    status, answer = post(server, marker + " not json " + "y" * 100_000)
    assert status == 400 and answer["error_code"] == "BAD_REQUEST", answer
    assert marker not in json.dumps(answer) and "yyyy" not in json.dumps(answer)
    assert 0 < len(answer["message"]) <= 200 and "stack_trace" not in answer

    status, answer = post(server, small)  # and the server still serves
    assert status == 200 and np.array_equal(np.asarray(answer["predictions"]), expected)
