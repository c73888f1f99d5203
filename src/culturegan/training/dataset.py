"""Training data of one culture pair: both styles' train images in memory, sampled unpaired.

Images stay uint8 (4x smaller than float) and are scaled to [-1, 1] per batch. Sampling draws
from its own seeded torch.Generator, whose state goes into every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from culturegan.config import Pair
from culturegan.data.manifest import MANIFEST_NAME, manifest_records
from culturegan.errors import ConfigError, SourceError


def _read_png(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as err:
        raise SourceError(
            f"cannot read training image {path}: {err}", hint="re-run the prepare stage"
        ) from None
    if arr.shape[:2] != (size, size):
        raise ConfigError(
            f"{path} is {arr.shape[1]}x{arr.shape[0]} but data.image_size is {size}",
            hint="re-run the prepare stage after changing data.image_size",
        )
    return arr


def _manifest_rows(data_root: Path) -> list[dict[str, str]]:
    """(style, split, path) of every manifest row, read without pandas (the trainer's memory)."""
    return manifest_records(data_root, ("style", "split", "path"))


def check_pair_styles(data_root: Path, pair: Pair) -> None:
    """Refuse a pair naming a style the prepared data does not hold, before any work (or MLflow
    run) starts: a real source's styles are known only from its manifest."""
    data_root = Path(data_root)
    available = sorted({r["style"] for r in _manifest_rows(data_root)})
    missing = [s for s in (pair.source, pair.target) if s not in available]
    if missing:
        raise ConfigError(
            f"pair {str(pair)!r} (train.pairs / --pair) names style(s) {missing} that "
            f"{data_root / MANIFEST_NAME} does not hold; its styles: {available}",
            hint="use pairs of those styles, or change data.source / data.style_names and prepare again",
        )


def load_style_images(data_root: Path, style: str, size: int, split: str = "train") -> torch.Tensor:
    """All images of one style and split, sorted by path: uint8 (N, 3, size, size)."""
    data_root = Path(data_root)
    manifest = _manifest_rows(data_root)
    available = sorted({r["style"] for r in manifest})
    if style not in available:
        raise ConfigError(
            f"train.pairs names style {style!r}, which is not in {data_root / MANIFEST_NAME}",
            hint=f"available styles: {', '.join(available) or '(none)'}",
        )
    paths = sorted(r["path"] for r in manifest if r["style"] == style and r["split"] == split)
    if not paths:
        raise ConfigError(
            f"style {style!r} has no {split} images in {data_root / MANIFEST_NAME}",
            hint="re-run the prepare stage",
        )
    arrays = [_read_png(data_root / p, size) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (the generator's tanh range)."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


@dataclass
class PairImages:
    """Train images of a pair's source (domain A) and target (domain B) style."""

    source: str
    target: str
    a: torch.Tensor  # (N_a, 3, H, W) uint8
    b: torch.Tensor  # (N_b, 3, H, W) uint8


def load_pair(
    data_root: Path, pair: Pair, size: int, device: torch.device | str = "cpu"
) -> PairImages:
    a = load_style_images(data_root, pair.source, size).to(device)
    b = load_style_images(data_root, pair.target, size).to(device)
    return PairImages(pair.source, pair.target, a, b)


class UnpairedSampler:
    """Independent random batches of A and B (with replacement), optionally flipped left-right
    and, with `crop`, cut to a random `crop` x `crop` window of each image (CycleGAN's
    load_size/crop_size: images stored larger than the crop show the generator full detail).

    Every rank draws the same global batch from the same seed and keeps its own slice, so a
    DDP run sees exactly the images a single process would.
    """

    def __init__(
        self,
        data: PairImages,
        batch_size: int,
        seed: int,
        flip: bool,
        rank: int = 0,
        world_size: int = 1,
        crop: int | None = None,
    ) -> None:
        if batch_size % world_size:
            raise ConfigError(
                f"train.batch_size {batch_size} does not split evenly across {world_size} ranks",
                hint="use a batch size that is a multiple of the number of processes",
            )
        self.data = data
        self.batch_size = batch_size
        self.flip = flip
        self.crop = crop
        self.local = slice(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)
        self.rng = torch.Generator().manual_seed(seed)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch: (real_a, real_b), float32 in [-1, 1], each (B_local, 3, H, W)."""
        n = self.batch_size
        idx_a = torch.randint(len(self.data.a), (n,), generator=self.rng)[self.local]
        idx_b = torch.randint(len(self.data.b), (n,), generator=self.rng)[self.local]
        flips = torch.rand(2, n, generator=self.rng)[:, self.local] < 0.5
        corners = self._corners(n)
        out = []
        for k, (images, idx, flip) in enumerate(
            ((self.data.a, idx_a, flips[0]), (self.data.b, idx_b, flips[1]))
        ):
            batch = images[idx.to(images.device)]
            if corners is not None:
                c = self.crop
                batch = torch.stack(
                    [img[:, y : y + c, x : x + c] for img, (y, x) in zip(batch, corners[k].tolist(), strict=True)]
                )  # (B, 3, crop, crop)
            x = to_unit_range(batch)
            if self.flip:
                x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)
            out.append(x)
        return out[0], out[1]

    def _corners(self, n: int) -> torch.Tensor | None:
        """Top-left corners (2, B_local, 2) of this batch's crops, or None without cropping."""
        if self.crop is None:
            return None
        h, w = self.data.a.shape[2], self.data.a.shape[3]
        ys = torch.randint(0, h - self.crop + 1, (2, n), generator=self.rng)
        xs = torch.randint(0, w - self.crop + 1, (2, n), generator=self.rng)
        return torch.stack([ys, xs], dim=2)[:, self.local]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.rng.set_state(state["rng"])
