"""The GPU check (scripts/gpu_check.sh) as a CPU dry run, so that it still runs when a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from culturegan.gpucheck import RESULT_JSON, RESULT_MD, SECTIONS, parse_selection, run_gpu_check


def test_gpu_check_quick_cpu_dry_run_writes_every_section(tmp_path: Path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "not_this")}
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu", "--quick",
         "--out", str(out)],
        check=False, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / RESULT_JSON).read_text())
    for section in SECTIONS:
        assert result.get(section) is not None, section
    assert result["mode"] == "quick" and result["env"]["device"] == "cpu"

    rows = result["matrix"]
    measured = [r for r in rows if r.get("status", "ok") == "ok"]
    for batch in (1, 2):
        kinds = {(r["kind"], r["precision"], r["compile"], r["channels_last"])
                 for r in measured if r["batch"] == batch}
        assert {("plain", "fp32", False, False), ("tuned", "bf16", False, False),
                ("tuned", "bf16", False, True), ("tuned", "bf16", True, False),
                ("tuned", "bf16-full", False, False)} <= kinds
        fp16 = [r for r in rows if r["batch"] == batch and r["precision"] == "fp16"]
        assert fp16 and all(r["status"] == "skipped" for r in fp16)  # CUDA only, recorded
    assert all(r["images_per_s"] > 0 and r["peak_mem_mb"] > 0 for r in measured)

    t = result["targets"]
    assert set(t["per_batch"]) == {"1", "2"} and t["best_images_per_s"] > 0
    te = result["train_eval"]
    assert te["status"] == "ok", te
    assert te["steps"] == 2 and "gan" in te["methods"] and "kid_classifier" in te["gan_metrics"]
    assert {"gan", "identity", "reinhard"} <= set(te["by_method"])  # the GAN beside its baselines
    assert all("gt_ssim" in m and "gt_psnr" in m for m in te["by_method"].values())
    assert te["by_method"]["gan"]["gt_ssim"] == te["gan_metrics"]["gt_ssim"]
    loader = result["loader"]
    assert loader["status"] == "ok", loader
    assert loader["tuned"]["images_per_s"] > 0 and loader["data_images"]["a"] == 6
    layouts = result["layouts"]
    assert layouts["status"] == "ok", layouts
    ours = [r for r in layouts["rows"] if r["norm"] == "InstanceNorm"]
    assert len(ours) == 16 and all(r["ok"] for r in ours)  # the networks' norm: right in every layout
    assert {r["norm"] for r in layouts["rows"]} == {"InstanceNorm", "F.instance_norm"}
    md = (out / RESULT_MD).read_text()
    assert "| batch | path |" in md and "## train_eval" in md and "## layouts" in md
    assert not (tmp_path / "not_this").exists()  # --out wins over $OUT


def test_gpu_check_reruns_only_the_chosen_parts_and_batches(tmp_path: Path):
    # What a second, short device call uses after a first run's budget cut rows off.
    result = run_gpu_check(tmp_path, "cpu", quick=True, compile_=False, batches=[1], parts=("matrix",))
    assert result["parts"] == ["matrix"] and result["batches"] == [1]
    assert result["matrix"] and {r["batch"] for r in result["matrix"]} == {1}
    assert result["train_eval"] is None and result["loader"] is None
    assert set(result["targets"]["per_batch"]) == {"1"}
    assert json.loads((tmp_path / RESULT_JSON).read_text())["batches"] == [1]


def test_gpu_check_selection_errors_name_the_option():
    assert parse_selection("", "matrix,compile") == ([], ("matrix", "compile"))
    assert parse_selection("8, 1", "train_eval") == ([8, 1], ("train_eval",))
    with pytest.raises(ValueError, match="--batches"):
        parse_selection("one", "matrix")
    with pytest.raises(ValueError, match="--batches"):
        parse_selection("0", "matrix")
    with pytest.raises(ValueError, match="--parts.*loader"):
        parse_selection("1", "matrix,loader")
    with pytest.raises(ValueError, match="choose from"):
        run_gpu_check(None, "cpu", quick=True, parts=("everything",))
