"""Gold-ground panel painting (Italo-Byzantine / Gothic Europe, 13th-15th c.), a culture added to the
benchmark on the same scenes (../shared/STYLES.md): a burnished, tooled gold sky, stepped stylised
rocks with linear hatching, flat saturated colour with dark outlines, water as flat blue with
wavy lines, a pointed-arch frame and craquelure.

It draws the scene's geometry (`culturegan.data.scene.Scene`) and nothing else, so every transfer
into or out of this style keeps its ground truth.
"""

from __future__ import annotations

import numpy as np

from culturegan.data.scene import Scene
from culturegan.data.styles.canvas import (
    BANK,
    SKY,
    WATER,
    Geom,
    LabelledCanvas,
    downsample,
    noise,
    rgb,
    to_image,
    tree_px,
)

_GOLD = {
    "gold": (212, 168, 72),
    "gold_dark": (160, 118, 40),
    "lapis": (36, 62, 150),
    "vermilion": (200, 56, 36),
    "green": (38, 96, 60),
    "rock": (176, 150, 110),
    "rock_dark": (120, 96, 70),
    "outline": (46, 30, 20),
    "frame": (96, 34, 26),
    "white": (236, 228, 206),
}


def _stepped(profile_px: np.ndarray, step: float) -> np.ndarray:
    """A ridge line quantised into flat terraces: the stepped rocks of panel painting."""
    return np.floor(profile_px / step) * step


def render(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    S = 2 * size
    g = Geom(scene, S)
    P = {k: np.array(v, dtype=np.float32) for k, v in _GOLD.items()}
    # Burnished gold: a soft sheen across the leaf, punched dots in rows (tooling).
    sheen = 0.08 * noise(rng, S, (3, 3))
    img = np.broadcast_to(P["gold"], (S, S, 3)) * (1 + sheen)[..., None]
    img = img.copy()
    punch = max(2, S // 32)
    for y in range(punch, int(scene.horizon * S), punch * 2):
        img[y, punch :: punch * 2] = P["gold_dark"]

    labels = np.full((S, S), SKY, dtype=np.uint8)
    step = S / 24
    for i, top in enumerate(g.tops):
        top_px = _stepped(top * S, step) / S
        mask = (g.yy >= top_px[None, :]) & (g.yy < scene.ridges[i].base)
        colour = P["rock"] if i % 2 == 0 else P["rock_dark"]
        layer = np.broadcast_to(colour, (S, S, 3)).copy()
        # linear modelling: short parallel hatching strokes instead of soft shading
        hatch = ((np.arange(S)[:, None] + np.arange(S)[None, :]) % max(3, S // 20)) == 0
        layer[hatch] = colour * 0.7
        img = np.where(mask[..., None], layer, img)
        labels[mask] = 1 + i
    water = g.water
    img[water] = P["lapis"]
    labels[water] = WATER
    wave_gap = rng.uniform(0.04, 0.06)
    for wy in np.arange(scene.horizon + wave_gap / 2, 1.0, wave_gap):
        phase = rng.uniform(0, 2 * np.pi)
        ys = (wy + 0.008 * np.sin(g.c * 40 + phase)) * S
        for x, y in zip(range(S), ys.astype(int), strict=True):
            if 0 <= y < S and water[y, x]:
                img[y, x] = P["white"]
    img[g.bank_mask] = P["green"]
    labels[g.bank_mask] = BANK

    canvas = LabelledCanvas(img, labels)
    d, shape = canvas.draw, canvas.shape

    if scene.orb is not None:  # a tooled gold disc, like a halo, with a ring of punches
        o = scene.orb
        x, y, r = g.px(o.x), g.px(o.y), g.px(o.radius) * 1.2
        shape("ellipse", [x - r, y - r, x + r, y + r], P["gold"] * 1.08)
        for a in np.linspace(0, 2 * np.pi, 16, endpoint=False):
            px, py = x + 0.75 * r * np.cos(a), y + 0.75 * r * np.sin(a)
            d.point((px, py), fill=rgb(P["gold_dark"]))
    for tr in sorted(scene.trees, key=lambda t: t.y):
        x, y, h, w = tree_px(g, tr)
        shape("rectangle", [x - w * 0.08, y - h * 0.5, x + w * 0.08, y], P["rock_dark"])
        shape("ellipse", [x - w / 2, y - h, x + w / 2, y - h * 0.4], P["green"])
    canvas.hut_and_boats(g, scene, P["white"], P["vermilion"], P["white"], P["vermilion"], eave=0.6, ridge=1.1)

    img = canvas.outlined(P["outline"], max(2, round(S / 64)))
    # Pointed-arch (ogival) frame: outside two circular arcs meeting at the apex is the frame.
    xx, yy = np.meshgrid(np.arange(S) + 0.5, np.arange(S) + 0.5)
    margin, radius = 0.06 * S, 0.95 * S
    spring = 0.42 * S  # where the arch springs from the vertical sides
    left = (xx - (margin + radius)) ** 2 + (yy - spring) ** 2 > radius**2
    right = (xx - (S - margin - radius)) ** 2 + (yy - spring) ** 2 > radius**2
    outside = ((left | right) & (yy < spring)) | (xx < margin) | (xx > S - margin)
    img[outside] = P["frame"]
    # Craquelure: fine dark cracks across the whole panel.
    crack = noise(rng, S, (12, 12))
    img[np.abs(crack) < 0.03] *= 0.72
    out = downsample(to_image(img))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
