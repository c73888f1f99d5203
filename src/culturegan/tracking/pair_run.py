"""A training run per culture pair, nested under the pipeline's parent run, with system metrics.

mlflow is imported inside the functions that use it: it costs about a second to import.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from culturegan.config import Pair, TrackingConfig
from culturegan.fileio import atomic_write_text
from culturegan.tracking.parent_run import require_run
from culturegan.tracking.store import (
    ROLE_TAG,
    configure,
    find_run,
    mlflow_client,
    resolve_tracking_uri,
)
from culturegan.tracking.tracker import MlflowTracker

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

SAMPLING_INTERVAL_ENV = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"
PARENT_TAG = "mlflow.parentRunId"


def _exit_status(exc: BaseException) -> str:
    return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"


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
    run = find_run(client, old_id) if old_id else None
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
    client = mlflow_client(uri)
    if parent_run_id is not None:
        parent = require_run(client, parent_run_id, "the parent_run_id argument")
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
