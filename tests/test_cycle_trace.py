"""scripts/cycle_trace.py: the measures behind quality.md's "The sky blotches carry the clouds"."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("cycle_trace", REPO_ROOT / "scripts" / "cycle_trace.py")
cycle_trace = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cycle_trace)


def test_detail_correlation_sees_shared_clouds_and_not_colour_or_independent_noise() -> None:
    rng = np.random.default_rng(0)
    clouds = rng.integers(40, 200, (4, 20, 64, 3)).astype(np.uint8)
    other = rng.integers(40, 200, (4, 20, 64, 3)).astype(np.uint8)
    tinted = np.clip(clouds.astype(int) + [30, -20, 10], 0, 255).astype(np.uint8)  # same clouds, other colour
    assert cycle_trace.detail_correlation(clouds, clouds) == pytest.approx(1.0)
    assert cycle_trace.detail_correlation(tinted, clouds) > 0.95
    assert abs(cycle_trace.detail_correlation(other, clouds)) < 0.1


def test_psnr_of_a_one_level_offset_is_48_db() -> None:
    a = np.full((2, 8, 8, 3), 100, np.uint8)
    assert cycle_trace.psnr(a + 1, a) == pytest.approx(20 * np.log10(255), abs=1e-9)
