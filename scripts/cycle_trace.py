"""How much of the source's sky does a CycleGAN's output carry back to the reverse generator?

    python scripts/cycle_trace.py runs/gan/photo-ukiyoe/seed0                # the default's pair
    python scripts/cycle_trace.py <run dir> --source photo --target ukiyoe --rows 20 --data data

For the test scenes x of the source style and their true renderings t in the target style (the
benchmark draws every scene in every style, so sorted test paths pair up), it compares F(G(x)) and
F(t) with x, over the whole image and over the top `rows` rows (the sky of a 64 px benchmark
scene). "Detail" is luminance minus its Gaussian blur (sigma 3 px): clouds and haze. The true
rendering has no clouds (ukiyoe and ink wash paint flat paper), so F(t) cannot recover x's detail;
whatever F(G(x)) recovers beyond that, G(x) carried in its own sky. docs/quality.md, "The sky
blotches carry the clouds", reads the numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from culturegan.evaluation import imageops
from culturegan.evaluation.evaluate import load_translator
from culturegan.evaluation.imageset import load_split


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images of the PSNR (dB) between uint8 batches (N, H, W, 3). The evaluation's
    ground_truth_metrics computes the same, but also SSIM, which refuses strips under 11 rows."""
    mse = ((a.astype(float) - b.astype(float)) ** 2).mean(axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))))


def detail(images: np.ndarray) -> np.ndarray:
    """Luminance (in [0, 1]) minus its blur (sigma 3 px), per image: (N, H, W)."""
    lum = imageops.luminance(images)
    return lum - ndimage.gaussian_filter(lum, (0, 3, 3))


def detail_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images of the correlation between the two batches' detail."""
    da, db = detail(a), detail(b)
    return float(np.nanmean([np.corrcoef(p.ravel(), q.ravel())[0, 1] for p, q in zip(da, db, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a CycleGAN run folder (generator.pt, generator_reverse.pt)")
    ap.add_argument("--data", type=Path, default=Path("data"), help="prepared benchmark data root")
    ap.add_argument("--source", default="photo")
    ap.add_argument("--target", default="ukiyoe")
    ap.add_argument("--rows", type=int, default=20, help="top rows taken as the sky")
    args = ap.parse_args()

    src, tgt = load_split(args.data, args.source, "test"), load_split(args.data, args.target, "test")
    if [Path(p).name for p in src.paths] != [Path(p).name for p in tgt.paths]:
        raise SystemExit(f"the test scenes of {args.source} and {args.target} do not pair up by file name")
    x, t = src.images, tgt.images
    g = load_translator(args.run / "generator.pt")
    f = load_translator(args.run / "generator_reverse.pt")
    gx = g(x)
    fgx, ft = f(gx), f(t)
    sky = slice(0, args.rows)
    print(f"{'':28s} {'whole':>8s} {'sky':>8s}")
    for name, a, b in (("PSNR(F(G(x)), x) dB", fgx, x), ("PSNR(F(truth), x) dB", ft, x), ("PSNR(G(x), truth) dB", gx, t)):
        print(f"{name:28s} {psnr(a, b):8.2f} {psnr(a[:, sky], b[:, sky]):8.2f}")
    for name, a in (("F(G(x))", fgx), ("F(truth)", ft), ("G(x)", gx), ("truth", t)):
        print(f"sky detail correlation with x, {name:9s} {detail_correlation(a[:, sky], x[:, sky]):6.3f}")


if __name__ == "__main__":
    main()
