"""Test helper: a real `mlflow server` subprocess on 127.0.0.1 (tracking, registry, artifacts)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(
    tmp_path: Path, artifacts_destination: str, *, timeout_s: float = 60.0
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start `mlflow server` with a sqlite store in `tmp_path`; return (url, process) once healthy.

    The server gets the current os.environ (so MLFLOW_S3_ENDPOINT_URL and AWS_* set by the
    `s3_server` fixture reach its artifact proxy) with the venv's bin/ first on PATH, because
    mlflow starts uvicorn/gunicorn by name. It runs in its own process group: stop it with
    `stop_mlflow_server`. It runs in `tmp_path`; its output goes to `tmp_path/mlflow_server.log`.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [
        str(VENV_BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'mlflow_server.db'}",
        "--artifacts-destination",
        artifacts_destination,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log_path = tmp_path / "mlflow_server.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=tmp_path,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with code {proc.returncode}:\n{_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return url, proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    stop_mlflow_server(proc)
    raise RuntimeError(f"mlflow server not healthy after {timeout_s} s:\n{_tail(log_path)}")


def stop_mlflow_server(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """Terminate the server's whole process group (it forks uvicorn workers), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)


@contextlib.contextmanager
def mlflow_server(tmp_path: Path, artifacts_destination: str) -> Iterator[str]:
    """`start_mlflow_server` as a context manager: yields the URL, stops the server on exit."""
    url, proc = start_mlflow_server(tmp_path, artifacts_destination)
    try:
        yield url
    finally:
        stop_mlflow_server(proc)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return ""
