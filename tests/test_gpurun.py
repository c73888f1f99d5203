"""The GPU run of a params profile (scripts/gpu_run.sh) as a CPU dry run, so it runs when a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

from culturegan.gpurun import (
    GRIDS,
    ROWS,
    SUMMARY_JSON,
    SUMMARY_MD,
    margins,
    summarize_round,
    texture_margin,
    to_markdown,
)

STYLES = {"photo": (60, 110, 190), "inkwash": (200, 195, 180), "ukiyoe": (200, 90, 60),
          "impressionist": (150, 170, 90)}


def toy_images(root: Path, per_style: int = 5) -> Path:
    """A folder per style of small pictures, each its own noise over the style's colour."""
    rng = np.random.default_rng(0)
    for style, colour in STYLES.items():
        (root / style).mkdir(parents=True)
        for i in range(per_style):
            base = np.array(colour, dtype=np.float64)[None, None, :]
            img = np.clip(base + rng.normal(0, 40, size=(64, 96, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / style / f"{style}{i}.png")
    return root


def test_gpu_run_quick_cpu_dry_run_trains_scores_and_skips_what_the_budget_cannot_fit(tmp_path: Path):
    images, out = toy_images(tmp_path / "images"), tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "not_this")}
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "gpu_run.sh"), "--device", "cpu", "--quick",
         "--images", str(images), "--out", str(out), "--steps", "2,1000000", "--budget-s", "3000",
         "--set", "train.pairs=[photo-inkwash, inkwash-photo]"],
        check=False, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / SUMMARY_JSON).read_text())
    assert result["env"]["device"] == "cpu" and result["classifier"]["test_accuracy"] is not None
    [done] = result["rounds"]  # a million steps cannot fit the rest of the budget: skipped, named
    assert done["steps"] == 2 and not done["errors"], done["errors"]
    assert set(done["margins"]) == {"photo-inkwash", "inkwash-photo"} and done["directions"] == 2
    assert all(len(m) == 2 for m in done["margins"].values())  # two classifier runs (the quick ensemble)
    assert len(done["wins_per_classifier_run"]) == 2
    assert set(done["texture_margins"]) == {"photo-inkwash", "inkwash-photo"}
    assert all(isinstance(m, float) for m in done["texture_margins"].values())
    assert len(result["skipped"]) == 1 and result["skipped"][0].startswith("1000000 steps")

    rows = [json.loads(line) for line in (out / ROWS).read_text().splitlines()]
    assert {r["direction"] for r in rows} == {"photo-inkwash", "inkwash-photo"}
    assert all(r["steps"] == 2 and r["gan_kid_margin_per_classifier_run"] for r in rows)
    with tarfile.open(out / GRIDS) as tar:
        assert sorted(tar.getnames()) == ["2/inkwash-photo.png", "2/photo-inkwash.png"]
    md = (out / SUMMARY_MD).read_text()
    assert "## 2 steps a direction" in md and "skipped: 1000000 steps" in md
    assert not (tmp_path / "not_this").exists()  # --out wins over $OUT
    assert sorted(p.name for p in images.rglob("*.png")) == sorted(
        f"{s}{i}.png" for s in STYLES for i in range(5))  # the source is never modified


def test_gpu_run_takes_data_and_a_classifier_prepared_beforehand(tmp_path: Path):
    """The real-art classifier trains on the CPU for minutes: prepared here, it need not spend the
    GPU lease. Given both, neither stage runs again and the run trains on that data."""
    from culturegan.data.prepare import prepare
    from culturegan.evaluation.classifier import CLASSIFIER_FILE
    from culturegan.gpurun import QUICK_SET, run_params, run_profile_on_gpu
    from culturegan.stages import classifier_stage

    profile = REPO_ROOT / "params" / "realart.yaml"
    images = toy_images(tmp_path / "images")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ROWS).write_text('{"direction": "from-an-earlier-run"}\n')
    params = run_params(profile, images, tmp_path / "pre", "cpu", QUICK_SET)
    prepare(params, tmp_path / "pre" / "data")
    clf = classifier_stage(params, tmp_path / "pre" / "data", tmp_path / "pre" / "clf")
    result = run_profile_on_gpu(
        profile, None, tmp_path / "out", device="cpu", steps=[1], quick=True,
        assignments=["train.pairs=[photo-ukiyoe]"], data_root=tmp_path / "pre" / "data",
        classifier_path=tmp_path / "pre" / "clf" / CLASSIFIER_FILE,
    )
    assert "prepare_s" not in result and "classifier_s" not in result
    assert result["classifier"]["test_accuracy"] == clf["test_accuracy"]
    [done] = result["rounds"]
    assert list(done["margins"]) == ["photo-ukiyoe"] and not done["errors"]
    assert "prepare given, classifier given" in (tmp_path / "out" / SUMMARY_MD).read_text()
    rows = [json.loads(line) for line in (tmp_path / "out" / ROWS).read_text().splitlines()]
    assert [r["direction"] for r in rows] == ["photo-ukiyoe"]  # this run's rows alone


def test_margins_and_wins_per_classifier_run():
    ensemble = {"direction": "a-b", "gan_kid_margin_per_classifier_run": [0.1, -0.2]}
    single = {"direction": "b-a", "gan_kid_gain": 0.5, "best_baseline_kid_gain": ["reinhard", 0.7]}
    assert margins(ensemble) == [0.1, -0.2]
    assert margins(single) == pytest.approx([-0.2])
    assert margins({"direction": "c-d"}) is None
    rnd = summarize_round(10, [ensemble, {**ensemble, "direction": "c-d"}, {"label": "x", "error": "E"}], 1.0)
    assert rnd["wins_per_classifier_run"] == [2, 0] and rnd["directions"] == 2
    assert rnd["errors"] == [{"label": "x", "error": "E"}]
    assert rnd["texture_margins"] == {"a-b": None, "c-d": None} and rnd["texture_wins"] == 0
    textured = {**single, "gan_kid_gain_texture": 0.3, "best_baseline_kid_gain_texture": ["histogram", 0.1]}
    assert texture_margin(textured) == pytest.approx(0.2) and texture_margin(single) is None
    rnd = summarize_round(10, [textured, {**textured, "direction": "c-d", "gan_kid_gain_texture": -0.5}], 1.0)
    assert rnd["texture_wins"] == 1
    md = to_markdown({"env": {}, "profile": "p", "images": None, "elapsed_s": 1, "budget_s": 2,
                      "rounds": [rnd]})
    assert "| b-a | -0.200 | +0.200 |" in md and "GAN wins in the texture space: 1" in md


def test_gpu_run_names_a_missing_images_folder(tmp_path: Path):
    from culturegan.gpurun import run_profile_on_gpu

    with pytest.raises(FileNotFoundError, match="nowhere"):
        run_profile_on_gpu(REPO_ROOT / "params" / "realart.yaml", tmp_path / "nowhere", tmp_path / "out",
                           device="cpu", quick=True)
