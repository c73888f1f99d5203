"""`MlflowTracker`, the trainer's tracker (one MLflow run, addressed by id), and `flatten_params`.

mlflow is imported inside the functions that use it: it costs about a second to import.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from culturegan.tracking.store import mlflow_client, redact

if TYPE_CHECKING:
    from mlflow.entities import Metric

log = logging.getLogger(__name__)

# MLflow's own limits (mlflow.utils.validation), copied so that this module imports without mlflow.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
_TRUNCATED = "...[truncated]"


def _param_value(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, Path):
        text = str(value)
    elif value is None or isinstance(value, (bool, int, float, list, tuple, dict)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    text = redact(text)
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        text = text[: MAX_PARAM_VALUE_LENGTH - len(_TRUNCATED)] + _TRUNCATED
    return text


def flatten_params(params: Mapping[str, Any] | BaseModel, prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"a.b.c": "value"}: strings as they are, other values as JSON.

    Values are redacted (URI credentials, tokens) and cut to MLflow's 6000-character limit.
    """
    if isinstance(params, BaseModel):
        params = params.model_dump(mode="json")
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, name + "."))
        else:
            flat[name] = _param_value(value)
    return flat


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MlflowTracker:
    """The trainer's `tracker`: logs to one MLflow run, addressed by id (no global run needed).

    Metrics are buffered and sent in batches (one request per `flush_every_s` or 1000 values)
    with the time at which they were logged; `flush()` sends the rest and is called when the
    run context ends, also on failure. Batches are sent synchronously so that a broken tracking
    server surfaces as an error in the training loop rather than being lost in a background queue.
    """

    def __init__(self, run_id: str, tracking_uri: str, *, flush_every_s: float = 5.0) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self._client = mlflow_client(tracking_uri)
        self._flush_every_s = flush_every_s
        self._pending: list[Metric] = []
        self._last_flush = time.monotonic()

    def log_params(self, params: Mapping[str, Any] | BaseModel) -> None:
        """Log flattened params, skipping keys the run already has (MLflow params never change)."""
        from mlflow.entities import Param

        flat = flatten_params(params)
        existing = self._client.get_run(self.run_id).data.params
        changed = sorted(k for k, v in flat.items() if k in existing and existing[k] != v)
        if changed:
            log.warning(
                "run %s keeps its earlier values of %s: MLflow params cannot change within a run",
                self.run_id,
                ", ".join(changed),
            )
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        for chunk in _chunks(new, MAX_PARAMS_TAGS_PER_BATCH):
            self._client.log_batch(self.run_id, params=chunk)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now_ms, int(step)) for k, v in metrics.items())
        if (
            len(self._pending) >= MAX_METRICS_PER_BATCH
            or time.monotonic() - self._last_flush >= self._flush_every_s
        ):
            self.flush()

    def flush(self) -> None:
        """Send buffered metrics now."""
        while self._pending:
            chunk = self._pending[:MAX_METRICS_PER_BATCH]
            self._client.log_batch(self.run_id, metrics=chunk)
            del self._pending[: len(chunk)]
        self._last_flush = time.monotonic()

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's contents, under `artifact_path` of the run."""
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """Store a JSON/YAML document (by `artifact_file`'s extension) as an artifact."""
        self._client.log_dict(self.run_id, dict(data), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        run_tags = [RunTag(k, redact(str(v))[:MAX_TAG_VALUE_LENGTH]) for k, v in tags.items()]
        for chunk in _chunks(run_tags, MAX_PARAMS_TAGS_PER_BATCH):
            self._client.log_batch(self.run_id, tags=chunk)
