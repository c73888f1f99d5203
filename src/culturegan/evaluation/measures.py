"""The analysis's vocabulary: the GAN's headline measures (MEASURES), per-metric labels and
directions (metric_info), and how each measure is derived from one evaluate-stage metrics.json.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from culturegan.config.measures import DIST as _DIST
from culturegan.config.measures import MEASURES, metric_direction
from culturegan.config.measures import METRICS as _METRICS

GAN = "gan"
COMBINED = "combined"

SPACE_LABELS = {
    "classifier": "classifier feature space (trained in this pipeline)",
    "inception": "Inception-v3 (local weights)",
    "texture": "texture space (random filters, no training; blind to colour)",
}

_HIDDEN = re.compile(r"(_std$|^n_images$)")
_GROUP_ORDER = ["distribution", "style", "content", "ground truth", "cost", "other"]

# Identity scores content SSIM 1 by construction: a margin against it says nothing.
CONTENT_MEASURES = {"content_edge_ssim"}
# Shown in the per-method bar chart (the circular raw KID and the ratios are left to the tables).
BAR_MEASURES = (
    "kid_gain",
    "kid_gain_texture",
    "deception",
    "content_edge_ssim",
    "gt_ssim",
    "gt_ssim_coarse",
    "gt_psnr",
    "gt_hist_hellinger",
)


def space_label(space: str) -> str:
    return SPACE_LABELS.get(space, f"{space} feature space")


def metric_info(name: str) -> dict[str, Any]:
    """Label, direction ('higher'/'lower'/None), feature space and table group of a metric key."""
    m = _DIST.match(name)
    if m:
        kind, space, gain = m.groups()
        label = "relative KID gain" if gain else kind.upper()
        return {
            "label": label,
            "direction": metric_direction(name),
            "space": space,
            "space_label": space_label(space),
            "group": "distribution",
        }
    label, _, group = _METRICS.get(name, (name.replace("_", " "), None, "other"))
    return {
        "label": label,
        "direction": metric_direction(name),
        "space": None,
        "space_label": None,
        "group": group,
    }


def ordered_columns(metric_names: Iterable[str]) -> list[str]:
    """Table columns: grouped (distribution first), per feature space KID, FID, then the gain."""
    names = [n for n in dict.fromkeys(metric_names) if not _HIDDEN.search(n)]

    def key(name: str) -> tuple[int, str, int]:
        info = metric_info(name)
        m = _DIST.match(name)
        # KID, FID, then the relative gain within each feature space; other groups keep file order.
        within = (0 if m.group(1) == "kid" else 1) + (2 if m.group(3) else 0) if m else 0
        return (_GROUP_ORDER.index(info["group"]), info["space"] or "", within)

    return sorted(names, key=key)


def finite(value: Any) -> float | None:
    """`value` as a float if it is a finite real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def measures_of(record: dict[str, Any], method: str) -> dict[str, float | None]:
    """The headline measures (MEASURES) of one method in one metrics.json; None where undefined.

    `record["methods"]` may also be the "controls" block (metric validity)."""
    m = record["methods"][method]
    ref = record.get("reference") or {}
    real, gap = ref.get("target_real") or {}, ref.get("source_vs_target") or {}
    kid, src_kid = finite(m.get("kid_classifier")), finite(gap.get("kid_classifier"))
    floor, ceiling = finite(real.get("kid_classifier_floor")), finite(real.get("style_accuracy"))
    deception = finite(m.get("style_accuracy"))
    gain = finite(m.get("kid_classifier_relative_gain"))
    if gain is None and kid is not None and src_kid is not None and src_kid > 0:
        gain = 1.0 - kid / src_kid
    texture_gain = finite(m.get("kid_texture_relative_gain"))
    out: dict[str, float | None] = {
        "kid_gain": gain,
        "kid_gain_texture": texture_gain,
        "kid_gain_floor": None,
        "deception": deception,
        "deception_vs_ceiling": None,
        "kid_raw": kid,
    }
    if kid is not None and src_kid is not None and floor is not None and src_kid - floor > 0:
        out["kid_gain_floor"] = 1.0 - (kid - floor) / (src_kid - floor)
    if deception is not None and ceiling is not None and ceiling > 0:
        out["deception_vs_ceiling"] = deception / ceiling
    for key in ("content_edge_ssim", "gt_ssim", "gt_ssim_coarse", "gt_psnr", "gt_hist_hellinger"):
        out[key] = finite(m.get(key))
    return {k: out[k] for k in MEASURES}
