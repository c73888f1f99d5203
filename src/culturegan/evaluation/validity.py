"""Metric validity (RESEARCH.md, trap 7): does each metric rank the true rendering above outputs
that must lose to it? A metric is trusted only where it does, in every directed pair, by a margin.

The evaluate stage scores the truth and its controls (`evaluate.control_outputs`) in metrics.json
under "controls"; this module turns them into one table row per metric.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

# Controls that must score worse than the truth on a metric of transfer QUALITY. Content metrics
# compare output with source, where the unchanged source scores 1 by construction: for them only
# the noise and blur controls are tests.
QUALITY_CONTROLS = ("truth_noise", "truth_blur", "colour_transfer", "source")
CONTENT_CONTROLS = ("truth_noise", "truth_blur")
CONTROL_LABELS = {
    "truth_noise": "truth + noise",
    "truth_blur": "truth blurred",
    "colour_transfer": "colour-only transfer",
    "source": "source unchanged",
}


def metric_validity(
    records: list[dict[str, Any]],
    measures: dict[str, dict[str, str]],
    measures_of: Callable[[dict[str, Any], str], dict[str, float | None]],
    content_measures: set[str],
    primary: str,
) -> dict[str, Any]:
    """One row per measure: for each control, the truth's mean margin over it (positive = truth
    better, in the measure's own direction) and the share of directed pairs where truth wins.

    A measure passes when the truth beats every applicable control in every directed pair (seeds
    averaged). `records` without controls (real data: no truth) give no rows.
    """
    per_pair: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for rec in records:
        controls = rec.get("controls") or {}
        if "truth" not in controls:
            continue
        view = {"methods": controls, "reference": rec.get("reference")}
        truth = measures_of(view, "truth")
        for control in QUALITY_CONTROLS:
            if control not in controls:
                continue
            other = measures_of(view, control)
            for name, info in measures.items():
                t, c = truth.get(name), other.get(name)
                if t is None or c is None:
                    continue
                margin = (t - c) if info["direction"] == "higher" else (c - t)
                per_pair[name][control][rec["pair"]].append(margin)
    rows = []
    for name, info in measures.items():
        if name not in per_pair:
            continue
        applicable = CONTENT_CONTROLS if name in content_measures else QUALITY_CONTROLS
        cells = {}
        for control in applicable:
            pairs = per_pair[name].get(control) or {}
            if not pairs:
                continue
            means = [float(np.mean(v)) for v in pairs.values()]
            cells[control] = {
                "mean_margin": float(np.mean(means)),
                "min_margin": float(np.min(means)),
                "wins": sum(m > 0 for m in means),
                "pairs": len(means),
            }
        rows.append(
            {
                "measure": name,
                "label": info["label"],
                "direction": info["direction"],
                "controls": cells,
                "passes": bool(cells) and all(c["wins"] == c["pairs"] for c in cells.values()),
                "primary": name == primary,
                "content": name in content_measures,
            }
        )
    primary_row = next((r for r in rows if r["primary"]), None)
    return {
        "rows": rows,
        "controls": CONTROL_LABELS,
        "primary_passes": None if primary_row is None else primary_row["passes"],
    }
