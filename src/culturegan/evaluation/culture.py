"""Cultural distance between styles from real held-out (TEST) images, seen from several views.

Each view is a symmetric matrix with a zero diagonal; each is divided by its mean off-diagonal
entry so that views in different units can be averaged into the combined distance. Compute it
before any GAN training and keep it fixed (RESEARCH.md, trap 5).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, signal

from culturegan.config import CultureConfig, Params
from culturegan.evaluation import imageops
from culturegan.evaluation.classifier import load_classifier
from culturegan.evaluation.imageset import load_split, manifest_styles
from culturegan.evaluation.metrics import fid
from culturegan.fileio import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

VIEWS = ("classifier_frechet", "colour", "palette", "texture", "edge_density", "blank_space")
CULTURE_JSON = "culture.json"
CULTURE_PNG = "culture.png"


def _gabor_bank() -> list[np.ndarray]:
    """Complex Gabor kernels: 2 frequencies x 4 orientations, zero-mean real part, one-octave bandwidth."""
    kernels = []
    for freq in (0.25, 0.125):  # cycles per pixel: fine grain / strokes, and coarser marks
        sigma = 0.56 / freq
        r = int(np.ceil(3 * sigma))
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
        for theta in np.arange(4) * np.pi / 4:
            xr = xx * np.cos(theta) + yy * np.sin(theta)
            envelope = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
            k = envelope * np.exp(2j * np.pi * freq * xr)
            k.real -= envelope * k.real.sum() / envelope.sum()  # a flat area must give no response
            kernels.append(k / np.abs(k).sum())
    return kernels


def texture_features(images: np.ndarray) -> np.ndarray:
    """Per-image filter-bank statistics, (N, 18): mean and std of 8 Gabor energies, and of Sobel energy.

    A fixed bank, no learnt weights: orientation and scale of marks (strokes, hatching, grain).
    """
    gray = imageops.luminance(images)
    gray = gray - gray.mean(axis=(1, 2), keepdims=True)
    feats = []
    for k in _gabor_bank():
        mag = np.abs(signal.fftconvolve(gray, k[None], mode="same", axes=(1, 2)))
        feats += [mag.mean(axis=(1, 2)), mag.std(axis=(1, 2))]
    sob = imageops.sobel_magnitude(gray)
    feats += [sob.mean(axis=(1, 2)), sob.std(axis=(1, 2))]
    return np.stack(feats, axis=1)


def colour_moments(images: np.ndarray) -> np.ndarray:
    """Per-image Lab means and standard deviations, (N, 6), in Lab units."""
    lab = imageops.rgb_to_lab(images)
    return np.concatenate([lab.mean(axis=(1, 2)), lab.std(axis=(1, 2))], axis=1)


def edge_density(images: np.ndarray, threshold: float) -> np.ndarray:
    """Per-image share of pixels whose luminance gradient (Sobel, unit step = 1) exceeds `threshold`."""
    return (imageops.sobel_magnitude(imageops.luminance(images)) > threshold).mean(axis=(1, 2))


def blank_space(images: np.ndarray, detail_std: float, tone_margin: float) -> np.ndarray:
    """Per-image share of 'empty paper': pixels without local detail and near the paper tone.

    The paper tone is the image's 90th luminance percentile (paper is the lightest large area in
    ink wash; in other styles this finds sky or highlights, which are rarely flat and wide).
    """
    gray = imageops.luminance(images)
    mean = ndimage.uniform_filter(gray, size=(1, 5, 5), mode="reflect")
    var = ndimage.uniform_filter(gray * gray, size=(1, 5, 5), mode="reflect") - mean**2
    flat = np.sqrt(np.clip(var, 0.0, None)) < detail_std
    paper = np.percentile(gray.reshape(len(gray), -1), 90, axis=1)[:, None, None]
    return (flat & (gray >= paper - tone_margin)).mean(axis=(1, 2))


def _pairwise(vectors: list[np.ndarray]) -> np.ndarray:
    v = np.stack(vectors)
    return np.sqrt(((v[:, None, :] - v[None, :, :]) ** 2).sum(-1))


def _symmetric(m: np.ndarray) -> np.ndarray:
    m = (np.asarray(m, dtype=np.float64) + np.asarray(m, dtype=np.float64).T) / 2.0
    np.fill_diagonal(m, 0.0)
    return np.clip(m, 0.0, None)  # FID rounding can dip a hair below zero for near-identical sets


def culture_views(
    images: dict[str, np.ndarray], cfg: CultureConfig, feature_fn: Any | None = None
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    """Every view's distance matrix (styles in the order of `images`) and the per-style scalars."""
    styles = list(images)
    n = len(styles)
    views: dict[str, np.ndarray] = {}
    if feature_fn is not None:
        feats = {s: feature_fn(images[s]) for s in styles}
        m = np.zeros((n, n))
        for i in range(n):
            for j in range(i + 1, n):
                m[i, j] = m[j, i] = fid(feats[styles[i]], feats[styles[j]])
        views["classifier_frechet"] = m
    views["colour"] = _pairwise([colour_moments(images[s]).mean(0) for s in styles])
    hists = [imageops.rgb_histograms(images[s], cfg.palette_bins).mean(0) for s in styles]
    views["palette"] = np.array([[float(imageops.hellinger(p, q)) for q in hists] for p in hists])
    tex = {s: texture_features(images[s]) for s in styles}
    scale = np.concatenate(list(tex.values())).std(axis=0)
    views["texture"] = _pairwise([tex[s].mean(0) / np.maximum(scale, 1e-12) for s in styles])
    scalars = {
        "edge_density": {
            s: float(edge_density(images[s], cfg.edge_threshold).mean()) for s in styles
        },
        "blank_space": {
            s: float(blank_space(images[s], cfg.blank_detail_std, cfg.blank_tone_margin).mean())
            for s in styles
        },
    }
    for name, values in scalars.items():
        v = np.array([values[s] for s in styles])
        views[name] = np.abs(v[:, None] - v[None, :])
    return {k: _symmetric(m) for k, m in views.items()}, scalars


def combine(views: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, float]]:
    """Mean of the views, each divided by its mean off-diagonal entry; views that are all zero are left out."""
    n = len(next(iter(views.values())))
    off = ~np.eye(n, dtype=bool)
    scales = {name: float(m[off].mean()) for name, m in views.items()}
    used = [m / scales[name] for name, m in views.items() if scales[name] > 0]
    if not used:
        return np.zeros((n, n)), scales
    return np.mean(used, axis=0), scales


def culture_distance(
    params: Params, data_root: Path, classifier_path: Path | None
) -> dict[str, Any]:
    """Distance matrices between every style with TEST images, one per view plus the combined mean.

    Returns {styles, n_images, views: {name: {styles, matrix, scale}}, combined: {styles, matrix,
    views}, scalars: {edge_density|blank_space: {style: value}}}. Without a classifier the
    classifier-feature view is left out.
    """
    data_root = Path(data_root)
    styles = manifest_styles(data_root, "test")
    images = {s: load_split(data_root, s, "test").images for s in styles}
    feature_fn = None
    if classifier_path is not None:
        features = load_classifier(Path(classifier_path), params.evaluation.batch_size).features
        tile = params.evaluation.tile_size
        # The classifier learnt (and evaluation scores) tiles when tile_size is set: same scale here.
        feature_fn = lambda x: features(imageops.tiles(x, tile))
    matrices, scalars = culture_views(images, params.evaluation.culture, feature_fn)
    combined, scales = combine(matrices)
    return {
        "split": "test",
        "styles": styles,
        "n_images": {s: len(images[s]) for s in styles},
        "views": {
            name: {"styles": styles, "matrix": m.tolist(), "scale": scales[name]}
            for name, m in matrices.items()
        },
        "combined": {
            "styles": styles,
            "matrix": combined.tolist(),
            "views": [name for name in matrices if scales[name] > 0],
            "normalisation": "each view divided by its mean off-diagonal entry, then averaged",
        },
        "scalars": scalars,
    }


def plot_heatmaps(result: dict[str, Any], out_png: Path) -> Path:
    """One annotated heatmap per view and one for the combined distance, in one PNG (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(name, v["matrix"]) for name, v in result["views"].items()]
    panels.append(("combined", result["combined"]["matrix"]))
    styles = result["styles"]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(3.4 * cols, 3.2 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for k, (name, matrix) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        m = np.asarray(matrix)
        ax.imshow(m, cmap="viridis")
        ax.set_title(name.replace("_", " "), fontsize=10)
        ax.set_xticks(range(len(styles)), styles, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(styles)), styles, fontsize=8)
        top = m.max() if m.size else 0.0
        for i in range(len(styles)):
            for j in range(len(styles)):
                colour = "black" if top and m[i, j] > 0.6 * top else "white"
                ax.text(j, i, f"{m[i, j]:.3g}", ha="center", va="center", fontsize=7, color=colour)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    return out_png


def write_culture(
    params: Params, data_root: Path, classifier_path: Path | None, out_dir: Path
) -> dict[str, Any]:
    """Write `out_dir/culture.json` and `out_dir/culture.png`; returns the paths and the style list."""
    result = culture_distance(params, data_root, classifier_path)
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / CULTURE_JSON, json.dumps(result, indent=2) + "\n")
    plot_heatmaps(result, out_dir / CULTURE_PNG)
    return {
        "styles": result["styles"],
        "json": str(out_dir / CULTURE_JSON),
        "png": str(out_dir / CULTURE_PNG),
    }
