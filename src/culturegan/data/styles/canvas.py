"""Shared rendering helpers of the style renderers. Renderers work at 2x the output size and
downsample with a box filter, which antialiases every edge for the price of four times the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from culturegan.data.scene import PX, Orb, Scene, Tree

SKY, WATER, BANK = 0, 8, 9
FIRST_OBJECT = 16


class Geom:
    """Per-pixel geometry of a scene at internal resolution S: ridge lines, masks, labels."""

    def __init__(self, scene: Scene, S: int) -> None:
        self.S = S
        c = (np.arange(S, dtype=np.float32) + 0.5) / S
        self.c = c
        self.yy = c[:, None]  # (S, 1) normalised row coordinate
        self.xx = c[None, :]  # (1, S)
        self.tops = [np.interp(c, PX, r.profile).astype(np.float32) for r in scene.ridges]
        self.masks = [
            (self.yy >= t[None, :]) & (self.yy < r.base)
            for t, r in zip(self.tops, scene.ridges, strict=True)
        ]
        self.bank_top = np.interp(c, PX, scene.bank.profile).astype(np.float32)
        self.bank_mask = self.yy >= self.bank_top[None, :]
        self.water = np.broadcast_to(self.yy >= scene.horizon, (S, S)) & ~self.bank_mask
        self.h_row = round(scene.horizon * S)
        labels = np.zeros((S, S), dtype=np.uint8)
        for i, m in enumerate(self.masks):
            labels[m] = 1 + i
        labels[self.water] = WATER
        labels[self.bank_mask] = BANK
        self.labels = labels

    def px(self, v: float) -> float:
        return v * self.S


def noise(rng: np.random.Generator, S: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth value noise (S, S), roughly unit variance; cells = (rows, cols) of random knots."""
    g = rng.standard_normal((cells[0] + 1, cells[1] + 1)).astype(np.float32)
    out = np.asarray(Image.fromarray(g).resize((S, S), Image.Resampling.BICUBIC), dtype=np.float32)
    return out / (out.std() + 1e-6)


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def mix(a: Any, b: Any, t: Any) -> Any:
    return np.asarray(a, dtype=np.float32) * (1 - t) + np.asarray(b, dtype=np.float32) * t


def rgb(c: Sequence[float]) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, int(float(v) + 0.5))) for v in c)
    return r, g, b


def to_image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def downsample(img: Image.Image) -> np.ndarray:
    return np.asarray(img.reduce(2), dtype=np.float32)


def hull(x: float, y: float, length: float) -> list[tuple[float, float]]:
    """A boat's hull: a trapezoid on the water line at (x, y), wider at the gunwale."""
    return [
        (x - length / 2, y - length * 0.14),
        (x + length / 2, y - length * 0.14),
        (x + length * 0.36, y),
        (x - length * 0.36, y),
    ]


def orb_disc(g: Geom, orb: Orb, soft: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Antialiased disc coverage and the distance field (in radii) around the orb."""
    d = np.sqrt((g.xx - orb.x) ** 2 + (g.yy - orb.y) ** 2) / orb.radius
    disc = np.clip((1 - d) * orb.radius * g.S / soft + 0.5, 0, 1)
    return disc, d


def slope_shade(top: np.ndarray, S: int, smooth: int = 3) -> np.ndarray:
    """Per-column light factor in [-1, 1] from the ridge line's slope: light comes from the left."""
    d = np.gradient(top) * S  # dy/dx in normalised units; > 0 where the ridge descends to the right
    if smooth > 1:
        d = np.convolve(d, np.ones(smooth) / smooth, mode="same")
    return np.tanh(d * 2.0).astype(np.float32)


def mirror_rows(g: Geom, img: np.ndarray, ripple: np.ndarray) -> np.ndarray:
    """Reflection of everything above the water line, shifted per pixel by `ripple` columns."""
    S, h = g.S, g.h_row
    rows = np.arange(S)
    src_rows = np.clip(2 * h - 1 - rows, 0, S - 1)
    cols = np.clip(np.arange(S)[None, :] + np.round(ripple).astype(int), 0, S - 1)
    return img[src_rows[:, None], cols]


def open_side(scene: Scene) -> int:
    """The top corner (-1 left, +1 right) with the most empty sky, for a title or an inscription."""
    skyline = np.min([r.profile for r in scene.ridges], axis=0)

    def room(side: int) -> float:
        band = PX < 0.22 if side < 0 else PX > 0.78
        free = float(skyline[band].min())
        if scene.orb is not None and (scene.orb.x < 0.3 if side < 0 else scene.orb.x > 0.7):
            free -= 1.0
        return free

    left, right = room(-1), room(1)
    if abs(left - right) < 0.02:
        return -scene.bank_side
    return -1 if left > right else 1


def tree_px(g: Geom, t: Tree) -> tuple[float, float, float, float]:
    return g.px(t.x), g.px(t.y), g.px(t.height), g.px(t.width)


def outline(labels: np.ndarray, width: int) -> np.ndarray:
    """Even-width key-block line wherever two labelled areas meet."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    out = edge.copy()
    for _ in range(width - 1):  # grow by one pixel per step, the same amount everywhere
        grown = out.copy()
        grown[1:, :] |= out[:-1, :]
        grown[:, 1:] |= out[:, :-1]
        out = grown
    return out


class LabelledCanvas:
    """A colour image and a label map drawn together: every `shape` gets its own label, so
    `outlined` can trace an even dark line around each one (the key block of a print, the contour
    of a panel painting). `draw` paints the colour image alone (texture that takes no outline)."""

    def __init__(self, img: np.ndarray, labels: np.ndarray) -> None:
        self.image = to_image(img)
        self.draw = ImageDraw.Draw(self.image)
        self._labels = Image.fromarray(labels, "L")
        self._label_draw = ImageDraw.Draw(self._labels)
        self._next = iter(range(FIRST_OBJECT, 255))

    def shape(self, kind: str, xy: Any, colour: Any) -> None:
        label = next(self._next)
        getattr(self.draw, kind)(xy, fill=rgb(colour))
        getattr(self._label_draw, kind)(xy, fill=label)

    def hut_and_boats(
        self, g: Geom, scene: Scene, wall: Any, roof: Any, sail: Any, hull: Any, eave: float, ridge: float
    ) -> None:
        """The scene's hut (a wall and a roof reaching `eave` x its width out and `ridge` x its
        height up) and its boats (a hull, and a sail when it has one) as flat outlined shapes."""
        if scene.hut is not None:
            hu = scene.hut
            x, y, w, h = g.px(hu.x), g.px(hu.y), g.px(hu.width), g.px(hu.height)
            self.shape("rectangle", [x - w / 2, y - h * 0.6, x + w / 2, y], wall)
            self.shape(
                "polygon",
                [(x - w * eave, y - h * 0.55), (x, y - h * ridge), (x + w * eave, y - h * 0.55)],
                roof,
            )
        for b in scene.boats:
            x, y, L = g.px(b.x), g.px(b.y), g.px(b.length)
            if b.sail:
                self.shape(
                    "polygon",
                    [(x, y - L * 0.85), (x, y - L * 0.2), (x + b.heading * L * 0.36, y - L * 0.2)],
                    sail,
                )
            self.shape(
                "polygon",
                [(x - L / 2, y - L * 0.16), (x + L / 2, y - L * 0.16), (x + L * 0.36, y), (x - L * 0.36, y)],
                hull,
            )

    def outlined(self, colour: np.ndarray, width: int) -> np.ndarray:
        """The colour image as float32 (H, W, 3) with `colour` lines `width` px wide between areas."""
        img = np.asarray(self.image, dtype=np.float32).copy()
        img[outline(np.asarray(self._labels), width)] = colour
        return img
