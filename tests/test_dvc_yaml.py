"""dvc.yaml's declarations against what the stages write: metrics and plots files, artifacts
(fast: parses dvc.yaml; one test runs `dvc metrics show` / `dvc plots show` / `dvc exp show` on
a copy with stand-in files)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT

from culturegan.config import load_params
from culturegan.evaluation import analysis
from culturegan.evaluation.classifier import CLASSIFIER_FILE
from culturegan.stages import (
    CLASSIFIER_DIR,
    REPORT_DIR,
    RUNS_ROOT,
    evaluation_summary,
    train_summary,
)

DVC = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
PARAMS = load_params(REPO_ROOT / "params.yaml")


def _entries(stage: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for entry in stage.get(section, []):
        path, flags = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
        out[path] = flags
    return out


def _summary_path(stage: dict[str, Any]) -> str | None:
    found = re.search(r"--summary (\S+)", " ".join(stage["cmd"].split()))
    return found.group(1) if found else None


@pytest.mark.parametrize("name", ["prepare", "train", "evaluate", "analyze"])
def test_each_stage_declares_the_summary_its_command_writes_as_an_uncached_metrics_file(name: str):
    stage = DVC["stages"][name]
    path = _summary_path(stage)
    assert path is not None, f"{name} writes no --summary"
    assert _entries(stage, "metrics") == {path: {"cache": False}}


def test_no_metrics_file_lies_inside_an_output_folder_which_dvc_would_refuse_as_overlapping():
    outs = [p for stage in DVC["stages"].values() for p in _entries(stage, "outs")]
    for stage in DVC["stages"].values():
        for metric in _entries(stage, "metrics"):
            assert not any(metric.startswith(o.rstrip("/") + "/") for o in outs), metric


def test_top_level_plots_are_the_figures_the_analysis_always_writes():
    written = {str(REPORT_DIR / f) for f in (analysis.SCATTER_PNG, analysis.METHODS_PNG, analysis.CULTURE_PNG)}
    assert set(DVC["plots"]) == written
    assert str(REPORT_DIR) in _entries(DVC["stages"]["analyze"], "outs")


def test_artifacts_are_the_classifier_and_every_generator_of_params_yaml():
    expected = {"style-classifier": str(CLASSIFIER_DIR / CLASSIFIER_FILE)}
    assert PARAMS.train.objective == "cyclegan"  # else no reverse generators: update the artifacts
    for pair in PARAMS.train.pairs:
        for seed in PARAMS.train.seeds:
            folder = RUNS_ROOT / str(pair) / f"seed{seed}"
            expected[f"{pair}-seed{seed}"] = str(folder / "generator.pt")
            expected[f"{pair.reversed()}-seed{seed}"] = str(folder / "generator_reverse.pt")
    artifacts = DVC["artifacts"]
    assert {name: a["path"] for name, a in artifacts.items()} == expected
    assert all(a["type"] == "model" and a["desc"] for a in artifacts.values())
    # each lies in an output of the stage that writes it
    assert str(CLASSIFIER_DIR / CLASSIFIER_FILE) in _entries(DVC["stages"]["classifier"], "outs")
    assert "runs/${item.pair}/seed${item.seed}" in _entries(DVC["stages"]["train"], "outs")


def test_summaries_are_the_train_metrics_and_each_directions_metrics_json(tmp_path: Path):
    (tmp_path / "train_metrics.json").write_text(json.dumps({"final_losses": {"g_ab": 0.5}, "steps": 4}))
    assert train_summary({"metrics": tmp_path / "train_metrics.json"}) == {"final_losses": {"g_ab": 0.5}, "steps": 4}
    for d, kid in (("a-b", 0.1), ("b-a", 0.2)):
        (tmp_path / d).mkdir()
        (tmp_path / d / "metrics.json").write_text(json.dumps({"methods": {"gan": {"kid": kid}}}))
    result = {d: {"metrics": str(tmp_path / d / "metrics.json"), "grid": "x"} for d in ("a-b", "b-a")}
    assert evaluation_summary(result) == {
        "a-b": {"methods": {"gan": {"kid": 0.1}}}, "b-a": {"methods": {"gan": {"kid": 0.2}}},
    }


def _dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_dvc_metrics_plots_and_exp_show_read_every_declared_file(tmp_path: Path):
    """On a copy of dvc.yaml + params.yaml with a stand-in for each declared file, no stage run."""
    from PIL import Image

    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO_ROOT / name, proj / name)
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    assert _dvc(["init", "-q"], proj).returncode == 0
    metrics = [
        "reports/prepare.json", "reports/validation.json", "runs/style_classifier/classifier.json",
        "reports/analysis.json",
    ] + [
        f"reports/{kind}/{pair}/seed{seed}.json"
        for kind in ("train", "evaluate") for pair in PARAMS.train.pairs for seed in PARAMS.train.seeds
    ]
    for i, rel in enumerate(metrics):
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text(json.dumps({"value": i, "nested": {"x": 0.5}}))
    for rel in DVC["plots"]:
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(proj / rel)

    shown = _dvc(["metrics", "show", "--json"], proj)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)[""]["data"]
    assert set(data) == set(metrics)
    assert all("error" not in v for v in data.values()), data
    plots = _dvc(["plots", "show", "--json"], proj)
    assert plots.returncode == 0 and "errors" not in json.loads(plots.stdout), plots.stdout + plots.stderr
    assert set(json.loads(plots.stdout)["data"]) == set(DVC["plots"])

    subprocess.run(["git", "add", "-A"], cwd=proj, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], cwd=proj, check=True
    )
    exp = _dvc(["exp", "show", "--json"], proj)
    assert exp.returncode == 0, exp.stderr
    assert "reports/analysis.json" in exp.stdout
