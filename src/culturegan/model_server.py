"""`culturegan serve`: MLflow's scoring server for a registered model, behind a request guard.

`mlflow models serve` reads any request body whole and parses it before the model sees it (a
200 MB JSON image took a worker to 10.9 GB and a 504 after 60 s), and its 400 answer to a body
that is not JSON quotes the whole body back. This server runs the same MLflow app (same routes,
same JSON protocol, same answers to good requests) behind an ASGI guard that

- refuses a body larger than `request_byte_limit` with 413 before reading it (from the
  Content-Length header; a chunked body is counted as it arrives and refused at the limit), and
- cuts every error answer down to a short message that never quotes the request.

The limit comes from the model's own config (`registry.max_side` and `registry.max_images`,
recorded when it was registered): the largest request the model accepts, as JSON.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger(__name__)

# A pixel value in JSON is at most 3 digits and a separator (", "), and each (r, g, b) list adds
# its brackets and separator: at most 17 bytes per pixel, bounded here by 6 bytes per value.
JSON_BYTES_PER_VALUE = 6
ENVELOPE_BYTES = 64 * 1024  # {"inputs": ...}, whitespace, a params object
MAX_ERROR_CHARS = 200
# A refused body without `Expect: 100-continue` is read and dropped (never kept) up to this many
# bytes before the 413 goes out, so that a client that sends first and reads after gets the
# answer rather than a reset connection; a longer one gets the 413 at once.
MAX_DRAIN_BYTES = 512 * 1024 * 1024
MODEL_ENV = "CULTUREGAN_SERVE_MODEL_URI"  # the model of the worker processes (--workers > 1)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def request_byte_limit(max_side: int, max_images: int) -> int:
    """The largest request body accepted: `max_images` images of `max_side` x `max_side` RGB
    pixels as JSON integers (at most 6 bytes per value) plus 64 KiB for the envelope.

    registry.max_side 1024 and max_images 4 (the defaults) give 75.6 MB.
    """
    return max_images * max_side * max_side * 3 * JSON_BYTES_PER_VALUE + ENVELOPE_BYTES


def short_error(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """An error message without any quoted request, at most `limit` characters.

    MLflow quotes the body after "Input:" when it is not JSON, and the parsed input in
    "Failed to predict data '...'. Error: ..." when the model refuses it.
    """
    text = re.split(r"\n\s*Input:", text, maxsplit=1)[0]
    text = re.sub(r"^Failed to predict data .*?\n\s*Error:\s*", "", text, flags=re.DOTALL)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _json_error(status: int, code: str, message: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"error_code": code, "message": short_error(message)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return headers, body


def _sanitised(body: bytes, content_type: str) -> tuple[bytes, str]:
    """An error answer's body cut down: JSON keeps its error_code and a short message only."""
    if "json" in content_type:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            short = {"message": short_error(str(payload.get("message", "")))}
            if isinstance(payload.get("error_code"), str):
                short = {"error_code": payload["error_code"], **short}
            return json.dumps(short).encode(), "application/json"
    return short_error(body.decode("utf-8", "replace")).encode(), "text/plain; charset=utf-8"


class _TooLarge(Exception):
    def __init__(self, body_complete: bool) -> None:
        super().__init__()
        self.body_complete = body_complete  # whether the body's last message has arrived


class RequestGuard:
    """ASGI middleware: a byte limit on request bodies, and short error answers (no echo)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await self._refuse(send, 400, "BAD_REQUEST", "the Content-Length header is not a number")
                return
            if length > self.max_body_bytes:
                expects = headers.get(b"expect", b"").lower() == b"100-continue"
                if not expects and length <= MAX_DRAIN_BYTES:
                    await _drain(receive)
                await self._refuse_size(send, f"{length} bytes")
                return
        else:
            # No length (chunked): read it here, up to the limit, and hand the app what was read.
            try:
                body = await _read_limited(receive, self.max_body_bytes)
            except _TooLarge as err:
                # Read the rest and drop it (up to MAX_DRAIN_BYTES), as for a declared length, so a
                # client that sends before it reads gets the 413 rather than a reset connection.
                if not err.body_complete:
                    await _drain(receive, MAX_DRAIN_BYTES)
                await self._refuse_size(send, "a chunked body")
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, _ShortErrors(send))

    async def _refuse_size(self, send: Send, what: str) -> None:
        await self._refuse(
            send,
            413,
            "REQUEST_TOO_LARGE",
            f"the request body ({what}) is larger than the {self.max_body_bytes} bytes this model"
            " accepts (registry.max_images images of at most registry.max_side pixels a side);"
            " send fewer or smaller images",
        )

    @staticmethod
    async def _refuse(send: Send, status: int, code: str, message: str) -> None:
        headers, body = _json_error(status, code, message)
        headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive, limit: int | None = None) -> None:
    """Receive and drop the rest of a request body (at most `limit` more bytes when given)."""
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        size += len(message.get("body", b""))
        if limit is not None and size > limit:
            return


async def _read_limited(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge(body_complete=not message.get("more_body", False))
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class _ShortErrors:
    """Passes answers through; an error answer (>= 400) is held, cut down, then sent."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.body: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            self.start = message
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.body.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        headers = {k.lower(): v for k, v in self.start.get("headers", [])}
        body, content_type = _sanitised(
            b"".join(self.body), headers.get(b"content-type", b"").decode("latin-1")
        )
        kept = [
            (k, v)
            for k, v in self.start.get("headers", [])
            if k.lower() not in (b"content-length", b"content-type")
        ]
        kept += [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        await self.send({**self.start, "headers": kept})
        await self.send({"type": "http.response.body", "body": body})


def model_limits(model: Any) -> tuple[int, int]:
    """(max_side, max_images) from a loaded culturegan pyfunc model's config."""
    config = model.model_config or {}
    try:
        return int(config["max_side"]), int(config["max_images"])
    except (KeyError, TypeError, ValueError):
        from culturegan.errors import ConfigError

        raise ConfigError(
            "the model has no max_side / max_images in its config: it is not a culturegan model",
            hint="serve a model registered by `culturegan register`",
        ) from None


def guarded_app(model: Any) -> RequestGuard:
    """MLflow's scoring app for a loaded pyfunc model, behind the guard."""
    from mlflow.pyfunc import scoring_server

    max_side, max_images = model_limits(model)
    limit = request_byte_limit(max_side, max_images)
    log.info("request bodies above %d bytes are refused (413)", limit)
    return RequestGuard(scoring_server.init(model), limit)


def load_model(model_uri: str) -> Any:
    """The pyfunc model at `model_uri`, with a clear error when it cannot be loaded."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from culturegan.errors import ConfigError
    from culturegan.tracking.store import redact

    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as err:
        message = err.message if isinstance(err, MlflowException) else str(err)
        raise ConfigError(
            f"model {model_uri} cannot be loaded from {redact(mlflow.get_tracking_uri())}:"
            f" {redact(message)}",
            hint="check the model name and version or alias, and MLFLOW_TRACKING_URI /"
            " tracking.tracking_uri",
        ) from None


def create_app() -> RequestGuard:
    """The app of one worker process (uvicorn factory), for the model named in the environment."""
    return guarded_app(load_model(os.environ[MODEL_ENV]))


def serve(model_uri: str, tracking_uri: str, host: str, port: int, workers: int) -> None:
    """Serve `model_uri` until interrupted: /ping, /health, /version, /invocations."""
    import mlflow
    import uvicorn

    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # the worker processes inherit it
    mlflow.set_tracking_uri(tracking_uri)
    if workers == 1:
        uvicorn.run(guarded_app(load_model(model_uri)), host=host, port=port, log_level="warning")
        return
    load_model(model_uri)  # fail here, once, rather than in every worker
    os.environ[MODEL_ENV] = model_uri
    uvicorn.run(
        "culturegan.model_server:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
    )
