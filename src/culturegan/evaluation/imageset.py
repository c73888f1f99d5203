"""Loading one style's split from the manifest as a uint8 array, and pairing source and target by scene."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from culturegan.data.manifest import MANIFEST_NAME, read_manifest
from culturegan.errors import SourceError


@dataclass(frozen=True)
class ImageSet:
    """Images of one style and split, sorted by path: (N, H, W, 3) uint8 plus per-image scene keys."""

    style: str
    split: str
    images: np.ndarray
    scenes: list[str]
    paths: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def take(self, index: np.ndarray | list[int]) -> ImageSet:
        index = np.asarray(index, dtype=np.int64)
        return ImageSet(
            self.style,
            self.split,
            self.images[index],
            [self.scenes[i] for i in index],
            [self.paths[i] for i in index],
        )


def manifest_styles(data_root: Path, split: str = "test") -> list[str]:
    """Styles that have images in `split`, sorted."""
    df = read_manifest(data_root)
    return sorted(df.loc[df["split"] == split, "style"].unique().tolist())


def load_split(data_root: Path, style: str, split: str, limit: int | None = None) -> ImageSet:
    """Every image of `style` in `split` (first `limit` by path if given), as RGB uint8."""
    df = read_manifest(data_root)
    rows = df[(df["style"] == style) & (df["split"] == split)].sort_values("path")
    if rows.empty:
        have = sorted(df.loc[df["split"] == split, "style"].unique().tolist())
        raise SourceError(
            f"no {split} images of style {style!r} in {Path(data_root) / MANIFEST_NAME}",
            hint=f"styles with {split} images: {have}; check the pair names in params.yaml (train.pairs)",
        )
    if limit is not None:
        rows = rows.iloc[:limit]
    images = []
    for rel in rows["path"]:
        with Image.open(Path(data_root) / rel) as im:
            images.append(np.asarray(im.convert("RGB")))
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise SourceError(
            f"{style}/{split} images have different sizes {sorted(shapes)}",
            hint="re-run `culturegan prepare`: normalised images are squares of data.image_size",
        )
    return ImageSet(
        style, split, np.stack(images), rows["scene"].fillna("").tolist(), rows["path"].tolist()
    )


def scene_pairs(a: ImageSet, b: ImageSet) -> tuple[np.ndarray, np.ndarray] | None:
    """Indices (ia, ib) such that a[ia[k]] and b[ib[k]] show the same scene; None without shared scenes.

    Only the synthetic benchmark has scene keys (every scene in every style); real data has "".
    """
    index_b = {s: i for i, s in enumerate(b.scenes) if s}
    pairs = [(i, index_b[s]) for i, s in enumerate(a.scenes) if s and s in index_b]
    if not pairs:
        return None
    ia, ib = zip(*pairs, strict=True)
    return np.array(ia, dtype=np.int64), np.array(ib, dtype=np.int64)
