"""MLflow tracking: URI and experiment setup, a parent run per pipeline, a nested run per pair.

mlflow is imported inside the functions that use it: it costs about a second to import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from culturegan.config import Pair, Params, TrackingConfig, dump_params
from culturegan.errors import ConfigError
from culturegan.fileio import atomic_write_text

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Run

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
PARENT_RUN_ENV = "CULTUREGAN_PARENT_RUN_ID"
SAMPLING_INTERVAL_ENV = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"
ROLE_TAG = "culturegan.role"
PARENT_TAG = "mlflow.parentRunId"
# On a DVC/CLI parent run: the working copy it belongs to (`workspace()`), readable, and the key
# that stage processes search by (a digest: MLflow's filter strings cannot escape quotes).
WORKSPACE_TAG = "culturegan.workspace"
WORKSPACE_KEY_TAG = "culturegan.workspace_key"

# MLflow's own limits (mlflow.utils.validation), copied so that this module imports without mlflow.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
_TRUNCATED = "...[truncated]"

# Schemes whose server owns the artifact store: a client's local folder means nothing there.
_SERVER_SCHEMES = {"http", "https", "databricks"}
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_SECRET_QUERY = re.compile(
    r"(?i)([?&][^=&\s]*(?:sig|token|key|secret|pass|cred|auth)[^=&\s]*=)[^&\s]*"
)


def redact(text: str) -> str:
    """Hide URI user info and secret-looking query values (presigned URLs, tokens) in `text`."""
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub("***@", text))


def resolve_tracking_uri(cfg: TrackingConfig) -> str:
    """The tracking URI to use: env MLFLOW_TRACKING_URI, else `tracking.tracking_uri`, else sqlite.

    The environment variable wins over params.yaml on purpose: a deployment (KFP pod, CI job,
    container) points the same committed params.yaml at its own tracking server by setting
    MLFLOW_TRACKING_URI, with no edit to versioned files. The default is an explicit local
    `sqlite:///mlflow.db` because MLflow 3 refuses its old plain-file store.
    """
    env = os.environ.get(TRACKING_URI_ENV, "").strip()
    if env:
        return env
    return cfg.tracking_uri or DEFAULT_TRACKING_URI


def _uri_origin(cfg: TrackingConfig) -> str:
    if os.environ.get(TRACKING_URI_ENV, "").strip():
        return f"environment variable {TRACKING_URI_ENV}"
    if cfg.tracking_uri:
        return "params key tracking.tracking_uri"
    return "the default"


def _artifact_root(cfg: TrackingConfig, tracking_uri: str) -> str | None:
    """Artifact location for a new experiment, absolute so runs work from any directory."""
    loc = cfg.artifact_location
    if loc is None:
        return None
    scheme = urlsplit(loc).scheme
    if len(scheme) > 1 and scheme != "file":
        return loc
    if urlsplit(tracking_uri).scheme in _SERVER_SCHEMES:
        log.info(
            "tracking.artifact_location %r is a local folder; the tracking server %s keeps the "
            "artifacts in its own store instead",
            loc,
            redact(tracking_uri),
        )
        return None
    if scheme == "file":
        return loc
    return Path(loc).expanduser().resolve().as_uri()


def configure(cfg: TrackingConfig) -> str:
    """Point MLflow at the tracking URI and experiment (created if missing); return its id.

    Sets MLflow's process-wide tracking URI and active experiment, so that code inside a run
    (e.g. `mlflow.pytorch.log_model`) logs to the same place.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(cfg)
    client = _client(uri)
    try:
        experiment = client.get_experiment_by_name(cfg.experiment)
        if experiment is None:
            try:
                client.create_experiment(cfg.experiment, artifact_location=_artifact_root(cfg, uri))
            except MlflowException as err:
                # Another stage process may have created it since we looked.
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            experiment = client.get_experiment_by_name(cfg.experiment)
    except MlflowException as err:
        raise ConfigError(
            f"MLflow tracking store {redact(uri)} (from {_uri_origin(cfg)}) cannot be used: "
            f"{redact(err.message)}",
            hint=f"start the tracking server or fix {TRACKING_URI_ENV} / tracking.tracking_uri",
        ) from None
    assert experiment is not None
    if experiment.lifecycle_stage == "deleted":
        raise ConfigError(
            f"MLflow experiment {cfg.experiment!r} at {redact(uri)} is deleted",
            hint="restore it (mlflow experiments restore --experiment-id "
            f"{experiment.experiment_id}) or set tracking.experiment to another name",
        )
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=experiment.experiment_id)
    return experiment.experiment_id


def _client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


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
        self._client = _client(tracking_uri)
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


def _find_run(client: MlflowClient, run_id: str) -> Run | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def _require_run(client: MlflowClient, run_id: str, origin: str) -> Run:
    run = _find_run(client, run_id)
    if run is None or run.info.lifecycle_stage == "deleted":
        raise ConfigError(
            f"MLflow run {run_id!r} (from {origin}) does not exist or is deleted at "
            f"{redact(client.tracking_uri)}",
            hint=f"unset {PARENT_RUN_ENV} or check {TRACKING_URI_ENV} points at the right server",
        )
    return run


def _exit_status(exc: BaseException) -> str:
    return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"


def workspace(path: str | os.PathLike[str] = ".") -> str:
    """The working copy a stage process runs in: `<host>:<resolved absolute path>` of `path`
    (the working directory by default, which `dvc repro` sets to the repository root).

    The host is part of it so that clones at the same path on two machines (CI runners, laptops)
    sharing one tracking server do not take each other's parent run.
    """
    return f"{socket.gethostname()}:{Path(path).resolve()}"


def _workspace_key(workspace_id: str) -> str:
    return hashlib.sha256(workspace_id.encode("utf-8")).hexdigest()[:32]


def _create_parent(
    client: MlflowClient,
    experiment_id: str,
    params: Params,
    name: str,
    tags: Mapping[str, str] | None = None,
) -> str:
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    # resolve_tags adds what mlflow.start_run would: source, user, git commit.
    tags = resolve_tags({**(tags or {}), ROLE_TAG: "pipeline", MLFLOW_RUN_NAME: name})
    run = client.create_run(experiment_id, tags=tags, run_name=name)
    tracker = MlflowTracker(run.info.run_id, client.tracking_uri)
    tracker.log_params(params)
    # Params are cut to 6000 characters; the whole effective params stay readable here.
    tracker.log_dict(dump_params(params), "params.json")
    return run.info.run_id


def _env_parent(client: MlflowClient) -> str | None:
    env_id = os.environ.get(PARENT_RUN_ENV, "").strip()
    if env_id:
        _require_run(client, env_id, f"environment variable {PARENT_RUN_ENV}")
    return env_id or None


def _open_parents(client: MlflowClient, experiment_id: str, key: str) -> list[Run]:
    """The RUNNING parent runs of the workspace `key`, oldest first."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{ROLE_TAG}` = 'pipeline' and tags.`{WORKSPACE_KEY_TAG}` = '{key}' "
            "and attributes.status = 'RUNNING'"
        ),
    )
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def start_parent(cfg: TrackingConfig, params: Params, name: str = "pipeline") -> str:
    """A new parent run, left RUNNING, for an orchestrator that hands its id to every step itself
    (the KFP pipeline's start-run step); CULTUREGAN_PARENT_RUN_ID instead when that is set."""
    experiment_id = configure(cfg)
    client = _client(resolve_tracking_uri(cfg))
    return _env_parent(client) or _create_parent(client, experiment_id, params, name)


def start_or_resume_parent(
    cfg: TrackingConfig, params: Params, workspace_id: str | None = None, name: str = "pipeline"
) -> str:
    """The parent run id shared by the separate stage processes of one pipeline execution (DVC).

    Nothing is passed between the processes: the parent is derived from MLflow. Order:
    CULTUREGAN_PARENT_RUN_ID if set; else the open (RUNNING) parent run of this workspace (tagged
    with the key of `workspace_id`, by default `workspace()`) in the experiment; else a new
    parent run tagged so. It is left RUNNING until `finish_run` (the analyze stage) ends it, so
    that the next execution starts a new one, while a failed or killed execution is resumed under
    the same parent.
    """
    experiment_id = configure(cfg)
    client = _client(resolve_tracking_uri(cfg))
    env_id = _env_parent(client)
    if env_id:
        return env_id
    workspace_id = workspace_id or workspace()
    key = _workspace_key(workspace_id)
    found = _open_parents(client, experiment_id, key)
    if found:
        log.info(
            "MLflow parent run %s of %s is open: nesting under it",
            found[0].info.run_id,
            workspace_id,
        )
        return found[0].info.run_id
    tags = {WORKSPACE_TAG: workspace_id, WORKSPACE_KEY_TAG: key}
    run_id = _create_parent(client, experiment_id, params, name, tags)
    # Two processes may both have found none and started one: each keeps the oldest.
    found = _open_parents(client, experiment_id, key)
    if found and found[0].info.run_id != run_id:
        client.delete_run(run_id)
        return found[0].info.run_id
    return run_id


def finish_run(cfg: TrackingConfig, run_id: str, status: str = "FINISHED") -> None:
    """End a run left RUNNING by `start_or_resume_parent` or `start_parent` (the last stage)."""
    client = _client(resolve_tracking_uri(cfg))
    _require_run(client, run_id, "finish_run")
    client.set_terminated(run_id, status)


def _resumable_pair_run(
    client: MlflowClient,
    run_id_file: Path | None,
    experiment_id: str,
    parent_run_id: str | None,
    pair: Pair,
) -> str | None:
    if run_id_file is None or not run_id_file.exists():
        return None
    old_id = run_id_file.read_text(encoding="utf-8").strip()
    run = _find_run(client, old_id) if old_id else None
    why = None
    if run is None or run.info.lifecycle_stage == "deleted":
        why = "it does not exist (or is deleted) in this tracking store"
    elif run.info.status == "FINISHED":
        why = "it is FINISHED"
    elif run.info.experiment_id != experiment_id:
        why = "it is in another experiment"
    elif run.data.tags.get(PARENT_TAG) != parent_run_id:
        why = "it has another parent run"
    elif run.data.tags.get("pair") != str(pair):
        why = f"it is the run of pair {run.data.tags.get('pair')!r}"
    if why:
        log.info("not resuming MLflow run %r from %s: %s", old_id, run_id_file, why)
        return None
    return old_id


@contextlib.contextmanager
def pair_run(
    cfg: TrackingConfig,
    parent_run_id: str | None,
    pair: Pair,
    params_dict: Mapping[str, Any] | BaseModel,
    *,
    objective: str | None = None,
    run_id_file: Path | None = None,
) -> Iterator[MlflowTracker]:
    """A training run for one culture pair, nested under `parent_run_id`; yields its tracker.

    The run is MLflow's active run inside the block, so `mlflow.*` calls there log to it too.
    It is tagged `pair`, `source_style`, `target_style`, `objective`; `params_dict` is logged
    flattened with dotted keys. With `run_id_file` (e.g. `<pair output dir>/run_id.txt`), a run
    named there that is not FINISHED (crashed, killed) and belongs to the same parent and pair
    is resumed, so a training resumed from a checkpoint continues its metric curves in the same
    run; pass it only when training does resume from a checkpoint. The id of the run is written
    there atomically. Ends FINISHED, or FAILED when the block raises (the exception propagates).
    """
    import mlflow

    experiment_id = configure(cfg)
    uri = resolve_tracking_uri(cfg)
    client = _client(uri)
    if parent_run_id is not None:
        parent = _require_run(client, parent_run_id, "the parent_run_id argument")
        if parent.info.experiment_id != experiment_id:
            # Children live beside their parent, even when it was started in another experiment.
            experiment_id = parent.info.experiment_id
            mlflow.set_experiment(experiment_id=experiment_id)
    tags = {
        ROLE_TAG: "pair",
        "pair": str(pair),
        "source_style": pair.source,
        "target_style": pair.target,
    }
    if objective is not None:
        tags["objective"] = objective
    run_id_file = Path(run_id_file) if run_id_file is not None else None
    resume_id = _resumable_pair_run(client, run_id_file, experiment_id, parent_run_id, pair)
    # start_run starts the system metrics monitor (resuming its step count on a resumed run);
    # mlflow.end_run stops it.
    with _sampling_interval(cfg.system_metrics_interval_s):
        if resume_id:
            active = mlflow.start_run(
                run_id=resume_id,
                nested=True,
                tags=tags,
                log_system_metrics=cfg.log_system_metrics,
            )
            log.info("resuming MLflow run %s for pair %s", resume_id, pair)
        else:
            active = mlflow.start_run(
                experiment_id=experiment_id,
                run_name=str(pair),
                parent_run_id=parent_run_id,
                nested=True,
                tags=tags,
                log_system_metrics=cfg.log_system_metrics,
            )
    run_id = active.info.run_id
    tracker = MlflowTracker(run_id, uri)
    try:
        if run_id_file is not None:
            atomic_write_text(run_id_file, run_id + "\n")
        tracker.log_params(params_dict)
        yield tracker
    except BaseException as exc:
        status = _exit_status(exc)
        _quiet_flush(tracker)
        try:
            _end_pair_run(client, run_id, status)
        except Exception:
            log.exception("could not mark MLflow run %s as %s", run_id, status)
        raise
    tracker.flush()
    _end_pair_run(client, run_id, "FINISHED")


def _quiet_flush(tracker: MlflowTracker) -> None:
    """Flush on the failure path without hiding the original exception behind a tracking error."""
    try:
        tracker.flush()
    except Exception:
        log.exception("could not send the last metrics of MLflow run %s", tracker.run_id)


@contextlib.contextmanager
def _sampling_interval(seconds: float) -> Iterator[None]:
    """tracking.system_metrics_interval_s for the monitor that start_run creates.

    MLflow reads the interval from its environment setting when the monitor starts; one set by
    the user (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL) still wins, as it does in MLflow.
    """
    import mlflow

    if os.environ.get(SAMPLING_INTERVAL_ENV):
        yield
        return
    mlflow.set_system_metrics_sampling_interval(seconds)
    try:
        yield
    finally:
        mlflow.set_system_metrics_sampling_interval(None)


def _end_pair_run(client: MlflowClient, run_id: str, status: str) -> None:
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status)
    else:
        # Code inside the block ended or switched the active run; still record the outcome.
        client.set_terminated(run_id, status)
