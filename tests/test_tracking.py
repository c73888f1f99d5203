"""Tests of culturegan.tracking against real MLflow stores: sqlite files, a real server with S3."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow_server import mlflow_server

from culturegan.config import Pair, Params, TrackingConfig, parse_params
from culturegan.errors import ConfigError
from culturegan.tracking.pair_run import pair_run
from culturegan.tracking.parent_run import (
    PARENT_RUN_ENV,
    WORKSPACE_TAG,
    finish_run,
    start_or_resume_parent,
    start_parent,
    workspace,
)
from culturegan.tracking.store import DEFAULT_TRACKING_URI, configure, resolve_tracking_uri
from culturegan.tracking.tracker import MAX_PARAM_VALUE_LENGTH, MlflowTracker, flatten_params

UKIYOE, INKWASH = Pair("photo", "ukiyoe"), Pair("photo", "inkwash")


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow sqlite database: creating one costs ~2 s, copying it nothing."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def _fresh_db(template_db: Path, path: Path) -> str:
    shutil.copy(template_db, path)
    return f"sqlite:///{path}"


@pytest.fixture(autouse=True)
def _isolated_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "MLFLOW_TRACKING_URI",
        PARENT_RUN_ENV,
        "MLFLOW_RUN_ID",
        "MLFLOW_EXPERIMENT_NAME",
        "MLFLOW_EXPERIMENT_ID",
        "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL",
    ):
        monkeypatch.delenv(var, raising=False)
    yield
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def cfg(tmp_path: Path, template_db: Path) -> TrackingConfig:
    return TrackingConfig(
        tracking_uri=_fresh_db(template_db, tmp_path / "mlflow.db"),
        artifact_location=str(tmp_path / "mlartifacts"),
        log_system_metrics=False,
    )


def _client(cfg: TrackingConfig):
    from mlflow import MlflowClient

    return MlflowClient(resolve_tracking_uri(cfg))


def _history(cfg: TrackingConfig, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in _client(cfg).get_metric_history(run_id, key)]


def test_env_tracking_uri_wins_over_params_and_default_is_explicit_sqlite(
    cfg: TrackingConfig, tmp_path: Path, template_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_tracking_uri(TrackingConfig()) == DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"
    assert resolve_tracking_uri(cfg) == cfg.tracking_uri
    env_uri = _fresh_db(template_db, tmp_path / "env.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env_uri)
    assert resolve_tracking_uri(cfg) == env_uri

    configure(cfg)

    from mlflow import MlflowClient

    assert MlflowClient(env_uri).get_experiment_by_name("culturegan") is not None
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert MlflowClient(cfg.tracking_uri).get_experiment_by_name("culturegan") is None


def test_pair_run_nests_under_parent_with_tags_flat_params_metrics_and_artifact(
    cfg: TrackingConfig, tmp_path: Path
) -> None:
    import mlflow

    sample = tmp_path / "sample.png"
    sample.write_bytes(b"\x89PNG fake image bytes")
    parent_id = start_or_resume_parent(cfg, Params())
    with pair_run(
        cfg,
        parent_id,
        Pair("photo", "ukiyoe"),
        {"train": {"lr": 2e-4, "styles": ["photo", "ukiyoe"]}, "seed": 3},
        objective="cyclegan",
    ) as tracker:
        assert mlflow.active_run().info.run_id == tracker.run_id
        tracker.log_metrics({"loss_G": 1.5, "loss_D": 0.5}, step=0)
        tracker.log_metrics({"loss_G": 1.0}, step=10)
        tracker.log_artifact(sample, "samples")
        tracker.set_tags({"note": "first"})
        pair_id = tracker.run_id
    finish_run(cfg, parent_id)

    client = _client(cfg)
    child, top = client.get_run(pair_id), client.get_run(parent_id)
    assert child.data.tags["mlflow.parentRunId"] == parent_id
    assert {
        k: child.data.tags[k] for k in ("pair", "source_style", "target_style", "objective")
    } == {
        "pair": "photo-ukiyoe",
        "source_style": "photo",
        "target_style": "ukiyoe",
        "objective": "cyclegan",
    }
    assert child.data.tags["note"] == "first"
    assert child.data.params == {
        "train.lr": "0.0002",
        "train.styles": '["photo", "ukiyoe"]',
        "seed": "3",
    }
    assert _history(cfg, pair_id, "loss_G") == [(0, 1.5), (10, 1.0)]
    assert _history(cfg, pair_id, "loss_D") == [(0, 0.5)]
    assert (child.info.status, top.info.status) == ("FINISHED", "FINISHED")
    assert top.data.params["data.synthetic.train_scenes"] == "240"
    assert "params.json" in [a.path for a in client.list_artifacts(parent_id)]

    downloaded = Path(client.download_artifacts(pair_id, "samples/sample.png", str(tmp_path)))
    assert downloaded.read_bytes() == sample.read_bytes()
    stored = list((tmp_path / "mlartifacts").rglob("sample.png"))
    assert len(stored) == 1, "artifact must go to tracking.artifact_location"


def test_metrics_are_buffered_until_flush_and_keep_the_time_they_were_logged(
    cfg: TrackingConfig,
) -> None:
    experiment_id = configure(cfg)
    run_id = _client(cfg).create_run(experiment_id).info.run_id
    tracker = MlflowTracker(run_id, resolve_tracking_uri(cfg), flush_every_s=3600)
    logged_at_ms = int(time.time() * 1000)
    for step in range(3):
        tracker.log_metrics({"loss": float(step)}, step=step)
    assert _history(cfg, run_id, "loss") == []
    time.sleep(0.05)
    tracker.flush()
    history = _client(cfg).get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert all(logged_at_ms <= m.timestamp < logged_at_ms + 50 for m in history)

    # A full batch (MLflow's 1000-metric request limit) goes out without waiting.
    tracker.log_metrics({f"m{i}": i for i in range(1000)}, step=7)
    assert _history(cfg, run_id, "m999") == [(7, 999.0)]


def test_failing_pair_block_marks_run_failed_sends_its_metrics_and_propagates(
    cfg: TrackingConfig,
) -> None:
    with (
        pytest.raises(RuntimeError, match="diverged"),
        pair_run(cfg, None, INKWASH, {}) as tracker,
    ):
        tracker.log_metrics({"loss": 9.0}, step=4)
        raise RuntimeError("diverged")
    run = _client(cfg).get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert _history(cfg, tracker.run_id, "loss") == [(4, 9.0)]


@pytest.mark.parametrize("left_behind", ["FAILED", "RUNNING"])
def test_unfinished_pair_run_is_resumed_in_the_same_run(
    cfg: TrackingConfig, tmp_path: Path, left_behind: str
) -> None:
    run_id_file = tmp_path / "out" / "photo-ukiyoe" / "run_id.txt"
    parent_id = start_or_resume_parent(cfg, Params())
    params = {"train": {"epochs": 2}}
    if left_behind == "FAILED":
        with (
            pytest.raises(RuntimeError),
            pair_run(cfg, parent_id, UKIYOE, params, run_id_file=run_id_file) as t,
        ):
            t.log_metrics({"loss": 3.0}, step=0)
            raise RuntimeError("crash")
        first_id = t.run_id
    else:
        # What a SIGKILLed training process leaves: a RUNNING run whose id is on disk.
        client = _client(cfg)
        run = client.create_run(
            configure(cfg), tags={"mlflow.parentRunId": parent_id, "pair": "photo-ukiyoe"}
        )
        first_id = run.info.run_id
        client.log_metric(first_id, "loss", 3.0, step=0)
        run_id_file.parent.mkdir(parents=True)
        run_id_file.write_text(first_id + "\n")
    assert run_id_file.read_text().strip() == first_id

    with pair_run(cfg, parent_id, UKIYOE, params, run_id_file=run_id_file) as tracker:
        tracker.log_metrics({"loss": 2.0}, step=1)
    assert tracker.run_id == first_id
    assert _history(cfg, first_id, "loss") == [(0, 3.0), (1, 2.0)]
    assert _client(cfg).get_run(first_id).info.status == "FINISHED"

    with pair_run(cfg, parent_id, UKIYOE, params, run_id_file=run_id_file) as tracker:
        pass
    assert tracker.run_id != first_id, "a FINISHED run is never reopened"
    assert run_id_file.read_text().strip() == tracker.run_id


def test_pair_run_of_another_pair_or_parent_is_not_resumed(
    cfg: TrackingConfig, tmp_path: Path
) -> None:
    run_id_file = tmp_path / "run_id.txt"
    with (
        pytest.raises(RuntimeError),
        pair_run(cfg, None, UKIYOE, {}, run_id_file=run_id_file) as crashed,
    ):
        raise RuntimeError("crash")
    with pair_run(cfg, None, INKWASH, {}, run_id_file=run_id_file) as other_pair:
        pass
    assert other_pair.run_id != crashed.run_id

    with (
        pytest.raises(RuntimeError),
        pair_run(cfg, None, UKIYOE, {}, run_id_file=run_id_file) as crashed,
    ):
        raise RuntimeError("crash")
    parent_id = start_or_resume_parent(cfg, Params())
    with pair_run(cfg, parent_id, UKIYOE, {}, run_id_file=run_id_file) as new_parent:
        pass
    assert new_parent.run_id != crashed.run_id


def test_the_parent_run_is_the_open_one_of_the_workspace_until_finished_and_env_wins(
    cfg: TrackingConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clone = tmp_path / "clone"
    clone.mkdir()
    monkeypatch.chdir(clone)
    first = start_or_resume_parent(cfg, Params())
    run = _client(cfg).get_run(first)
    assert run.info.status == "RUNNING" and run.data.tags["culturegan.role"] == "pipeline"
    assert (
        run.data.tags[WORKSPACE_TAG] == workspace() == f"{socket.gethostname()}:{clone.resolve()}"
    )
    assert start_or_resume_parent(cfg, Params()) == first, "derived from MLflow, not remembered"
    assert not [p for p in tmp_path.rglob("*") if "parent" in p.name], "no id file is written"

    # Another clone (another directory or another host) sharing the store has its own parent.
    other_clone = tmp_path / "other"
    other_clone.mkdir()
    monkeypatch.chdir(other_clone)
    other = start_or_resume_parent(cfg, Params())
    assert other != first and start_or_resume_parent(cfg, Params()) == other
    elsewhere = start_or_resume_parent(cfg, Params(), f"another-host:{clone.resolve()}")
    assert elsewhere not in (first, other)
    monkeypatch.chdir(clone)
    assert start_or_resume_parent(cfg, Params()) == first

    # The last stage ends it: the next execution gets a new parent, and keeps that one.
    finish_run(cfg, first)
    second = start_or_resume_parent(cfg, Params())
    assert second not in (first, other, elsewhere)
    assert start_or_resume_parent(cfg, Params()) == second
    # A parent run of the orchestrator (KFP) carries no workspace: never taken as this one's.
    finish_run(cfg, second)
    kfp = start_parent(cfg, Params())
    assert WORKSPACE_TAG not in _client(cfg).get_run(kfp).data.tags
    assert start_or_resume_parent(cfg, Params()) not in (kfp, second)

    monkeypatch.setenv(PARENT_RUN_ENV, first)
    assert start_or_resume_parent(cfg, Params()) == first
    assert start_parent(cfg, Params()) == first
    monkeypatch.setenv(PARENT_RUN_ENV, "0" * 32)
    with pytest.raises(ConfigError, match=PARENT_RUN_ENV):
        start_or_resume_parent(cfg, Params())


def test_stage_processes_of_one_workspace_share_the_parent_run(
    cfg: TrackingConfig, tmp_path: Path
) -> None:
    """Separate processes (as DVC runs the stages) find the same parent; nothing passes between
    them but the tracking store."""
    code = (
        "import sys; from culturegan.config import Params, TrackingConfig; "
        "from culturegan.tracking.parent_run import start_or_resume_parent; "
        "print(start_or_resume_parent(TrackingConfig.model_validate_json(sys.argv[1]), Params()))"
    )

    def stage(cwd: Path) -> str:
        cwd.mkdir(exist_ok=True)
        out = subprocess.run(
            [sys.executable, "-c", code, cfg.model_dump_json()],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip().splitlines()[-1]

    train = stage(tmp_path / "clone")
    assert stage(tmp_path / "clone") == train
    assert stage(tmp_path / "other") != train


def test_configure_creates_the_experiment_once_with_an_absolute_artifact_location(
    cfg: TrackingConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = cfg.model_copy(update={"artifact_location": "mlartifacts", "experiment": "exp-a"})
    experiment_id = configure(relative)
    assert configure(relative) == experiment_id
    experiment = _client(cfg).get_experiment(experiment_id)
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()

    _client(cfg).delete_experiment(experiment_id)
    with pytest.raises(ConfigError, match="'exp-a'.*deleted"):
        configure(relative)


def test_system_metrics_are_logged_at_the_configured_interval(cfg: TrackingConfig) -> None:
    sampled = cfg.model_copy(update={"log_system_metrics": True, "system_metrics_interval_s": 0.2})
    with pair_run(sampled, None, UKIYOE, {}) as tracker:
        time.sleep(1.0)
    cpu = _history(cfg, tracker.run_id, "system/cpu_utilization_percentage")
    assert len(cpu) >= 2, cpu


def test_flatten_params_dotted_keys_json_values_redacted_and_truncated() -> None:
    flat = flatten_params(
        {
            "a": {"b": 1, "c": {"d": True, "e": None}},
            "empty": {},
            "path": Path("data/styles"),
            "long": "x" * (MAX_PARAM_VALUE_LENGTH + 10),
            "source": "https://user:pw@host/a.zip?X-Amz-Signature=abc&part=1",
        }
    )
    assert flat["a.b"] == "1" and flat["a.c.d"] == "true" and flat["a.c.e"] == "null"
    assert flat["empty"] == "{}" and flat["path"] == "data/styles"
    assert len(flat["long"]) == MAX_PARAM_VALUE_LENGTH and flat["long"].endswith("[truncated]")
    assert flat["source"] == "https://***@host/a.zip?X-Amz-Signature=***&part=1"
    assert flatten_params(Params())["tracking.experiment"] == "culturegan"


def test_tracking_config_rejects_credentials_in_uris() -> None:
    with pytest.raises(ConfigError, match=r"tracking\.tracking_uri.*credentials"):
        parse_params({"tracking": {"tracking_uri": "http://alice:secret@mlflow:5000"}})
    with pytest.raises(ConfigError, match=r"tracking\.system_metrics_interval_s"):
        parse_params({"tracking": {"system_metrics_interval_s": 0}})


def test_unreachable_tracking_server_is_a_config_error_naming_the_env_var(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="environment variable MLFLOW_TRACKING_URI"):
        configure(TrackingConfig())


def test_importing_tracking_does_not_import_mlflow() -> None:
    code = (
        "import sys, culturegan.tracking.pair_run, culturegan.tracking.parent_run, "
        "culturegan.tracking.store, culturegan.tracking.tracker; print('mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_pair_run_through_a_real_tracking_server_stores_artifacts_in_s3(
    tmp_path: Path, s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from mlflow import MlflowClient

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="mlflow")
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    sample = workdir / "grid.png"
    sample.write_bytes(b"\x89PNG grid")

    with mlflow_server(tmp_path, "s3://mlflow/artifacts") as url:
        # The default artifact_location ('mlartifacts', a local folder) must not be used: the
        # server's S3 store is.
        cfg = TrackingConfig(tracking_uri=url, system_metrics_interval_s=0.5)
        parent_id = start_or_resume_parent(cfg, Params())
        with pair_run(
            cfg, parent_id, INKWASH, {"lr": 1e-3}, run_id_file=workdir / "run_id.txt"
        ) as tracker:
            for step in range(5):
                tracker.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            tracker.log_artifact(sample, "samples")
            time.sleep(1.0)
        finish_run(cfg, parent_id)

        client = MlflowClient(url)
        run = client.get_run(tracker.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        assert [m.step for m in client.get_metric_history(tracker.run_id, "loss")] == [
            0,
            1,
            2,
            3,
            4,
        ]
        assert "system/cpu_utilization_percentage" in run.data.metrics
        got = Path(client.download_artifacts(tracker.run_id, "samples/grid.png", str(tmp_path)))
        assert got.read_bytes() == sample.read_bytes()

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow").get("Contents", [])]
    grid = [k for k in keys if k.endswith(f"{tracker.run_id}/artifacts/samples/grid.png")]
    assert grid and grid[0].startswith("artifacts/"), keys
    assert s3.get_object(Bucket="mlflow", Key=grid[0])["Body"].read() == sample.read_bytes()
    assert not (workdir / "mlartifacts").exists() and not (workdir / "mlruns").exists()
