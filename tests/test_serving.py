"""`mlflow models serve` of a registered generator: stylised images over HTTP, 400 for bad requests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
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
from conftest import free_port
from test_registry import champion, load, random_images, store  # noqa: F401 - fixtures

VENV_BIN = Path(sys.executable).parent


@contextlib.contextmanager
def model_server(
    model_uri: str, tracking_uri: str, log_path: Path, timeout_s: float = 90.0
) -> Iterator[str]:
    """`mlflow models serve` in its own process group on a free 127.0.0.1 port; yields its URL."""
    port = free_port()
    # --env-manager local: serve from this venv (other managers build an env, which needs the
    # network); mlflow starts uvicorn by name, so the venv's bin/ goes first on PATH.
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd = [
        str(VENV_BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
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


@pytest.mark.slow
def test_served_model_stylises_json_images_and_answers_400_to_bad_requests(
    champion: dict[str, Any],  # noqa: F811 - the fixture imported from test_registry
    tmp_path: Path,
) -> None:
    params = champion["params"]
    images = random_images(2, 20, 24, seed=11)  # sides not multiples of 4
    expected = load(champion["model_uri"], params).predict(images)

    with model_server(
        champion["model_uri"], params.tracking.tracking_uri, tmp_path / "serve.log"
    ) as url:
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
