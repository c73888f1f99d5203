"""Two more cultures for the embedded benchmark, on the same scenes (../shared/STYLES.md):

- gold-ground panel painting (Italo-Byzantine / Gothic Europe, 13th-15th c.): a burnished, tooled
  gold sky, stepped stylised rocks with linear hatching, flat saturated colour with dark outlines,
  water as flat blue with wavy lines, a pointed-arch frame and craquelure;
- Australian Aboriginal dot painting: every area of the scene filled with dots of earth colours on
  a dark ground, boundaries traced as dotted tracks, the sun as concentric rings (a waterhole).

Each renderer draws the scene's geometry (`synthetic.Scene`) and nothing else, so every transfer
into or out of these styles keeps its ground truth.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from culturegan.data.synthetic import (
    BANK,
    SKY,
    WATER,
    Scene,
    _downsample,
    _Geom,
    _LabelledCanvas,
    _noise,
    _outline,
    _rgb,
    _to_image,
    _tree_px,
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


def goldground(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    S = 2 * size
    g = _Geom(scene, S)
    P = {k: np.array(v, dtype=np.float32) for k, v in _GOLD.items()}
    # Burnished gold: a soft sheen across the leaf, punched dots in rows (tooling).
    sheen = 0.08 * _noise(rng, S, (3, 3))
    img = np.broadcast_to(P["gold"], (S, S, 3)) * (1 + sheen)[..., None]
    img = img.copy()
    punch = max(2, S // 32)
    for y in range(punch, int(scene.horizon * S), punch * 2):
        img[y, punch::punch * 2] = P["gold_dark"]

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

    canvas = _LabelledCanvas(img, labels)
    d, shape = canvas.draw, canvas.shape

    if scene.orb is not None:  # a tooled gold disc, like a halo, with a ring of punches
        o = scene.orb
        x, y, r = g.px(o.x), g.px(o.y), g.px(o.radius) * 1.2
        shape("ellipse", [x - r, y - r, x + r, y + r], P["gold"] * 1.08)
        for a in np.linspace(0, 2 * np.pi, 16, endpoint=False):
            px, py = x + 0.75 * r * np.cos(a), y + 0.75 * r * np.sin(a)
            d.point((px, py), fill=_rgb(P["gold_dark"]))
    for tr in sorted(scene.trees, key=lambda t: t.y):
        x, y, h, w = _tree_px(g, tr)
        shape("rectangle", [x - w * 0.08, y - h * 0.5, x + w * 0.08, y], P["rock_dark"])
        shape("ellipse", [x - w / 2, y - h, x + w / 2, y - h * 0.4], P["green"])
    if scene.hut is not None:
        hu = scene.hut
        x, y, w, h = g.px(hu.x), g.px(hu.y), g.px(hu.width), g.px(hu.height)
        shape("rectangle", [x - w / 2, y - h * 0.6, x + w / 2, y], P["white"])
        shape("polygon", [(x - w * 0.6, y - h * 0.55), (x, y - h * 1.1), (x + w * 0.6, y - h * 0.55)], P["vermilion"])
    for b in scene.boats:
        x, y, L = g.px(b.x), g.px(b.y), g.px(b.length)
        if b.sail:
            shape("polygon", [(x, y - L * 0.85), (x, y - L * 0.2), (x + b.heading * L * 0.36, y - L * 0.2)], P["white"])
        shape("polygon", [(x - L / 2, y - L * 0.16), (x + L / 2, y - L * 0.16), (x + L * 0.36, y), (x - L * 0.36, y)], P["vermilion"])

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
    crack = _noise(rng, S, (12, 12))
    img[np.abs(crack) < 0.03] *= 0.72
    out = _downsample(_to_image(img))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


_DOT = {
    "ground": (44, 26, 20),
    "ochre": (222, 168, 64),
    "red": (170, 66, 40),
    "white": (238, 232, 220),
    "pink": (214, 140, 120),
    "brown": (120, 70, 40),
}
# area label -> the dot colour families it draws from (earth palette on a dark ground)
_DOT_AREAS = {SKY: ("ochre", "pink"), WATER: ("white", "pink"), BANK: ("red", "brown")}
_DOT_RIDGES = (("red", "ochre"), ("ochre", "white"), ("brown", "red"))


def dotpainting(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    S = 2 * size
    g = _Geom(scene, S)
    pil = Image.new("RGB", (S, S), _DOT["ground"])
    d = ImageDraw.Draw(pil)
    spacing = max(4.0, S / 15)  # about 4 px between dots at 64 px: dots, not a texture
    r = spacing * 0.3
    labels = g.labels

    def colour_of(label: int) -> tuple[int, int, int]:
        if label in _DOT_AREAS:
            names = _DOT_AREAS[label]
        else:
            names = _DOT_RIDGES[(label - 1) % len(_DOT_RIDGES)]
        return _DOT[names[int(rng.random() < 0.3)]]

    # Fields of dots on a jittered grid, each taking its area's colour.
    edge = _outline(labels, 1)
    ys = np.arange(spacing / 2, S, spacing)
    for row, y in enumerate(ys):
        offset = spacing / 2 if row % 2 else 0.0
        for x in np.arange(spacing / 2 + offset, S, spacing):
            jx, jy = x + rng.normal(0, spacing * 0.08), y + rng.normal(0, spacing * 0.08)
            ix, iy = int(np.clip(jx, 0, S - 1)), int(np.clip(jy, 0, S - 1))
            if edge[iy, ix]:
                continue  # boundaries are left to the tracks
            d.ellipse([jx - r, jy - r, jx + r, jy + r], fill=colour_of(int(labels[iy, ix])))
    # Tracks: every boundary between areas as a line of small white dots.
    track = np.argwhere(_outline(labels, 1))
    small = max(1.0, r * 0.55)
    for iy, ix in track[:: max(1, int(spacing // 2))]:
        d.ellipse([ix - small, iy - small, ix + small, iy + small], fill=_DOT["white"])
    if scene.orb is not None:  # the sun as a waterhole: concentric rings of dots
        o = scene.orb
        cx, cy, rad = g.px(o.x), g.px(o.y), g.px(o.radius) * 1.3
        d.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], fill=_DOT["ground"])
        for k, ring in enumerate(np.linspace(rad * 0.25, rad, 4)):
            n = max(6, int(2 * np.pi * ring / (spacing * 0.7)))
            for a in np.linspace(0, 2 * np.pi, n, endpoint=False):
                px, py = cx + ring * np.cos(a), cy + ring * np.sin(a)
                c = _DOT["white"] if k % 2 else _DOT["red"]
                d.ellipse([px - small, py - small, px + small, py + small], fill=c)
    for tr in scene.trees:  # trees as U-shapes (a person or a plant seen from above)
        x, y, h, w = _tree_px(g, tr)
        d.arc([x - w / 2, y - h * 0.8, x + w / 2, y], 0, 180, fill=_DOT["white"], width=max(1, int(small)))
    for b in scene.boats:  # boats as small concentric circles
        x, y, L = g.px(b.x), g.px(b.y), g.px(b.length) * 0.35
        d.ellipse([x - L, y - L, x + L, y + L], outline=_DOT["ochre"], width=max(1, int(small)))
    if scene.hut is not None:  # a camp: a circle with a dot at its centre
        hu = scene.hut
        x, y, w = g.px(hu.x), g.px(hu.y), g.px(hu.width) * 0.6
        d.ellipse([x - w, y - w, x + w, y + w], outline=_DOT["white"], width=max(1, int(small)))
        d.ellipse([x - small, y - small, x + small, y + small], fill=_DOT["red"])
    out = _downsample(pil)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
