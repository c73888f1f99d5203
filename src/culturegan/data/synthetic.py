"""The embedded procedural benchmark: random landscapes, each rendered in every cultural style.

Because every scene exists in every style, a transfer A->B can be scored against the true B image.
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from culturegan.config import Params
from culturegan.cpus import usable_cpus
from culturegan.data.manifest import (
    ManifestRow,
    intensity_std,
    manifest_frame,
    phash,
    write_manifest,
    write_rejects,
)
from culturegan.data.scene import Scene, make_scene
from culturegan.data.styles import dotpainting, goldground, impressionist, inkwash, photo, ukiyoe
from culturegan.errors import ConfigError
from culturegan.fileio import atomic_path, atomic_write_bytes
from culturegan.imagegrid import preview_grid

log = logging.getLogger(__name__)

_SPLIT_SALT = 0xDA7A

Renderer = Callable[[Scene, int, np.random.Generator], np.ndarray]
STYLE_RENDERERS: dict[str, Renderer] = {
    "photo": photo.render,
    "inkwash": inkwash.render,
    "ukiyoe": ukiyoe.render,
    "impressionist": impressionist.render,
    "goldground": goldground.render,
    "dotpainting": dotpainting.render,
}


def renderers() -> dict[str, Renderer]:
    """Every style's renderer by style name: one module each in culturegan.data.styles."""
    return dict(STYLE_RENDERERS)


def render(scene: Scene, style: str, size: int) -> np.ndarray:
    """The scene in one style as (size, size, 3) uint8; same scene and style, same bytes."""
    available = renderers()
    renderer = available.get(style)
    if renderer is None:
        raise ConfigError(
            f"unknown synthetic style {style!r}",
            hint=f"set data.synthetic.styles in params.yaml to some of {sorted(available)}",
        )
    if size < 8:
        raise ConfigError(
            f"image size {size} is too small to draw a scene", hint="set data.image_size >= 16"
        )
    # Per-image randomness (noise, stroke jitter) depends on the scene and the style only.
    rng = np.random.default_rng(np.random.SeedSequence([scene.seed, zlib.crc32(style.encode())]))
    out = renderer(scene, int(size), rng)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8, (style, out.shape, out.dtype)
    return out


# ---------------------------------------------------------------------------------------------
# The prepare stage for the synthetic source.
# ---------------------------------------------------------------------------------------------


def scene_seed(seed: int, index: int) -> int:
    """Seed of scene number `index` in a dataset made with params.seed = `seed`."""
    return int(np.random.SeedSequence([int(seed), _SPLIT_SALT, int(index)]).generate_state(1)[0])


def _scene_key(index: int) -> str:
    return f"s{index:05d}"


def _render_chunk(job: tuple[int, list[tuple[int, str]], list[str], int, str]) -> list[ManifestRow]:
    """Render, encode and write every style of a few scenes; returns their manifest rows."""
    seed, scenes, styles, size, root_s = job
    root = Path(root_s)
    rows = []
    for index, split in scenes:
        scene = make_scene(scene_seed(seed, index))
        for style in styles:
            img = Image.fromarray(render(scene, style, size), "RGB")
            buf = io.BytesIO()
            img.save(buf, format="PNG", optimize=False, compress_level=6)
            data = buf.getvalue()
            rel = f"styles/{style}/{split}/{_scene_key(index)}.png"
            atomic_write_bytes(root / rel, data)
            rows.append(
                ManifestRow(
                    path=rel,
                    style=style,
                    split=split,
                    scene=_scene_key(index),
                    sha256=hashlib.sha256(data).hexdigest(),
                    source=f"synthetic:seed={seed}:scene={index}",
                    width=img.width,
                    height=img.height,
                    mode=img.mode,
                    phash=phash(img),
                    intensity_std=intensity_std(img),
                )
            )
    return rows


def _remove_stale(root: Path, keep: set[str]) -> int:
    """Delete files under root/styles that this run did not write, then empty folders."""
    styles_dir = root / "styles"
    removed = 0
    if not styles_dir.is_dir():
        return 0
    for p in sorted(styles_dir.rglob("*"), reverse=True):
        rel = p.relative_to(root).as_posix()
        if p.is_dir() and not p.is_symlink():
            if not any(p.iterdir()):
                p.rmdir()
        elif rel not in keep:
            p.unlink()
            removed += 1
    return removed


def prepare_synthetic(params: Params, root: Path) -> dict[str, Any]:
    """Render the benchmark into `root`: styles/<style>/<split>/sNNNNN.png, manifest, preview.

    Scene numbers 0..train-1 are the train split and train..train+test-1 the test split, so the two
    never share a scene; every scene is rendered in every style under the same file name.
    """
    start = time.perf_counter()
    root = Path(root)
    cfg = params.data.synthetic
    size = params.data.image_size
    styles = list(cfg.styles)
    scenes = [(i, "train") for i in range(cfg.train_scenes)]
    scenes += [(cfg.train_scenes + i, "test") for i in range(cfg.test_scenes)]

    workers = params.data.workers or usable_cpus()
    n_chunks = min(len(scenes), max(1, workers * 4))
    chunks = [scenes[k::n_chunks] for k in range(n_chunks)]
    jobs = [(params.seed, chunk, styles, size, str(root)) for chunk in chunks]
    root.mkdir(parents=True, exist_ok=True)
    rows: list[ManifestRow] = []
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            rows.extend(_render_chunk(job))
    else:
        # fork shares the modules already imported; spawn would import pandas again per worker.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
            for part in pool.map(_render_chunk, jobs):
                rows.extend(part)

    removed = _remove_stale(root, {r.path for r in rows})
    manifest = write_manifest(manifest_frame(rows), root)
    write_rejects([], root)

    grid_rows = []
    for index, split in scenes[: cfg.preview_scenes]:
        paths = [root / f"styles/{style}/{split}/{_scene_key(index)}.png" for style in styles]
        grid_rows.append([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    preview = root / "preview.png"
    with atomic_path(preview) as tmp:
        preview_grid(grid_rows, styles).save(tmp, format="PNG")

    seconds = time.perf_counter() - start
    log.info("rendered %d synthetic images (%d styles) in %.1f s", len(rows), len(styles), seconds)
    return {
        "images": len(rows),
        "styles": styles,
        "train_scenes": cfg.train_scenes,
        "test_scenes": cfg.test_scenes,
        "removed_stale": removed,
        "seconds": round(seconds, 3),
        "manifest": str(manifest),
        "preview": str(preview),
    }
