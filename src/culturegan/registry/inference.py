"""Stylising images with a registered model (`culturegan stylize`)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from culturegan.config import TrackingConfig
from culturegan.errors import ConfigError, SourceError
from culturegan.fileio import atomic_path
from culturegan.tracking.store import (
    redact,
    resolve_tracking_uri,
)

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def list_images(inputs: Path, out: Path) -> list[Path]:
    """`inputs` itself if it is a file, else the image files below it (sorted; outputs skipped)."""
    inputs = Path(inputs)
    if inputs.is_file():
        return [inputs]
    if not inputs.is_dir():
        raise SourceError(
            f"input {inputs} does not exist", hint="pass an image file or a folder of images"
        )
    out_resolved = Path(out).resolve()
    files = []
    for path in sorted(inputs.rglob("*")):
        rel = path.relative_to(inputs)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.resolve().is_relative_to(out_resolved):
            continue  # an output folder inside the input folder: earlier results are not inputs
        files.append(path)
    return files


def _read_rgb(path: Path) -> np.ndarray:
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)  # camera photos are stored rotated
        return np.asarray(im.convert("RGB"))


def _output_paths(files: list[Path], inputs: Path, out: Path) -> dict[Path, Path]:
    """out/<relative path>.png; where two inputs would share one (a.png, a.jpg), the non-PNG
    input keeps its whole name (a.jpg.png)."""
    rels = {
        path: path.relative_to(inputs) if inputs.is_dir() else Path(path.name) for path in files
    }
    counts: dict[Path, int] = {}
    for rel in rels.values():
        counts[rel.with_suffix(".png")] = counts.get(rel.with_suffix(".png"), 0) + 1
    dests = {}
    for path, rel in rels.items():
        plain = rel.with_suffix(".png")
        dests[path] = out / (
            plain if counts[plain] == 1 or rel.suffix == ".png" else rel.parent / f"{rel.name}.png"
        )
    return dests


def stylize(
    model_uri: str, inputs: Path, out: Path, tracking_cfg: TrackingConfig
) -> dict[str, Any]:
    """Stylise an image or a folder of images (recursively) with a registered model into `out`.

    `model_uri` is e.g. `models:/culturegan-photo-to-inkwash@champion`, resolved against the
    tracking URI of `tracking_cfg` (env MLFLOW_TRACKING_URI first). Each result is written
    atomically as `out/<relative path>.png`, same size as its input. Images that cannot be read
    or that the model refuses (e.g. larger than registry.max_side) are listed in "failed" and
    skipped; they stop nothing.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from PIL import Image
    from tqdm import tqdm

    start = time.perf_counter()
    inputs, out = Path(inputs), Path(out)
    files = list_images(inputs, out)
    uri = resolve_tracking_uri(tracking_cfg)
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as err:
        message = err.message if isinstance(err, MlflowException) else str(err)
        raise ConfigError(
            f"model {model_uri} cannot be loaded from {redact(uri)}: {redact(message)}",
            hint="check the model name and alias (has `culturegan register` promoted one?) and "
            "MLFLOW_TRACKING_URI / tracking.tracking_uri",
        ) from None

    failed: list[dict[str, str]] = []
    written: list[str] = []
    dests = _output_paths(files, inputs, out)
    for path in tqdm(files, desc="stylize", unit="image", disable=not sys.stderr.isatty()):
        try:
            image = _read_rgb(path)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            failed.append(
                {"path": str(path), "error": f"unreadable image: {type(err).__name__}: {err}"}
            )
            log.warning("skipping %s: unreadable image (%s)", path, err)
            continue
        try:
            result = model.predict(image[None])[0]  # (H, W, 3) uint8
        except MlflowException as err:
            failed.append({"path": str(path), "error": err.message})
            log.warning("skipping %s: %s", path, err.message)
            continue
        dest = dests[path]
        with atomic_path(dest) as tmp:
            Image.fromarray(result).save(tmp, format="PNG")
        written.append(str(dest))
    if not files:
        log.warning(
            "no images found in %s (suffixes: %s)", inputs, ", ".join(sorted(IMAGE_SUFFIXES))
        )
    return {
        "model_uri": model_uri,
        "out": str(out),
        "images": len(files),
        "written": len(written),
        "outputs": written,
        "failed": failed,
        "seconds": round(time.perf_counter() - start, 3),
    }
