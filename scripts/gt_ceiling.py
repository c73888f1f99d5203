"""What the ground-truth metrics can reward in each benchmark style: docs/quality.md's ceiling table.

    python scripts/gt_ceiling.py [--scenes 40] [--size 64] > ceiling.md

For every target style it scores, against the true rendering of each scene: the same scene
re-drawn by the style's own renderer with another random draw (a perfect painter who knows the
scene but not the stroke draw), the colour baselines applied to the photo of the scene (their
references: other scenes of the style), the photo itself, and the true rendering of another
scene. A ground-truth metric can only tell transfers apart in a style where the re-drawn truth
scores well above the colour baselines.
"""

from __future__ import annotations

import argparse
import zlib

import numpy as np

from culturegan.data.scene import make_scene
from culturegan.data.synthetic import render, renderers
from culturegan.evaluation import baselines, metrics

STYLES = ("photo", "inkwash", "ukiyoe", "impressionist")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    seeds = range(10_000, 10_000 + args.scenes)  # not the benchmark's own scene seeds
    ref_seeds = range(20_000, 20_000 + 60)

    def style_of(style: str, scene_seeds: range) -> np.ndarray:
        return np.stack([render(make_scene(s), style, args.size) for s in scene_seeds])

    photo = style_of("photo", seeds)
    print("| target style | method | GT SSIM | GT SSIM, half scale | GT PSNR |")
    print("|---|---|---|---|---|")
    for style in STYLES:
        truth = style_of(style, seeds)
        refs = style_of(style, ref_seeds)
        draw = renderers()[style]
        redrawn = np.stack(
            [
                draw(make_scene(s), args.size, np.random.default_rng([s, zlib.crc32(b"redraw")]))
                for s in seeds
            ]
        )
        rows = {"re-drawn truth": redrawn}
        if style != "photo":
            rows |= {
                "Reinhard": baselines.reinhard(photo, refs),
                "histogram matching": baselines.histogram_matching(photo, refs),
                "photo unchanged": photo,
            }
        rows["another scene's truth"] = np.roll(truth, 1, axis=0)
        for name, images in rows.items():
            m = metrics.ground_truth_metrics(images, truth)
            print(
                f"| {style} | {name} | {m['gt_ssim']:.3f} | {m['gt_ssim_coarse']:.3f} | {m['gt_psnr']:.2f} |"
            )


if __name__ == "__main__":
    main()
