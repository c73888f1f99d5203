"""scripts/profile_step.py, the profile behind benchmarks.md's "Where the step goes": it must keep
running against the bench's training path (it broke once when that path's signature changed)."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("profile_step", REPO_ROOT / "scripts" / "profile_step.py")
profile_step = importlib.util.module_from_spec(spec)
spec.loader.exec_module(profile_step)


@pytest.mark.parametrize("extra", [[], ["--plain"], ["--side-by-side"]])
def test_profile_step_summarises_a_tiny_step_by_category(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    profile_step.main(["--size", "32", "--ngf", "4", "--blocks", "1", "--ndf", "4", "--batch", "1",
                       "--steps", "1", "--precision", "fp32", *extra])
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["plain"] == ("--plain" in extra)
    by_cat = out["by_category_ms"]
    assert by_cat["conv"] > 0 and by_cat["conv backward"] > 0
    assert out["self_cpu_ms_per_step"] == pytest.approx(sum(by_cat.values()), rel=0.01, abs=0.5)
    assert any(op["op"] == "aten::convolution_backward" for op in out["top_ops"])
