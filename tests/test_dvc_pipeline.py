"""End to end: `dvc repro` on a tiny embedded benchmark, the validation gate, and DVC remotes
(the default local directory and S3 against a real moto server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT
from tiny import tiny_raw

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent

# The shared tiny config (tests/tiny.py, as the KFP end-to-end test uses) with three styles of
# 12 + 4 scenes and two training seeds.
OVERRIDES = {
    "data": {"synthetic": {"styles": ["photo", "inkwash", "ukiyoe"], "train_scenes": 12, "test_scenes": 4}},
    "train": {"seeds": [0, 1]},
}


def _run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".gitignore"  # git's file, written by DVC, not data
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throwaway copy of the repository's pipeline (git + DVC) with tiny params."""
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO_ROOT / name, proj / name)
    shutil.copytree(REPO_ROOT / "src", proj / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (proj / "params.yaml").write_text(yaml.safe_dump(tiny_raw(OVERRIDES), sort_keys=False))
    _run(["git", "init", "-q"], proj)
    _run(["dvc", "init", "-q"], proj)
    shutil.copy(REPO_ROOT / ".dvc" / "config", proj / ".dvc" / "config")
    return proj


def test_dvc_repro_runs_every_stage_per_pair_and_seed_then_skips_unchanged_stages(project: Path):
    _run(["dvc", "repro"], project)
    manifest = project / "data" / "manifest.parquet"
    assert manifest.is_file() and (project / "data" / "preview.png").is_file()
    result = json.loads((project / "reports" / "validation.json").read_text())
    assert result["success"] is True
    assert (project / "reports" / "data_docs" / "index.html").is_file()
    pngs = list((project / "data" / "styles").rglob("*.png"))
    assert len(pngs) == 3 * (12 + 4)
    # CycleGAN: each trained (pair, seed) is evaluated (and registered) in both directions
    pair, reverse = "photo-inkwash", "inkwash-photo"
    for seed in (0, 1):
        assert (project / "runs" / "gan" / pair / f"seed{seed}" / "generator.pt").is_file()
        assert (project / "runs" / "gan" / pair / f"seed{seed}" / "run_id.txt").is_file()
        for direction in (pair, reverse):
            metrics = json.loads(
                (project / "reports" / "eval" / pair / f"seed{seed}" / direction / "metrics.json").read_text()
            )
            assert {"gan", "identity", "reinhard", "histogram"} <= set(metrics["methods"])
            assert metrics["pair"] == direction and metrics["seed"] == seed
        decisions = json.loads((project / "reports" / "register" / pair / f"seed{seed}.json").read_text())
        assert set(decisions) == {pair, reverse}
        # the metrics files dvc.yaml declares: copies of train_metrics.json and of each metrics.json
        train = json.loads((project / "reports" / "train.json").read_text())[f"{pair}/seed{seed}"]
        run = project / "runs" / "gan" / pair / f"seed{seed}"
        assert train == json.loads((run / "train_metrics.json").read_text())
        scored = json.loads((project / "reports" / "evaluate" / pair / f"seed{seed}.json").read_text())
        assert set(scored) == {pair, reverse} and scored[pair]["seed"] == seed
    analysis = json.loads((project / "report" / "analysis.json").read_text())
    assert analysis["design"]["n_pairs"] == 2
    assert analysis["design"]["seeds_per_pair"] == {pair: 2, reverse: 2}
    assert "index.html" in {p.name for p in (project / "report").iterdir()}
    assert json.loads((project / "reports" / "analysis.json").read_text())["n_pairs"] == 2
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], project).stdout)[""]["data"]
    assert "reports/analysis.json" in shown and not [k for k, v in shown.items() if "error" in v]
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert "train.seeds" in lock["train"]["params"]["params.yaml"]
    # MLflow: each stage process found the open parent run of this clone (nothing passed between
    # them); every training nests under it, and analyze ended it
    from mlflow import MlflowClient

    from culturegan.tracking.parent_run import WORKSPACE_TAG, workspace

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    (parent,) = [r for r in runs if r.data.tags.get("culturegan.role") == "pipeline"]
    assert parent.info.status == "FINISHED" and parent.data.tags[WORKSPACE_TAG] == workspace(project)
    trained = [r for r in runs if r.data.tags.get("culturegan.role") == "pair"]
    assert len(trained) == 2 and {r.data.tags["mlflow.parentRunId"] for r in trained} == {parent.info.run_id}
    assert not list(project.rglob("mlflow_parent_run_id.txt"))

    again = _run(["dvc", "repro"], project)
    assert "didn't change" in again.stdout and "Running stage" not in again.stdout

    # a further seed adds its own evaluate and register stages and reruns the train stage, where
    # the runs already finished only rewrite their outputs from their final checkpoints
    models = {seed: (project / "runs/gan/photo-inkwash" / f"seed{seed}" / "generator.pt").read_bytes() for seed in (0, 1)}
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["seeds"] = [0, 1, 2]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(_run(["dvc", "status", "--json"], project).stdout)
    assert {"train", "evaluate@photo-inkwash-2", "register@photo-inkwash-2"} <= set(status)
    _run(["dvc", "repro", "train"], project)
    trained = json.loads((project / "reports" / "train.json").read_text())
    assert [trained[f"photo-inkwash/seed{seed}"]["resumed_from"] for seed in (0, 1, 2)] == [4, 4, 0]
    for seed in (0, 1):
        assert (project / "runs/gan/photo-inkwash" / f"seed{seed}" / "generator.pt").read_bytes() == models[seed]


def test_dvc_repro_runs_end_to_end_on_a_folder_per_style_source(project: Path, tmp_path: Path):
    """Real data, not the renderer: prepare must write every declared output (preview included)."""
    from PIL import Image

    from culturegan.data.scene import make_scene
    from culturegan.data.synthetic import render

    source = tmp_path / "my_styles"
    for style in ("photo", "inkwash", "ukiyoe"):
        for split, scenes in (("train", range(12)), ("test", range(12, 16))):
            folder = source / style / split
            folder.mkdir(parents=True)
            for i in scenes:
                Image.fromarray(render(make_scene(500 + i), style, 48)).save(folder / f"{i}.jpg", quality=92)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["source"] = str(source)
    params["data"]["layout"] = "per_style"
    params["train"]["seeds"] = [0]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    _run(["dvc", "repro"], project)
    assert (project / "data" / "preview.png").is_file()
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert {"prepare", "validate", "train", "evaluate@photo-inkwash-0", "analyze"} <= set(lock)
    metrics = json.loads((project / "reports/eval/photo-inkwash/seed0/photo-inkwash/metrics.json").read_text())
    # no truth for real data: the damaged sources are its controls
    assert metrics["ground_truth"] is False and list(metrics["controls"]) == ["source_noise", "source_blur"]
    again = _run(["dvc", "repro"], project)
    assert "Running stage" not in again.stdout


def test_dvc_repro_stops_at_the_validation_gate_with_a_summary(project: Path):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["validation"]["min_train_per_style"] = 500
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = _run(["dvc", "repro"], project, check=False)
    assert proc.returncode != 0
    assert "train" in proc.stderr + proc.stdout and "500" in proc.stderr + proc.stdout
    assert (project / "reports" / "data_docs" / "index.html").is_file(), "Data Docs are written on failure too"


def test_dvc_push_and_pull_round_trip_through_local_and_s3_remotes(project: Path, s3_server: str):
    import boto3

    _run(["dvc", "repro", "validate"], project)  # the data stages: what a data version holds
    before = _tree_digest(project / "data")

    # the default remote: a local directory beside the project (see .dvc/config)
    _run(["dvc", "push"], project)
    assert any((project / "dvcstore").rglob("*")), "the default local remote received the data"

    boto3.client("s3").create_bucket(Bucket="dvc-bucket")
    _run(["dvc", "remote", "add", "s3", "s3://dvc-bucket/store"], project)
    _run(["dvc", "remote", "modify", "s3", "endpointurl", s3_server], project)
    _run(["dvc", "push", "-r", "s3"], project)
    listed = boto3.client("s3").list_objects_v2(Bucket="dvc-bucket", Prefix="store/")
    assert listed["KeyCount"] > 0

    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")
    _run(["dvc", "pull", "-r", "s3", "prepare"], project)
    assert _tree_digest(project / "data") == before
