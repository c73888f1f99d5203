"""The names params.yaml may give to quality measures and metrics, and which way is better.

`analysis.primary_metric` names one of MEASURES, the GAN's headline measures; `registry.metric`
names a metric of the evaluate stage's metrics.json, whose direction `metric_direction` knows. The
analysis (culturegan.evaluation.measures) derives and labels them from this one table.
"""

from __future__ import annotations

import re

# name -> (label, higher|lower is better, group). Distribution metrics are matched by pattern below.
METRICS: dict[str, tuple[str, str | None, str]] = {
    "style_accuracy": ("deception rate", "higher", "style"),
    "target_probability": ("target-style probability", "higher", "style"),
    "content_ssim": ("content SSIM", "higher", "content"),
    "content_edge_ssim": ("content edge SSIM", "higher", "content"),
    "gt_ssim": ("SSIM to truth", "higher", "ground truth"),
    "gt_ssim_coarse": ("SSIM to truth at half scale", "higher", "ground truth"),
    "gt_psnr": ("PSNR to truth (dB)", "higher", "ground truth"),
    "gt_hist_hellinger": ("histogram distance to truth", "lower", "ground truth"),
    "seconds": ("seconds", "lower", "cost"),
}
DIST = re.compile(r"^(kid|fid)_([a-z0-9]+?)(_relative_gain)?$")

# The GAN's headline quality measures, derived per (pair, seed, method) from metrics.json.
MEASURES: dict[str, dict[str, str]] = {
    "kid_gain": {
        "label": "relative KID gain",
        "direction": "higher",
        "description": "1 - KID(G(A), B) / KID(A, B) in the classifier feature space: "
        "the share of the source-target gap closed (0 = doing nothing)",
    },
    "kid_gain_floor": {
        "label": "relative KID gain above the target floor",
        "direction": "higher",
        "description": "1 - (KID(G(A), B) - floor_B) / (KID(A, B) - floor_B), floor_B = KID between "
        "two halves of the real target set: corrects for how hard the target is to match",
    },
    "kid_gain_texture": {
        "label": "relative KID gain, texture space",
        "direction": "higher",
        "description": "1 - KID(G(A), B) / KID(A, B) in the training-free texture space (Gram "
        "statistics of fixed random filters on standardised luminance): strokes, outlines, flat "
        "areas and grain, blind to palette, brightness and contrast",
    },
    "deception": {
        "label": "deception rate",
        "direction": "higher",
        "description": "share of outputs the style classifier assigns to the target style",
    },
    "deception_vs_ceiling": {
        "label": "deception rate / ceiling",
        "direction": "higher",
        "description": "deception rate divided by the classifier's accuracy on real target images",
    },
    "content_edge_ssim": {
        "label": "content edge SSIM",
        "direction": "higher",
        "description": "SSIM between Sobel edge maps of source and output (scene kept)",
    },
    "gt_ssim": {
        "label": "SSIM to truth",
        "direction": "higher",
        "description": "SSIM to the true target rendering of the same scene",
    },
    "gt_ssim_coarse": {
        "label": "SSIM to truth at half scale",
        "direction": "higher",
        "description": "SSIM to the true target rendering at half resolution (2x2 averages): the "
        "scene's layout and colour areas above the brush-stroke scale",
    },
    "gt_psnr": {
        "label": "PSNR to truth (dB)",
        "direction": "higher",
        "description": "PSNR to the true target rendering of the same scene",
    },
    "gt_hist_hellinger": {
        "label": "histogram distance to truth",
        "direction": "lower",
        "description": "Hellinger distance between RGB histograms of output and true rendering",
    },
    "kid_raw": {
        "label": "KID (raw; circular)",
        "direction": "lower",
        "description": "KID(G(A), B) in the classifier space; grows with the source-target gap "
        "by construction (trap 1), shown only beside the relative gain",
    },
}
# What analysis.primary_metric may name: every measure but the raw KID, which is circular.
PRIMARY_CHOICES = tuple(name for name in MEASURES if name != "kid_raw")


def metric_direction(name: str) -> str | None:
    """'higher' or 'lower' for a metric key of metrics.json, None when it is not known."""
    m = DIST.match(name)
    if m:
        return "higher" if m.group(3) else "lower"
    return METRICS.get(name, (name, None, ""))[1]
