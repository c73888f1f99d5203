"""The embedded procedural benchmark: random landscapes, each rendered in every cultural style.

Because every scene exists in every style, a transfer A->B can be scored against the true B image.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import multiprocessing
import os
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy.ndimage import gaussian_filter

from culturegan.config import Params
from culturegan.data.manifest import (
    ManifestRow,
    intensity_std,
    manifest_frame,
    phash,
    write_manifest,
    write_rejects,
)
from culturegan.errors import ConfigError
from culturegan.fileio import atomic_path, atomic_write_bytes

log = logging.getLogger(__name__)

PROFILE_POINTS = 129  # samples of a ridge profile over x in [0, 1]
_PX = np.linspace(0.0, 1.0, PROFILE_POINTS)
_SCENE_SALT = 0x5CE7E  # keeps scene streams apart from the per-style render streams
_SPLIT_SALT = 0xDA7A

# ---------------------------------------------------------------------------------------------
# Scene model: geometry only, in normalised coordinates (x right, y down, both in [0, 1]).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Ridge:
    profile: np.ndarray  # (PROFILE_POINTS,) y of the ridge line at evenly spaced x in [0, 1]
    base: float  # y where the ridge ends (the water line for far ridges, 1 for the bank)
    depth: float  # 0 = nearest, 1 = farthest: drives atmospheric perspective and ink tone


@dataclass(frozen=True)
class Tree:
    x: float
    y: float  # foot of the trunk
    height: float
    width: float
    kind: str  # "pine" | "round"


@dataclass(frozen=True)
class Boat:
    x: float
    y: float  # water line under the hull
    length: float
    sail: bool
    heading: int  # +1 sails to the right, -1 to the left


@dataclass(frozen=True)
class Hut:
    x: float
    y: float  # foot of the walls
    width: float
    height: float


@dataclass(frozen=True)
class Orb:
    x: float
    y: float
    radius: float
    kind: str  # "sun" | "moon"


@dataclass(frozen=True, eq=False)
class Scene:
    """One landscape; every style renders exactly this content."""

    seed: int
    horizon: float  # y of the water line
    ridges: tuple[Ridge, ...]  # mountain layers behind the water, far to near
    bank: Ridge  # the foreground shore, rising from one side of the picture
    bank_side: int  # -1 left, +1 right
    cone: bool  # the farthest ridge is a clean volcanic cone (a Fuji)
    trees: tuple[Tree, ...]
    boats: tuple[Boat, ...]
    hut: Hut | None
    orb: Orb | None


def _fractal(rng: np.random.Generator, octaves: int = 4, base_cells: int = 3) -> np.ndarray:
    """1-D fractal noise over _PX in about [-1, 1]: jagged ridge detail."""
    out = np.zeros(PROFILE_POINTS)
    amp, cells, total = 1.0, base_cells, 0.0
    for _ in range(octaves):
        knots = np.linspace(0, 1, cells + 1)
        out += amp * np.interp(_PX, knots, rng.uniform(-1, 1, cells + 1))
        total += amp
        amp *= 0.5
        cells *= 2
    return out / total


def _mountain_heights(rng: np.random.Generator, tallest: float, peaks: int) -> np.ndarray:
    """Heights above the base line: a few steep peaks plus jagged detail."""
    h = np.zeros(PROFILE_POINTS)
    for _ in range(peaks):
        c = rng.uniform(-0.05, 1.05)
        w = rng.uniform(0.1, 0.3)
        a = tallest * rng.uniform(0.55, 1.0)
        sharp = rng.uniform(1.1, 1.8)
        h = np.maximum(h, a * np.exp(-(np.abs((_PX - c) / w) ** sharp)))
    h += tallest * (0.08 * _fractal(rng, 5, 4) + 0.15)
    return np.clip(h, 0.0, None)


def _cone_heights(rng: np.random.Generator, tallest: float) -> np.ndarray:
    c = rng.uniform(0.3, 0.7)
    w = rng.uniform(0.3, 0.45)
    h = tallest * np.clip(1 - np.abs(_PX - c) / w, 0, None) ** 1.15
    h = np.minimum(h, tallest * 0.9)  # the flat crater rim
    return np.clip(h + tallest * 0.015 * _fractal(rng, 3, 8), 0.0, None)


def make_scene(seed: int) -> Scene:
    """A random landscape from an integer seed (same seed, same scene, on every machine)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SCENE_SALT]))
    horizon = float(rng.uniform(0.58, 0.74))
    n_far = int(rng.integers(2, 4))
    cone = bool(rng.random() < 0.3)
    ridges = []
    for i, depth in enumerate(np.linspace(1.0, 0.35, n_far)):
        room = horizon - 0.12  # keep peaks below the top edge
        if i == 0 and cone:
            h = _cone_heights(rng, room * rng.uniform(0.7, 0.95))
        else:
            tallest = room * (0.45 + 0.5 * depth) * rng.uniform(0.7, 1.0)
            h = _mountain_heights(rng, tallest, int(rng.integers(1, 4)))
        ridges.append(Ridge(profile=horizon - h, base=horizon, depth=float(depth)))

    side = int(rng.choice([-1, 1]))
    u = _PX if side < 0 else 1 - _PX  # distance from the side the bank rises from
    extent = rng.uniform(0.4, 0.75)
    top = rng.uniform(max(0.76, horizon + 0.08), 0.86)
    bank_y = top + (1.05 - top) * (u / extent) ** 1.6 + 0.025 * _fractal(rng, 4, 6)
    bank = Ridge(profile=np.minimum(bank_y, 1.2), base=1.0, depth=0.0)

    def bank_top(x: float) -> float:
        return float(np.interp(x, _PX, bank.profile))

    visible = _PX[bank.profile < 0.92]
    hut = None
    if visible.size and rng.random() < 0.55:
        x = float(
            rng.uniform(visible.min() + 0.04, max(visible.max() - 0.04, visible.min() + 0.05))
        )
        hut = Hut(
            x=x,
            y=bank_top(x) + 0.02,
            width=float(rng.uniform(0.07, 0.1)),
            height=float(rng.uniform(0.05, 0.07)),
        )

    trees: list[Tree] = []
    if visible.size:
        centre = rng.uniform(visible.min(), visible.max())
        for _ in range(int(rng.integers(2, 7))):
            x = float(np.clip(centre + rng.normal(0, 0.09), visible.min(), visible.max()))
            if hut is not None and abs(x - hut.x) < hut.width * 0.8:
                continue
            hgt = float(rng.uniform(0.08, 0.17))
            trees.append(
                Tree(
                    x,
                    bank_top(x) + 0.015,
                    hgt,
                    hgt * float(rng.uniform(0.45, 0.7)),
                    str(rng.choice(["pine", "round"])),
                )
            )
    near = ridges[-1]
    tall_enough = _PX[(near.profile < horizon - 0.05) & (_PX > 0.03) & (_PX < 0.97)]
    if tall_enough.size:
        for _ in range(int(rng.integers(0, 6))):
            x = float(rng.choice(tall_enough))
            hgt = float(rng.uniform(0.03, 0.055))
            y = float(np.interp(x, _PX, near.profile)) + 0.008
            trees.append(Tree(x, y, hgt, hgt * 0.6, str(rng.choice(["pine", "round"]))))

    boats: list[Boat] = []
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        for _attempt in range(12):
            y = float(rng.uniform(horizon + 0.04, min(horizon + 0.3, 0.95)))
            length = 0.05 + 0.1 * (y - horizon) / (1 - horizon)  # nearer boats look longer
            x = float(rng.uniform(0.08, 0.92))
            xs = np.linspace(x - length, x + length, 9)
            clear = all(abs(b.x - x) > 0.15 for b in boats)
            if clear and np.all(np.interp(xs, _PX, bank.profile) > y + 0.04):
                boats.append(
                    Boat(x, y, float(length), bool(rng.random() < 0.6), int(rng.choice([-1, 1])))
                )
                break

    orb = None
    if rng.random() < 0.65:
        r = float(rng.uniform(0.035, 0.06))
        skyline = np.min([rd.profile for rd in ridges], axis=0)
        for _attempt in range(12):
            x = float(rng.uniform(0.12, 0.88))
            lo = float(skyline[np.abs(_PX - x) <= r + 0.02].min()) - r - 0.03
            if lo > r + 0.08:
                orb = Orb(
                    x,
                    float(rng.uniform(r + 0.07, lo)),
                    r,
                    str(rng.choice(["sun", "moon"], p=[0.6, 0.4])),
                )
                break

    return Scene(
        int(seed), horizon, tuple(ridges), bank, side, cone, tuple(trees), tuple(boats), hut, orb
    )


# ---------------------------------------------------------------------------------------------
# Shared rendering helpers. Renderers work at 2x the output size and downsample with a box filter,
# which antialiases every edge for the price of four times the pixels.
# ---------------------------------------------------------------------------------------------

SKY, WATER, BANK = 0, 8, 9
_FIRST_OBJECT = 16


class _Geom:
    """Per-pixel geometry of a scene at internal resolution S: ridge lines, masks, labels."""

    def __init__(self, scene: Scene, S: int) -> None:
        self.S = S
        c = (np.arange(S, dtype=np.float32) + 0.5) / S
        self.c = c
        self.yy = c[:, None]  # (S, 1) normalised row coordinate
        self.xx = c[None, :]  # (1, S)
        self.tops = [np.interp(c, _PX, r.profile).astype(np.float32) for r in scene.ridges]
        self.masks = [
            (self.yy >= t[None, :]) & (self.yy < r.base)
            for t, r in zip(self.tops, scene.ridges, strict=True)
        ]
        self.bank_top = np.interp(c, _PX, scene.bank.profile).astype(np.float32)
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


def _noise(rng: np.random.Generator, S: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth value noise (S, S), roughly unit variance; cells = (rows, cols) of random knots."""
    g = rng.standard_normal((cells[0] + 1, cells[1] + 1)).astype(np.float32)
    out = np.asarray(Image.fromarray(g).resize((S, S), Image.Resampling.BICUBIC), dtype=np.float32)
    return out / (out.std() + 1e-6)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _mix(a: Any, b: Any, t: Any) -> Any:
    return np.asarray(a, dtype=np.float32) * (1 - t) + np.asarray(b, dtype=np.float32) * t


def _rgb(c: Sequence[float]) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, int(float(v) + 0.5))) for v in c)
    return r, g, b


def _to_image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _downsample(img: Image.Image) -> np.ndarray:
    return np.asarray(img.reduce(2), dtype=np.float32)


def _hull(x: float, y: float, length: float) -> list[tuple[float, float]]:
    """A boat's hull: a trapezoid on the water line at (x, y), wider at the gunwale."""
    return [
        (x - length / 2, y - length * 0.14),
        (x + length / 2, y - length * 0.14),
        (x + length * 0.36, y),
        (x - length * 0.36, y),
    ]


def _orb_disc(g: _Geom, orb: Orb, soft: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Antialiased disc coverage and the distance field (in radii) around the orb."""
    d = np.sqrt((g.xx - orb.x) ** 2 + (g.yy - orb.y) ** 2) / orb.radius
    disc = np.clip((1 - d) * orb.radius * g.S / soft + 0.5, 0, 1)
    return disc, d


def _slope_shade(top: np.ndarray, S: int, smooth: int = 3) -> np.ndarray:
    """Per-column light factor in [-1, 1] from the ridge line's slope: light comes from the left."""
    d = np.gradient(top) * S  # dy/dx in normalised units; > 0 where the ridge descends to the right
    if smooth > 1:
        d = np.convolve(d, np.ones(smooth) / smooth, mode="same")
    return np.tanh(d * 2.0).astype(np.float32)


def _mirror_rows(g: _Geom, img: np.ndarray, ripple: np.ndarray) -> np.ndarray:
    """Reflection of everything above the water line, shifted per pixel by `ripple` columns."""
    S, h = g.S, g.h_row
    rows = np.arange(S)
    src_rows = np.clip(2 * h - 1 - rows, 0, S - 1)
    cols = np.clip(np.arange(S)[None, :] + np.round(ripple).astype(int), 0, S - 1)
    return img[src_rows[:, None], cols]


def _open_side(scene: Scene) -> int:
    """The top corner (-1 left, +1 right) with the most empty sky, for a title or an inscription."""
    skyline = np.min([r.profile for r in scene.ridges], axis=0)

    def room(side: int) -> float:
        band = _PX < 0.22 if side < 0 else _PX > 0.78
        free = float(skyline[band].min())
        if scene.orb is not None and (scene.orb.x < 0.3 if side < 0 else scene.orb.x > 0.7):
            free -= 1.0
        return free

    left, right = room(-1), room(1)
    if abs(left - right) < 0.02:
        return -scene.bank_side
    return -1 if left > right else 1


def _tree_px(g: _Geom, t: Tree) -> tuple[float, float, float, float]:
    return g.px(t.x), g.px(t.y), g.px(t.height), g.px(t.width)


# ---------------------------------------------------------------------------------------------
# Photo: the neutral source.
# ---------------------------------------------------------------------------------------------


def _photo(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    S = 2 * size
    g = _Geom(scene, S)
    sky_top = np.array([58, 108, 190]) + rng.normal(0, 8, 3)
    haze = np.array([206, 220, 234]) + rng.normal(0, 5, 3)
    t = np.clip(g.yy / scene.horizon, 0, 1) ** 0.9
    img = np.broadcast_to(_mix(sky_top, haze, t[..., None]), (S, S, 3)).copy()

    clouds = _noise(rng, S, (8, 3)) + 0.5 * _noise(rng, S, (20, 8))  # wide, flat cumulus banks
    cover = _smoothstep(0.7, 2.0, clouds) * (0.85 - 0.55 * t)
    img = _mix(img, np.array([246, 246, 248]), cover[..., None])

    if scene.orb is not None:
        disc, d = _orb_disc(g, scene.orb)
        if scene.orb.kind == "sun":
            glow = 0.55 * np.exp(-((d / 5) ** 2))
            img = _mix(img, np.array([255, 238, 200]), glow[..., None])
            img = _mix(img, np.array([255, 251, 238]), disc[..., None])
        else:
            img = _mix(img, np.array([236, 236, 228]), (0.9 * disc)[..., None])

    far_haze = _mix(haze, sky_top, 0.3)  # distant slopes turn blue as well as light
    forest = [np.array([44, 70, 46]), np.array([58, 74, 52]), np.array([50, 78, 44])]
    rock = np.array([118, 112, 102])
    for i, ridge in enumerate(scene.ridges):
        top, m = g.tops[i], g.masks[i]
        a = 0.08 + 0.55 * ridge.depth**1.4  # atmospheric perspective: far is lighter and bluer
        below = np.clip((g.yy - top[None, :]) / (ridge.base - top[None, :] + 1e-3), 0, 1)
        # Bare rock near the summit, forest lower down; gullies run down the slopes.
        col = _mix(
            rock,
            forest[int(rng.integers(0, 3))] + rng.normal(0, 5, 3),
            _smoothstep(0.0, 0.35, below)[..., None],
        )
        if i == 0 and scene.cone:
            col = _mix(
                np.array([242, 244, 248]),
                col,
                _smoothstep(0.2, 0.3, below + 0.03 * _noise(rng, S, (2, 30)))[..., None],
            )
        shade = 1 + 0.3 * _slope_shade(top, S, 5)[None, :]
        tex = (
            0.05 * _noise(rng, S, (3, 40))
            + 0.07 * _noise(rng, S, (16, 16))
            + 0.05 * _noise(rng, S, (S // 3, S // 3))
        )
        layer = col * (shade + tex * (1 - 0.6 * ridge.depth))[..., None]
        layer = _mix(layer, far_haze, a)
        # Valley mist towards the water line.
        layer = _mix(layer, haze, (0.4 * below**2.5)[..., None])
        img = np.where(m[..., None], layer, img)

    ripple = 2.5 * _noise(rng, S, (40, 6))
    refl = _mirror_rows(g, img, ripple)
    deep = np.array([36, 66, 86]) + rng.normal(0, 5, 3)
    wt = np.clip((g.yy - scene.horizon) / (1 - scene.horizon), 0, 1)
    water = _mix(refl * 0.82, deep, (0.25 + 0.45 * wt)[..., None])
    water = water * (1 + 0.05 * _noise(rng, S, (60, 5)))[..., None]
    img = np.where(g.water[..., None], water, img)

    grass = np.array([72, 104, 52]) + rng.normal(0, 6, 3)
    bt = np.clip((g.yy - g.bank_top[None, :]) / 0.25, 0, 1)
    grain = 0.08 * _noise(rng, S, (24, 24)) + 0.05 * _noise(rng, S, (60, 60))
    bank = grass * (1.05 - 0.4 * bt + grain)[..., None]
    img = np.where(g.bank_mask[..., None], bank, img)

    pil = _to_image(img)
    d = ImageDraw.Draw(pil)
    for tr in sorted(scene.trees, key=lambda t: t.y):
        x, y, h, w = _tree_px(g, tr)
        far = tr.height < 0.06
        dark = np.array([28, 58, 38]) if tr.kind == "pine" else np.array([46, 86, 40])
        if far:
            dark = _mix(dark, haze, 0.25)
        light = dark * 1.45
        d.rectangle([x - w * 0.05, y - h * 0.35, x + w * 0.05, y], fill=_rgb([70, 52, 40]))
        if tr.kind == "pine":
            for k in range(3):
                ty = y - h + k * h * 0.25
                hw = w * (0.25 + 0.15 * k)
                d.polygon(
                    [(x, ty), (x - hw, ty + h * 0.38), (x + hw, ty + h * 0.38)], fill=_rgb(dark)
                )
                d.polygon([(x, ty), (x - hw, ty + h * 0.38), (x, ty + h * 0.38)], fill=_rgb(light))
        else:
            d.ellipse([x - w / 2, y - h, x + w / 2, y - h * 0.28], fill=_rgb(dark))
            d.ellipse([x - w * 0.4, y - h * 0.98, x + w * 0.1, y - h * 0.55], fill=_rgb(light))
    if scene.hut is not None:
        hu = scene.hut
        x, y, w, h = g.px(hu.x), g.px(hu.y), g.px(hu.width), g.px(hu.height)
        d.rectangle([x - w / 2, y - h * 0.6, x + w / 2, y], fill=(168, 142, 112))
        d.rectangle([x + w * 0.1, y - h * 0.6, x + w / 2, y], fill=(138, 114, 90))
        d.polygon(
            [(x - w * 0.62, y - h * 0.55), (x, y - h), (x + w * 0.62, y - h * 0.55)],
            fill=(96, 70, 56),
        )
        d.rectangle([x - w * 0.15, y - h * 0.35, x + w * 0.05, y], fill=(50, 38, 30))
    for b in scene.boats:
        x, y, L = g.px(b.x), g.px(b.y), g.px(b.length)
        d.polygon(
            _hull(x, y, L),
            fill=(74, 52, 40),
        )
        if b.sail:
            d.line(
                [(x, y - L * 0.14), (x, y - L * 0.8)],
                fill=(60, 45, 35),
                width=max(1, round(L * 0.04)),
            )
            d.polygon(
                [(x, y - L * 0.78), (x, y - L * 0.2), (x + b.heading * L * 0.34, y - L * 0.2)],
                fill=(236, 230, 216),
            )
    pil = pil.filter(ImageFilter.GaussianBlur(0.8))  # lens softness: no hard outlines anywhere
    out = _downsample(pil)

    r2 = ((g.c[::2, None] - 0.5) ** 2 + (g.c[None, ::2] - 0.5) ** 2) * 2
    out = out * (1 - 0.22 * r2[..., None] ** 1.5)  # vignetting
    out += rng.normal(0, 2.2, (size, size, 1)) + rng.normal(0, 1.2, (size, size, 3))  # sensor noise
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Chinese ink wash: ink density on warm paper; mist and water left blank.
# ---------------------------------------------------------------------------------------------

_INK = np.array([24, 22, 22], dtype=np.float32)
_SEAL = np.array([184, 42, 34], dtype=np.float32)


def _dry(mask: np.ndarray, fibre: np.ndarray, keep: float) -> np.ndarray:
    """Break a stroke mask like a dry brush: keep only where the fibrous noise is high enough."""
    return mask * _smoothstep(-keep - 0.4, -keep + 0.4, fibre)


def _inkwash(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    S = 2 * size
    g = _Geom(scene, S)
    paper = np.array([236, 228, 206]) + rng.normal(0, 3, 3)
    # Streaky paper fibres; also what breaks dry-brush strokes and the seal's print.
    fibre = _noise(rng, S, (6, 60)) * 0.6 + _noise(rng, S, (S // 2, S // 2)) * 0.8
    ink = np.zeros((S, S), dtype=np.float32)  # ink density in [0, 1]
    wash = np.zeros((S, S), dtype=np.float32)  # pale ochre wash (qianjiang), only in some paintings
    qianjiang = rng.random() < 0.3

    layers = list(zip(scene.ridges, g.tops, g.masks, strict=True))
    layers.append((scene.bank, g.bank_top, g.bank_mask))
    for ridge, top, m in layers:
        tone = 0.3 + 0.6 * (1 - ridge.depth) ** 1.2  # far ridges are pale, near ones dense
        fade = (0.06 + 0.08 * (1 - ridge.depth)) if ridge.base < 1 else 0.15
        dist = (g.yy - top[None, :]) / fade  # in fade lengths below the ridge line
        below = (g.yy - top[None, :]) / (ridge.base - top[None, :] + 1e-3)
        # The foot of every ridge dissolves into mist: blank paper between the layers.
        mist = 1 - _smoothstep(0.45, 0.95, below + 0.15 * _noise(rng, S, (4, 10)))
        body = tone * (0.3 + 0.4 * np.exp(-dist * 1.4)) * mist
        body = body * (1 + 0.3 * _noise(rng, S, (10, 14)))
        line_w = (1.0 + 2.2 * (1 - ridge.depth)) / S * (1 + 0.4 * _noise(rng, S, (1, 12))[0])
        contour = (g.yy - top[None, :] < line_w[None, :]).astype(np.float32)
        contour = _dry(contour, fibre, 0.9 + 0.4 * ridge.depth) * tone * 1.1
        layer = np.maximum(body, contour) * m
        ink = np.where(m, layer, ink)
        if qianjiang:
            wash = np.where(m, 0.35 * np.exp(-dist * 1.2) * (ridge.depth < 0.9), wash)

    # Texture strokes (cun): short dry-brush hatching down the slopes of the nearer ridges.
    strokes = Image.new("L", (S, S), 0)
    sd = ImageDraw.Draw(strokes)
    textured = [(r, t) for r, t in zip(scene.ridges, g.tops, strict=True) if r.depth < 0.8]
    for ridge, top in [*textured, (scene.bank, g.bank_top)]:
        slope = np.gradient(top) * S  # > 0 where the ridge line descends to the right
        n = int(S * (0.6 + 0.8 * (1 - ridge.depth)))
        cols = rng.integers(0, S, n)
        # Denser on the shaded (right-facing) flanks and close under the ridge line.
        keep = (slope[cols] > 0.1) | (rng.random(n) < 0.35)
        cols = cols[keep]
        y0 = top[cols] + rng.exponential(0.025 + 0.03 * (1 - ridge.depth), cols.size)
        ok = y0 < ridge.base - 0.02
        cols, y0 = cols[ok], y0[ok]
        # Hemp-fibre strokes run down along the slope, steeper than the ridge line itself.
        ang = np.arctan2(
            np.maximum(np.abs(slope[cols]), 0.9), np.where(slope[cols] >= 0, 1.0, -1.0)
        )
        ang = ang + rng.normal(0, 0.25, cols.size)
        L = S * rng.uniform(0.02, 0.055, cols.size)
        bend = rng.normal(0, 0.15, cols.size)
        tone = int(120 + 120 * (1 - ridge.depth))
        params = zip(
            cols.tolist(), (y0 * S).tolist(), ang.tolist(), L.tolist(), bend.tolist(), strict=True
        )
        for x0, y_, a_, l_, b_ in params:
            c, s_ = math.cos(a_), math.sin(a_)
            mid = (x0 + c * l_ * 0.5 - s_ * l_ * b_, y_ + s_ * l_ * 0.5 + c * l_ * b_)
            end = (x0 + c * l_, y_ + s_ * l_)
            sd.line([(x0, y_), mid, end], fill=tone, width=1 + int(l_ > S * 0.045))
    cun = _dry(np.asarray(strokes, dtype=np.float32) / 255, fibre, 0.5)
    ink = np.maximum(ink, cun * (g.labels > 0))

    # Objects: drawn as dense ink into a separate layer so they sit on top of the mist.
    obj = Image.new("L", (S, S), 0)
    od = ImageDraw.Draw(obj)
    for tr in scene.trees:
        x, y, h, w = _tree_px(g, tr)
        dense = 235 if tr.height > 0.06 else 170
        od.line([(x, y), (x + w * 0.1, y - h * 0.75)], fill=dense, width=max(1, round(w * 0.1)))
        n_dots = int(10 + 40 * tr.height / 0.17)
        if tr.kind == "pine":
            for k in range(4):  # pine needles as short horizontal dabs in tiers
                ty = y - h * (0.4 + 0.17 * k)
                hw = w * (0.55 - 0.1 * k)
                for _ in range(max(2, n_dots // 6)):
                    sx = x + rng.uniform(-hw, hw)
                    sy = ty + rng.normal(0, h * 0.03)
                    od.line(
                        [(sx - w * 0.08, sy), (sx + w * 0.08, sy + rng.normal(0, 0.5))],
                        fill=dense,
                        width=1,
                    )
        else:
            ang = rng.uniform(0, 2 * math.pi, n_dots)
            rad = np.sqrt(rng.uniform(0, 1, n_dots))
            for a, r in zip(ang, rad, strict=True):  # foliage as clusters of ink dots
                dx, dy = math.cos(a) * r * w * 0.55, math.sin(a) * r * h * 0.3
                dr = max(0.8, w * rng.uniform(0.04, 0.08))
                cx, cy = x + dx, y - h * 0.7 + dy
                od.ellipse(
                    [cx - dr, cy - dr * 0.7, cx + dr, cy + dr * 0.7],
                    fill=int(dense * rng.uniform(0.6, 1.0)),
                )
    if scene.hut is not None:
        hu = scene.hut
        x, y, w, h = g.px(hu.x), g.px(hu.y), g.px(hu.width) * 0.8, g.px(hu.height) * 0.8
        od.line(
            [(x - w * 0.6, y - h * 0.5), (x, y - h), (x + w * 0.6, y - h * 0.5)], fill=200, width=1
        )
        od.line([(x - w * 0.45, y - h * 0.55), (x - w * 0.45, y)], fill=180, width=1)
        od.line([(x + w * 0.45, y - h * 0.55), (x + w * 0.45, y)], fill=180, width=1)
    for b in scene.boats:
        x, y, L = g.px(b.x), g.px(b.y), g.px(b.length) * 0.6  # boats are tiny in shanshui
        od.arc(
            [x - L / 2, y - L * 0.5, x + L / 2, y], 20, 160, fill=230, width=max(1, round(L * 0.08))
        )
        od.ellipse([x - L * 0.08, y - L * 0.42, x + L * 0.08, y - L * 0.22], fill=220)  # fisher
        for k in range(2):  # a few ripples, the only marks on the blank water
            yy = y + L * (0.2 + 0.25 * k)
            od.line([(x - L * (0.8 - 0.2 * k), yy), (x - L * 0.2, yy)], fill=70, width=1)
    if scene.orb is not None:
        o = scene.orb
        x, y, r = g.px(o.x), g.px(o.y), g.px(o.radius)
        od.ellipse([x - r, y - r, x + r, y + r], outline=70, width=1)
    for _ in range(int(rng.integers(2, 5))):  # faint shore lines on the water near the bank
        yy = rng.uniform(scene.horizon + 0.03, 0.97) * S
        x0 = rng.uniform(0.05, 0.7) * S
        od.line([(x0, yy), (x0 + rng.uniform(0.05, 0.2) * S, yy)], fill=55, width=1)

    # A vertical column of calligraphy, placed in the emptiest top corner.
    text_x = (0.08 if _open_side(scene) < 0 else 0.9) * S
    if rng.random() < 0.75:
        cy = 0.06 * S
        char = 0.055 * S
        for _ in range(int(rng.integers(4, 8))):
            for _s in range(int(rng.integers(3, 6))):  # each glyph: a few short strokes in a square
                x0, y0 = text_x + rng.uniform(-0.4, 0.2) * char, cy + rng.uniform(0, 0.8) * char
                if rng.random() < 0.5:
                    od.line([(x0, y0), (x0 + rng.uniform(0.3, 0.6) * char, y0)], fill=230, width=1)
                else:
                    od.line(
                        [
                            (x0, y0),
                            (x0 + rng.uniform(-0.1, 0.1) * char, y0 + rng.uniform(0.3, 0.7) * char),
                        ],
                        fill=230,
                        width=1,
                    )
            cy += char * 1.15
        seal_y = cy + 0.02 * S
    else:
        seal_y = 0.06 * S
    objects = np.asarray(obj.filter(ImageFilter.GaussianBlur(0.35)), dtype=np.float32) / 255
    ink = np.maximum(ink, objects)
    ink = gaussian_filter(ink, 0.6)  # ink bleeding into paper

    paper_px = paper * (1 + 0.018 * fibre)[..., None]
    edge = np.minimum(np.minimum(g.yy, 1 - g.yy), np.minimum(g.xx, 1 - g.xx))
    paper_px = paper_px * (1 - 0.06 * np.exp(-edge / 0.04))[..., None]  # aged, darker edges
    if qianjiang:
        paper_px = _mix(paper_px, np.array([206, 176, 130]), wash[..., None])
    img = _mix(paper_px, _INK, ink[..., None])

    # The red seal: a square vermilion stamp with carved (blank) lines, slightly uneven.
    s = int(0.085 * S)
    sx = int(np.clip(text_x - s / 2, 2, S - s - 2))
    sy = int(min(seal_y, S * 0.5))
    seal = Image.new("L", (s, s), 255)
    sdraw = ImageDraw.Draw(seal)
    for _ in range(int(rng.integers(3, 6))):
        a, b = rng.uniform(0.2, 0.8, 2) * s
        if rng.random() < 0.5:
            sdraw.line([(s * 0.2, a), (s * 0.8, a)], fill=0, width=1)
        else:
            sdraw.line([(b, s * 0.2), (b, s * 0.8)], fill=0, width=1)
    patch = (slice(sy, sy + s), slice(sx, sx + s))
    cover = np.asarray(seal, dtype=np.float32) / 255 * _smoothstep(-1.6, -0.8, fibre[patch])
    img[patch] = _mix(img[patch], _SEAL, 0.92 * cover[..., None])

    out = _downsample(_to_image(img))
    out += rng.normal(0, 1.0, (size, size, 1))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Japanese ukiyo-e: flat colour blocks, an even dark key-block outline, bokashi, waves, cartouche.
# ---------------------------------------------------------------------------------------------

_UK = {
    "paper": (238, 224, 192),
    "prussian": (30, 66, 116),
    "indigo": (40, 48, 84),
    "sky_blue": (122, 168, 196),
    "vermilion": (212, 72, 42),
    "ochre": (206, 154, 74),
    "green": (88, 130, 80),
    "dark_green": (46, 82, 62),
    "key": (34, 28, 32),
    "snow": (246, 240, 224),
    "rose": (226, 150, 120),
}


def _outline(labels: np.ndarray, width: int) -> np.ndarray:
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


class _LabelledCanvas:
    """A colour image and a label map drawn together: every `shape` gets its own label, so
    `outlined` can trace an even dark line around each one (the key block of a print, the contour
    of a panel painting). `draw` paints the colour image alone (texture that takes no outline)."""

    def __init__(self, img: np.ndarray, labels: np.ndarray) -> None:
        self.image = _to_image(img)
        self.draw = ImageDraw.Draw(self.image)
        self._labels = Image.fromarray(labels, "L")
        self._label_draw = ImageDraw.Draw(self._labels)
        self._next = iter(range(_FIRST_OBJECT, 255))

    def shape(self, kind: str, xy: Any, colour: Any) -> None:
        label = next(self._next)
        getattr(self.draw, kind)(xy, fill=_rgb(colour))
        getattr(self._label_draw, kind)(xy, fill=label)

    def outlined(self, colour: np.ndarray, width: int) -> np.ndarray:
        """The colour image as float32 (H, W, 3) with `colour` lines `width` px wide between areas."""
        img = np.asarray(self.image, dtype=np.float32).copy()
        img[_outline(np.asarray(self._labels), width)] = colour
        return img


def _ukiyoe(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    S = 2 * size
    g = _Geom(scene, S)
    P = {k: np.array(v, dtype=np.float32) for k, v in _UK.items()}
    sunset = scene.orb is not None and scene.orb.kind == "sun" and rng.random() < 0.5
    band = rng.uniform(0.22, 0.34)
    top_t = _smoothstep(0.0, band, g.yy)  # bokashi: printed gradient at the top of the sky
    sky = _mix(P["prussian"], P["paper"], top_t[..., None])
    if sunset:
        glow = _smoothstep(scene.horizon - 0.25, scene.horizon, g.yy)
        sky = _mix(sky, P["rose"], (0.8 * glow)[..., None])
    img = np.broadcast_to(sky, (S, S, 3)).copy()

    n = len(scene.ridges)
    far_cols = (
        [P["sky_blue"], P["green"], P["dark_green"]][-n:]
        if not scene.cone
        else ([P["prussian"], P["green"], P["dark_green"]][:n])
    )
    if n == 2 and scene.cone:
        far_cols = [P["prussian"], P["dark_green"]]
    for i, (top, m) in enumerate(zip(g.tops, g.masks, strict=True)):
        col = far_cols[i]
        # Mountain bokashi: a darker band printed along the ridge line, flat below it.
        edge_t = _smoothstep(0.0, 0.05, g.yy - top[None, :])
        layer = _mix(col * 0.72, col, edge_t[..., None])
        if i == 0 and scene.cone:
            peak = float(top.min())
            snow_line = peak + 0.09 + 0.012 * np.sin(g.c * 90)[None, :]  # jagged snow cap edge
            layer = np.where((g.yy < snow_line)[..., None], P["snow"], layer)
        img = np.where(m[..., None], layer, img)

    wt = _smoothstep(scene.horizon, scene.horizon + 0.12, g.yy)
    water = _mix(P["prussian"], P["sky_blue"], (0.75 * wt)[..., None])  # dark at the far water line
    img = np.where(g.water[..., None], water, img)
    bank_t = g.yy - g.bank_top[None, :]
    bank = np.where((bank_t < 0.03)[..., None], P["green"], P["ochre"])
    img = np.where(g.bank_mask[..., None], bank, img)

    labels = g.labels.copy()
    if scene.cone:
        peak = float(g.tops[0].min())
        labels[(labels == 1) & (g.yy < peak + 0.09 + 0.012 * np.sin(g.c * 90)[None, :])] = 15

    canvas = _LabelledCanvas(img, labels)
    d, shape = canvas.draw, canvas.shape

    # Stylised waves: rows of scalloped crests on the water, drawn into the colour layer only.
    wave_rows = np.arange(scene.horizon + 0.05, 1.0, rng.uniform(0.05, 0.07))
    foam = _UK["snow"]
    for wy in wave_rows:
        depth = (wy - scene.horizon) / (1 - scene.horizon)
        r = S * (0.015 + 0.03 * depth)
        x = -rng.uniform(0, 2 * r)
        while x < S + r:
            y = wy * S + rng.normal(0, r * 0.1)
            ix, iy = int(np.clip(x, 0, S - 1)), int(np.clip(y, 0, S - 1))
            if g.water[iy, ix]:
                d.arc(
                    [x - r, y - r * 0.7, x + r, y + r * 0.7],
                    190,
                    350,
                    fill=foam,
                    width=max(1, S // 100),
                )
                # The claw: small hooked tips curling forward at the crest.
                d.ellipse([x + r * 0.4, y - r * 0.75, x + r * 0.75, y - r * 0.45], fill=foam)
            x += 2 * r * rng.uniform(0.9, 1.2)

    if scene.orb is not None:
        o = scene.orb
        x, y, r = g.px(o.x), g.px(o.y), g.px(o.radius)
        shape(
            "ellipse",
            [x - r, y - r, x + r, y + r],
            P["vermilion"] if o.kind == "sun" else P["snow"],
        )
    for tr in sorted(scene.trees, key=lambda t: t.y):
        x, y, h, w = _tree_px(g, tr)
        shape("rectangle", [x - w * 0.07, y - h * 0.45, x + w * 0.07, y], (120, 80, 50))
        if tr.kind == "pine":  # umbrella pine: flat stacked pads
            for k in range(3):
                cy = y - h * (0.5 + 0.18 * k)
                hw = w * (0.55 - 0.12 * k)
                shape("ellipse", [x - hw, cy - h * 0.1, x + hw, cy + h * 0.06], P["dark_green"])
        else:
            shape("ellipse", [x - w / 2, y - h, x + w / 2, y - h * 0.35], P["green"])
    if scene.hut is not None:
        hu = scene.hut
        x, y, w, h = g.px(hu.x), g.px(hu.y), g.px(hu.width), g.px(hu.height)
        shape("rectangle", [x - w / 2, y - h * 0.6, x + w / 2, y], P["paper"])
        shape(
            "polygon",
            [(x - w * 0.65, y - h * 0.55), (x, y - h * 1.05), (x + w * 0.65, y - h * 0.55)],
            P["vermilion"],
        )
    for b in scene.boats:
        x, y, L = g.px(b.x), g.px(b.y), g.px(b.length)
        if b.sail:
            shape(
                "polygon",
                [(x, y - L * 0.85), (x, y - L * 0.2), (x + b.heading * L * 0.36, y - L * 0.2)],
                P["paper"],
            )
        shape(
            "polygon",
            [
                (x - L / 2, y - L * 0.16),
                (x + L / 2, y - L * 0.16),
                (x + L * 0.36, y),
                (x - L * 0.36, y),
            ],
            P["ochre"],
        )

    # Title cartouche: a tall rectangle in the emptier top corner, with a column of text.
    cw, ch = int(0.1 * S), int(0.3 * S)
    cx0 = int(0.05 * S) if _open_side(scene) < 0 else S - cw - int(0.05 * S)
    cy0 = int(0.05 * S)
    fill = P["ochre"] if rng.random() < 0.5 else P["rose"]
    shape("rectangle", [cx0, cy0, cx0 + cw, cy0 + ch], fill)

    img = canvas.outlined(P["key"], max(2, round(S / 64)))
    for k in range(int(rng.integers(4, 8))):  # title glyphs inside the cartouche
        gy = cy0 + ch * (0.1 + 0.12 * k)
        gx = cx0 + cw * 0.3
        glyph_w = cw * rng.uniform(0.25, 0.45)
        img[int(gy) : int(gy + ch * 0.06), int(gx) : int(gx + glyph_w)] = P["key"]

    grain = 0.015 * _noise(rng, S, (S // 4, S))
    grain = grain + 0.025 * rng.standard_normal((S, S)).astype(np.float32)
    img = img * (1 + grain)[..., None]  # paper fibre shows through every block
    out = _downsample(_to_image(img))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Impressionist oil: short directional strokes of broken, high-key colour over a canvas weave.
# ---------------------------------------------------------------------------------------------

# Pure hues each area's strokes draw from: sky, water, near land, and foreground.
_AREA_HUES = np.array(
    [
        [[120, 190, 230], [235, 120, 150], [250, 210, 70], [140, 100, 200]],
        [[70, 110, 220], [60, 170, 120], [140, 100, 200], [120, 190, 230]],
        [[60, 170, 120], [140, 100, 200], [250, 210, 70], [240, 130, 60]],
        [[250, 210, 70], [60, 170, 120], [240, 130, 60], [70, 110, 220]],
    ],
    dtype=np.float32,
)


def _impressionist(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    S = 2 * size
    g = _Geom(scene, S)
    warm = rng.random() < 0.5
    sky_top = np.array([118, 164, 228]) + rng.normal(0, 8, 3)
    sky_low = np.array([250, 222, 190]) if warm else np.array([232, 236, 222])
    t = np.clip(g.yy / scene.horizon, 0, 1)
    base = np.broadcast_to(_mix(sky_top, sky_low, t[..., None]), (S, S, 3)).copy()
    clouds = _smoothstep(0.5, 1.6, _noise(rng, S, (3, 6)))
    base = _mix(base, np.array([252, 240, 236]), (0.7 * clouds * (1 - t))[..., None])
    angle = np.full((S, S), rng.uniform(0.25, 0.6), dtype=np.float32)  # sky strokes lean one way

    for ridge, top, m in zip(scene.ridges, g.tops, g.masks, strict=True):
        far = ridge.depth
        # Shadows go blue and violet, never black; distance pushes everything to lilac.
        lit = _mix(np.array([132, 176, 84]), np.array([206, 170, 204]), far)
        shadow = _mix(np.array([70, 96, 168]), np.array([150, 140, 210]), far)
        k = 0.5 + 0.5 * _slope_shade(top, S, 7)[None, :]
        layer = _mix(shadow, lit, (1 - k)[..., None])
        v = np.clip((g.yy - top[None, :]) / (ridge.base - top[None, :] + 1e-3), 0, 1)
        layer = _mix(layer, sky_low, (0.45 * v)[..., None])
        base = np.where(m[..., None], layer, base)
        slope_ang = np.arctan(np.gradient(top) * S)[None, :]
        angle = np.where(m, np.broadcast_to(slope_ang, (S, S)), angle)

    refl = _mirror_rows(g, base, np.zeros((S, S)))
    water = _mix(refl, np.array([62, 112, 200]), 0.55)
    base = np.where(g.water[..., None], water, base)
    angle = np.where(g.water, 0.0, angle)
    bt = np.clip((g.yy - g.bank_top[None, :]) / 0.2, 0, 1)
    bank = _mix(np.array([190, 206, 96]), np.array([76, 126, 140]), bt[..., None])
    base = np.where(g.bank_mask[..., None], bank, base)
    angle = np.where(g.bank_mask, 1.35, angle)  # grass strokes stand upright

    pil = _to_image(base)
    d = ImageDraw.Draw(pil)
    for tr in scene.trees:
        x, y, h, w = _tree_px(g, tr)
        d.ellipse([x - w / 2, y - h, x + w / 2, y - h * 0.25], fill=(70, 128, 96))
        d.ellipse([x - w * 0.45, y - h, x, y - h * 0.55], fill=(176, 200, 90))
        d.line([(x, y), (x, y - h * 0.4)], fill=(120, 90, 150), width=max(1, round(w * 0.1)))
    if scene.hut is not None:
        hu = scene.hut
        x, y, w, h = g.px(hu.x), g.px(hu.y), g.px(hu.width), g.px(hu.height)
        d.rectangle([x - w / 2, y - h * 0.6, x + w / 2, y], fill=(244, 220, 180))
        d.polygon(
            [(x - w * 0.62, y - h * 0.55), (x, y - h), (x + w * 0.62, y - h * 0.55)],
            fill=(214, 110, 80),
        )
    for b in scene.boats:
        x, y, L = g.px(b.x), g.px(b.y), g.px(b.length)
        d.polygon(
            _hull(x, y, L),
            fill=(150, 90, 120),
        )
        if b.sail:
            d.polygon(
                [(x, y - L * 0.8), (x, y - L * 0.2), (x + b.heading * L * 0.34, y - L * 0.2)],
                fill=(252, 246, 226),
            )
    if scene.orb is not None:
        disc, dd = _orb_disc(g, scene.orb)
        col = np.array([255, 226, 120]) if scene.orb.kind == "sun" else np.array([248, 244, 222])
        arr = np.asarray(pil, dtype=np.float32)
        arr = _mix(arr, col, np.clip(disc + 0.45 * np.exp(-((dd / 2.5) ** 2)), 0, 1)[..., None])
        pil = _to_image(arr)
    base = np.asarray(pil, dtype=np.float32)
    d = ImageDraw.Draw(pil)

    # Brushstrokes: every stroke takes the underlying colour and adds the chroma of a pure hue
    # picked from its area's palette (broken colour: hues sit side by side instead of being mixed).
    area = np.select([g.labels == SKY, g.labels == WATER, g.labels == BANK], [0, 1, 3], 2)
    far_area = np.zeros((S, S), dtype=bool)
    for ridge, m in zip(scene.ridges, g.masks, strict=True):
        far_area |= m & (ridge.depth > 0.7)
    area = np.where(far_area & (area == 2), 0, area)  # distant hills share the sky's airy hues
    for spacing, length, width, jitter in ((0.05, 0.08, 0.035, 0.45), (0.03, 0.05, 0.022, 0.3)):
        step = spacing * S
        gy, gx = np.mgrid[0:S:step, 0:S:step]
        n = gy.size
        pts = np.stack([gy.ravel(), gx.ravel()], 1) + rng.uniform(-step / 2, step / 2, (n, 2))
        pts = np.clip(pts, 0, S - 1)
        rng.shuffle(pts)
        iy, ix = pts[:, 0].astype(int), pts[:, 1].astype(int)
        choice = rng.integers(0, _AREA_HUES.shape[1], n)
        hue = _AREA_HUES[area[iy, ix], choice]
        c = base[iy, ix] + (hue - hue.mean(1, keepdims=True)) * rng.uniform(0.2, 0.5, (n, 1))
        c = c + rng.normal(0, 10, (n, 1))  # value jitter: impasto catches the light unevenly
        a = angle[iy, ix] + rng.normal(0, jitter, n)
        half = S * length * rng.uniform(0.7, 1.3, n) / 2
        dx, dy = np.cos(a) * half, np.sin(a) * half
        ends = np.stack(
            [pts[:, 1] - dx, pts[:, 0] - dy, pts[:, 1] + dx, pts[:, 0] + dy], 1
        ).tolist()
        fills = [tuple(v) for v in np.clip(c + 0.5, 0, 255).astype(int).tolist()]
        wpx = max(1, round(S * width))
        line = d.line
        for xy, fill in zip(ends, fills, strict=True):
            line(xy, fill=fill, width=wpx)

    if scene.orb is not None and scene.orb.kind == "sun":  # glitter path: horizontal dabs of light
        o = scene.orb
        for _ in range(int(S * 0.4)):
            y = rng.uniform(scene.horizon + 0.01, 1.0) * S
            x = (o.x + rng.normal(0, 0.04 + 0.1 * (y / S - scene.horizon))) * S
            if g.water[int(min(y, S - 1)), int(np.clip(x, 0, S - 1))]:
                L = S * rng.uniform(0.015, 0.04)
                d.line(
                    [(x - L, y), (x + L, y)],
                    fill=_rgb(np.array([255, 236, 170]) + rng.normal(0, 8, 3)),
                    width=max(1, S // 90),
                )

    img = np.asarray(pil, dtype=np.float32)
    lum = img.mean(2)
    relief = np.zeros_like(lum)
    relief[1:, 1:] = lum[1:, 1:] - lum[:-1, :-1]  # impasto: raised paint edges catch the light
    img = img + 0.25 * np.clip(relief, -30, 30)[..., None]
    weave = np.sin(np.arange(S) * math.pi / 1.5)
    canvas = 0.03 * weave[:, None] * weave[None, :] + 0.02 * rng.standard_normal((S, S))
    img = img * (1 + canvas)[..., None]
    img = 48 + img * (207 / 255)  # high key: the darkest paint is still a light colour, never black
    out = _downsample(_to_image(img))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


Renderer = Callable[[Scene, int, np.random.Generator], np.ndarray]
STYLE_RENDERERS: dict[str, Renderer] = {
    "photo": _photo,
    "inkwash": _inkwash,
    "ukiyoe": _ukiyoe,
    "impressionist": _impressionist,
}


def renderers() -> dict[str, Renderer]:
    """Every style's renderer: the four above and those of `styles_more` (imported here, not at
    module level, because they build on this module's helpers)."""
    from culturegan.data.styles_more import dotpainting, goldground

    return {**STYLE_RENDERERS, "goldground": goldground, "dotpainting": dotpainting}


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


def _label_font(
    text_width: int, texts: Sequence[str]
) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The largest default font (up to 16 px) in which every label fits its column."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for px in range(16, 6, -1):
        try:
            font = ImageFont.load_default(size=px)
        except (TypeError, OSError):  # a Pillow built without FreeType has one fixed bitmap font
            return ImageFont.load_default()
        if all(probe.textlength(t, font=font) <= text_width for t in texts):
            return font
    return font


def preview_grid(
    rows: Sequence[Sequence[np.ndarray]], styles: Sequence[str], min_tile: int = 128
) -> Image.Image:
    """A grid with one row per scene and one column per style, the style name above each column.

    Small images are enlarged by a whole factor (nearest neighbour) so their pixels stay visible.
    """
    size = rows[0][0].shape[0]
    factor = max(1, -(-min_tile // size))
    tile, gap, head = size * factor, 4, 22
    width = len(styles) * (tile + gap) + gap
    height = head + len(rows) * (tile + gap) + gap
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font = _label_font(tile, styles)
    for j, style in enumerate(styles):
        x = gap + j * (tile + gap)
        draw.text((x + tile / 2, head / 2 + 1), style, fill=(20, 20, 20), font=font, anchor="mm")
        for i, row in enumerate(rows):
            im = Image.fromarray(row[j], "RGB").resize((tile, tile), Image.Resampling.NEAREST)
            grid.paste(im, (x, head + i * (tile + gap)))
    return grid


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

    workers = params.data.workers or os.cpu_count() or 1
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
