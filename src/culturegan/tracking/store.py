"""The MLflow tracking store: URI and experiment setup, the client, run lookup, redaction.

mlflow is imported inside the functions that use it: it costs about a second to import.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from culturegan.config import TrackingConfig
from culturegan.errors import ConfigError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
# What a run is for: pipeline (parent), pair (training), report, register.
ROLE_TAG = "culturegan.role"

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
    client = mlflow_client(uri)
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


def mlflow_client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def find_run(client: MlflowClient, run_id: str) -> Run | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        return None
