"""scripts/study_tables.py, which prints docs/study.md's tables from a study run's analysis.json."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "study_tables.py"


def _tables(analysis: dict, tmp_path: Path) -> str:
    path = tmp_path / "analysis.json"
    path.write_text(json.dumps(analysis))
    out = subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, check=True)
    return out.stdout


def _pair(i: int, seeds: list[int], kid: list[float], ssim: list[float]) -> dict:
    def s(values: list[float]) -> dict:
        return {"mean": float(np.mean(values)), "n": len(values), "values": values}

    return {
        "pair": f"p{i}",
        "seeds": seeds,
        "distance": {"combined": 0.1 * i},
        "measures": {"gan": {"kid_gain": s(kid), "gt_ssim": s(ssim)}},
    }


def _analysis(pairs: list[dict]) -> dict:
    """A minimal analysis.json: the fields the script reads."""
    return {
        "culture": {"combined": {"styles": ["a", "b"], "matrix": [[0, 1], [1, 0]]}},
        "pairs": pairs,
        "correlations": [],
        "measures": {"kid_gain": {"label": "relative KID gain"}, "gt_ssim": {"label": "SSIM to truth"}},
        "summary": {"sentence": "S.", "findings": []},
    }


def test_seed_reproducibility_is_the_rank_agreement_of_every_two_seeds_and_the_seed_spread(tmp_path: Path):
    # seeds 0 and 1 rank the four pairs alike on KID gain, seed 2 in reverse; SSIM alike in all
    pairs = [_pair(i, [0, 1, 2], [0.1 * i, 0.1 * i + 0.05, 0.5 - 0.1 * i], [0.2 + 0.1 * i] * 3) for i in range(4)]
    out = _tables(_analysis(pairs), tmp_path)
    section = out.split("### Reproducibility over training seeds")[1].split("###")[0]
    assert "| Spearman between seeds (0 vs 1, 0 vs 2, 1 vs 2) |" in section
    assert "| relative KID gain | 4 | 1.00, -1.00, -1.00 |" in section
    sds = [np.std([0.1 * i, 0.1 * i + 0.05, 0.5 - 0.1 * i], ddof=1) for i in range(4)]
    assert f"| {np.median(sds):.3f} ({max(sds):.3f}) |" in section
    # SSIM does not move between seeds: every seed ranks the pairs alike, with no spread
    assert "| SSIM to truth | 4 | 1.00, 1.00, 1.00 | 0.000 (0.000) |" in section


def test_seed_reproducibility_needs_the_same_seeds_in_every_pair(tmp_path: Path):
    one = [_pair(i, [0], [0.1 * i], [0.2]) for i in range(4)]
    assert "One training seed (0): nothing to compare." in _tables(_analysis(one), tmp_path)
    mixed = copy.deepcopy(one) + [_pair(9, [0, 1], [0.1, 0.2], [0.2, 0.3])]
    assert "different training seeds [[0], [0, 1]]" in _tables(_analysis(mixed), tmp_path)
