"""Markdown tables of docs/study.md from a finished study run's report/analysis.json.

    python scripts/study_tables.py report/analysis.json > tables.md

Everything printed is read from the analysis (the same numbers as report/index.html), except the
per-direction bootstrap intervals over seeds, which are computed here from the seed values it holds.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np

from culturegan.evaluation.stats import spearman

MEASURES = ("kid_gain", "gt_ssim", "gt_psnr", "content_edge_ssim", "deception")


def _ci(values: list[float], level: float = 0.95, samples: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds (crude with 3 seeds; stated so)."""
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (samples, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _seed_reproducibility(a: dict) -> None:
    """How alike the training seeds rank the directed pairs (Spearman between every two seeds'
    per-direction values of the GAN) and how far a direction's value moves between seeds."""
    print("\n### Reproducibility over training seeds (the GAN, per directed pair)\n")
    seeds = sorted({tuple(p["seeds"]) for p in a["pairs"]})
    if len(seeds) != 1:
        print(f"Not comparable: the directed pairs have different training seeds {[list(s) for s in seeds]}.")
        return
    if len(seeds[0]) < 2:
        print(f"One training seed ({seeds[0][0]}): nothing to compare.")
        return
    seeds = list(seeds[0])
    print("| measure | directions | Spearman between seeds (" + ", ".join(f"{i} vs {j}" for i, j in itertools.combinations(seeds, 2)) + ") | median (max) seed SD of a direction |")
    print("|---|---|---|---|")
    for m in MEASURES:
        rows = [s["values"] for p in a["pairs"] if (s := (p["measures"].get("gan") or {}).get(m)) and s["n"] == len(seeds)]
        if len(rows) < 3:
            continue
        v = np.asarray(rows)
        rhos = [spearman(v[:, i], v[:, j]) for i, j in itertools.combinations(range(len(seeds)), 2)]
        sd = v.std(axis=1, ddof=1)
        cells = ", ".join("–" if r is None else f"{r:.2f}" for r in rhos)
        print(f"| {a['measures'][m]['label']} | {len(rows)} | {cells} | {np.median(sd):.3f} ({sd.max():.3f}) |")


def main() -> None:
    a = json.loads(Path(sys.argv[1]).read_text())
    culture = a["culture"]["combined"]
    styles = culture["styles"]
    print("### Cultural distance (combined view, test images, fixed before training)\n")
    print("| | " + " | ".join(styles) + " |")
    print("|---" * (len(styles) + 1) + "|")
    for s, row in zip(styles, culture["matrix"], strict=True):
        print(f"| **{s}** | " + " | ".join(f"{x:.2f}" for x in row) + " |")

    print("\n### Per direction: GAN quality over seeds (mean, 95 % bootstrap CI over seeds)\n")
    print("| direction | distance | seeds | KID gain | GT SSIM | GT PSNR | edge-SSIM | deception | GAN − best baseline, KID gain |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in sorted(a["pairs"], key=lambda p: p["distance"].get("combined") or 0):
        gan = p["measures"].get("gan") or {}
        cells = []
        for m in MEASURES:
            s = gan.get(m)
            if not s:
                cells.append("–")
                continue
            lo, hi = _ci(s["values"])
            cells.append(f"{s['mean']:.3f} [{lo:.3f}, {hi:.3f}]")
        margin = (p.get("margin") or {}).get("kid_gain") or {}
        mtxt = f"{margin['value']:+.3f} vs {margin['best_baseline']}" if margin.get("value") is not None else "–"
        print(f"| {p['pair']} | {p['distance'].get('combined', float('nan')):.2f} | {len(p['seeds'])} | " + " | ".join(cells) + f" | {mtxt} |")

    print("\n### Quality against cultural distance\n")
    print("| measure | view | pairs | Spearman ρ | 95 % CI | permutation p | smallest p |")
    print("|---|---|---|---|---|---|---|")
    for r in a["correlations"]:
        if r["view"] != "combined" or r.get("rho") is None:
            continue
        perm, ci = r["permutation"], r["bootstrap"]["ci"]
        star = " (primary)" if r.get("primary") else ""
        print(
            f"| {a['measures'][r['measure']]['label']}{star} | {r['view']} | {r['n_pairs']} | {r['rho']:.2f} | "
            f"[{ci[0]:.2f}, {ci[1]:.2f}] | {perm['p']:.4f} ({perm['p_fraction']}) | {perm['p_min']:.4f} ({perm['p_min_fraction']}) |"
        )

    v = a.get("metric_validity") or {}
    if v.get("rows"):
        labels = v["controls"]
        print("\n### Metric validity (truth's mean margin over each control; pairs where the truth wins)\n")
        print("| metric | " + " | ".join(f"vs {x}" for x in labels.values()) + " | passes |")
        print("|---" * (len(labels) + 2) + "|")
        for r in v["rows"]:
            cells = []
            for c in labels:
                x = r["controls"].get(c)
                cells.append("–" if x is None else f"{x['mean_margin']:.3f} ({x['wins']}/{x['pairs']})")
            star = " (primary)" if r["primary"] else ""
            print(f"| {r['label']}{star} | " + " | ".join(cells) + f" | {'yes' if r['passes'] else 'NO'} |")

    _seed_reproducibility(a)

    print("\n### Summary sentence of the analysis\n")
    print(a["summary"]["sentence"])
    for f in a["summary"]["findings"]:
        print(f"- {f}")


if __name__ == "__main__":
    main()
