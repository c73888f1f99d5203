"""Markdown tables and the quality-vs-steps plot of docs/quality.md from the sweeps' JSON lines.

    python scripts/quality_tables.py docs/quality/ablation.jsonl docs/quality/followup.jsonl \
        --plot docs/img/quality_curve.png --cpu-images-per-s 13.3
    python scripts/quality_tables.py docs/quality/cpu_curve.jsonl docs/quality/r1_curve.jsonl \
        --plot docs/img/quality_curve.png --labels cpu_default,r1curve --cpu-images-per-s 25 \
        --names "cpu_default=R1 0,r1curve=R1 0.01"      # the curve in quality.md now
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def _fmt(v: float | None, nd: int = 3) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def table(rows: list[dict], steps: int | None) -> str:
    head = ("| variant | direction | steps | GT SSIM | GT PSNR | best colour baseline SSIM / PSNR |"
            " edge-SSIM (truth) | HF ratio | KID gain (best baseline) |")
    lines = [head, "|" + "---|" * 9]
    for r in sorted(rows, key=lambda r: (r["label"], r["direction"], r["steps"])):
        if steps is not None and r["steps"] != steps:
            continue
        b_ssim, b_psnr, b_kid = r["best_baseline_gt_ssim"], r["best_baseline_gt_psnr"], r["best_baseline_kid_gain"]
        lines.append(
            f"| {r['label']} | {r['direction']} | {r['steps']} | {_fmt(r['gan_gt_ssim'])} | "
            f"{_fmt(r['gan_gt_psnr'], 2)} | {b_ssim[0]} {_fmt(b_ssim[1])} / {b_psnr[0]} {_fmt(b_psnr[1], 2)} | "
            f"{_fmt(r['gan_edge_ssim'])} ({_fmt(r['truth_edge_ssim'])}) | {_fmt(r['gan_hf_ratio'], 2)} | "
            f"{_fmt(r['gan_kid_gain'])} ({_fmt(b_kid[1])}) |"
        )
    return "\n".join(lines)


def plot(
    rows: list[dict], labels: list[str], path: Path, cpu_ips: float, batch: int, names: dict[str, str] | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    series = defaultdict(list)
    for r in rows:
        if r["label"] in labels:
            # a variant's longest budget may run as its own job ("<label>_960"): one curve
            series[(r["label"].removesuffix("_960"), r["direction"])].append(r)
    for (label, direction), rs in sorted(series.items()):
        rs.sort(key=lambda r: r["steps"])
        steps = [r["steps"] for r in rs]
        for ax, key in zip(axes, ("gan_gt_ssim", "gan_hf_ratio", "gan_kid_gain"), strict=True):
            name = (names or {}).get(label, label)
            ax.plot(steps, [r[key] for r in rs], marker="o", label=f"{name} {direction}")
    for ax, title in zip(axes, ("ground-truth SSIM", "high-frequency energy / target's", "KID gain (classifier)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"steps (batch {batch}; 240 steps = {240 * batch / cpu_ips:.0f} s per pair on 2 CPU cores)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].axhline(1.5, color="k", ls="--", lw=0.8)
    axes[0].legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--steps", type=int, default=None, help="only rows at this budget")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--labels", default="old,d_ukiyoe,d_ukiyoe_960")
    ap.add_argument("--cpu-images-per-s", type=float, default=13.3)
    ap.add_argument("--names", default="", help="legend names: label=name,label=name")
    args = ap.parse_args()
    rows = [json.loads(line) for f in args.files for line in f.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "error" not in r]
    print(table(rows, args.steps))
    if args.plot:
        names = dict(item.split("=", 1) for item in args.names.split(",") if item)
        plot(rows, args.labels.split(","), args.plot, args.cpu_images_per_s, 4, names)


if __name__ == "__main__":
    main()
