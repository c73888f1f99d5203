"""The parent run of one pipeline execution: every stage's run nests under it.

DVC runs each stage in its own process and nothing is passed between them: each derives the
parent from MLflow (`start_or_resume_parent`); KFP starts one and hands its id to every step
(`start_parent`). The last stage ends it (`finish_run`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from culturegan.config import Params, TrackingConfig, dump_params
from culturegan.errors import ConfigError
from culturegan.tracking.store import (
    ROLE_TAG,
    TRACKING_URI_ENV,
    configure,
    find_run,
    mlflow_client,
    redact,
    resolve_tracking_uri,
)
from culturegan.tracking.tracker import MlflowTracker

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

PARENT_RUN_ENV = "CULTUREGAN_PARENT_RUN_ID"
# On a DVC/CLI parent run: the working copy it belongs to (`workspace()`), readable, and the key
# that stage processes search by (a digest: MLflow's filter strings cannot escape quotes).
WORKSPACE_TAG = "culturegan.workspace"
WORKSPACE_KEY_TAG = "culturegan.workspace_key"


def require_run(client: MlflowClient, run_id: str, origin: str) -> Run:
    run = find_run(client, run_id)
    if run is None or run.info.lifecycle_stage == "deleted":
        raise ConfigError(
            f"MLflow run {run_id!r} (from {origin}) does not exist or is deleted at "
            f"{redact(client.tracking_uri)}",
            hint=f"unset {PARENT_RUN_ENV} or check {TRACKING_URI_ENV} points at the right server",
        )
    return run


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
        require_run(client, env_id, f"environment variable {PARENT_RUN_ENV}")
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


def use_parent_run(run_id: str) -> None:
    """Nest this process's MLflow runs under the parent run `run_id`: CULTUREGAN_PARENT_RUN_ID,
    which `start_parent` and `start_or_resume_parent` read first (a KFP step; a process of the
    train stage's runs)."""
    os.environ[PARENT_RUN_ENV] = run_id


def start_parent(cfg: TrackingConfig, params: Params, name: str = "pipeline") -> str:
    """A new parent run, left RUNNING, for an orchestrator that hands its id to every step itself
    (the KFP pipeline's start-run step); CULTUREGAN_PARENT_RUN_ID instead when that is set."""
    experiment_id = configure(cfg)
    client = mlflow_client(resolve_tracking_uri(cfg))
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
    client = mlflow_client(resolve_tracking_uri(cfg))
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
    client = mlflow_client(resolve_tracking_uri(cfg))
    require_run(client, run_id, "finish_run")
    client.set_terminated(run_id, status)
