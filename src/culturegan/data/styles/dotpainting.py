"""Australian Aboriginal dot painting, a culture added to the benchmark on the same scenes
(../shared/STYLES.md): every area of the scene filled with dots of earth colours on a dark ground,
boundaries traced as dotted tracks, the sun as concentric rings (a waterhole).

It draws the scene's geometry (`culturegan.data.scene.Scene`) and nothing else, so every transfer
into or out of this style keeps its ground truth.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from culturegan.data.scene import Scene
from culturegan.data.styles.canvas import (
    BANK,
    SKY,
    WATER,
    Geom,
    downsample,
    outline,
    tree_px,
)

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


def render(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    S = 2 * size
    g = Geom(scene, S)
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
    edge = outline(labels, 1)
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
    track = np.argwhere(outline(labels, 1))
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
        x, y, h, w = tree_px(g, tr)
        d.arc(
            [x - w / 2, y - h * 0.8, x + w / 2, y],
            0,
            180,
            fill=_DOT["white"],
            width=max(1, int(small)),
        )
    for b in scene.boats:  # boats as small concentric circles
        x, y, L = g.px(b.x), g.px(b.y), g.px(b.length) * 0.35
        d.ellipse([x - L, y - L, x + L, y + L], outline=_DOT["ochre"], width=max(1, int(small)))
    if scene.hut is not None:  # a camp: a circle with a dot at its centre
        hu = scene.hut
        x, y, w = g.px(hu.x), g.px(hu.y), g.px(hu.width) * 0.6
        d.ellipse([x - w, y - w, x + w, y + w], outline=_DOT["white"], width=max(1, int(small)))
        d.ellipse([x - small, y - small, x + small, y + small], fill=_DOT["red"])
    out = downsample(pil)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
