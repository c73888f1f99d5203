"""Impressionist oil: short directional strokes of broken, high-key colour over a canvas weave."""

from __future__ import annotations

import math

import numpy as np
from PIL import ImageDraw

from culturegan.data.scene import Scene
from culturegan.data.styles.canvas import (
    BANK,
    SKY,
    WATER,
    Geom,
    downsample,
    hull,
    mirror_rows,
    mix,
    noise,
    orb_disc,
    rgb,
    slope_shade,
    smoothstep,
    to_image,
    tree_px,
)

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


def render(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    S = 2 * size
    g = Geom(scene, S)
    warm = rng.random() < 0.5
    sky_top = np.array([118, 164, 228]) + rng.normal(0, 8, 3)
    sky_low = np.array([250, 222, 190]) if warm else np.array([232, 236, 222])
    t = np.clip(g.yy / scene.horizon, 0, 1)
    base = np.broadcast_to(mix(sky_top, sky_low, t[..., None]), (S, S, 3)).copy()
    clouds = smoothstep(0.5, 1.6, noise(rng, S, (3, 6)))
    base = mix(base, np.array([252, 240, 236]), (0.7 * clouds * (1 - t))[..., None])
    angle = np.full((S, S), rng.uniform(0.25, 0.6), dtype=np.float32)  # sky strokes lean one way

    for ridge, top, m in zip(scene.ridges, g.tops, g.masks, strict=True):
        far = ridge.depth
        # Shadows go blue and violet, never black; distance pushes everything to lilac.
        lit = mix(np.array([132, 176, 84]), np.array([206, 170, 204]), far)
        shadow = mix(np.array([70, 96, 168]), np.array([150, 140, 210]), far)
        k = 0.5 + 0.5 * slope_shade(top, S, 7)[None, :]
        layer = mix(shadow, lit, (1 - k)[..., None])
        v = np.clip((g.yy - top[None, :]) / (ridge.base - top[None, :] + 1e-3), 0, 1)
        layer = mix(layer, sky_low, (0.45 * v)[..., None])
        base = np.where(m[..., None], layer, base)
        slope_ang = np.arctan(np.gradient(top) * S)[None, :]
        angle = np.where(m, np.broadcast_to(slope_ang, (S, S)), angle)

    refl = mirror_rows(g, base, np.zeros((S, S)))
    water = mix(refl, np.array([62, 112, 200]), 0.55)
    base = np.where(g.water[..., None], water, base)
    angle = np.where(g.water, 0.0, angle)
    bt = np.clip((g.yy - g.bank_top[None, :]) / 0.2, 0, 1)
    bank = mix(np.array([190, 206, 96]), np.array([76, 126, 140]), bt[..., None])
    base = np.where(g.bank_mask[..., None], bank, base)
    angle = np.where(g.bank_mask, 1.35, angle)  # grass strokes stand upright

    pil = to_image(base)
    d = ImageDraw.Draw(pil)
    for tr in scene.trees:
        x, y, h, w = tree_px(g, tr)
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
            hull(x, y, L),
            fill=(150, 90, 120),
        )
        if b.sail:
            d.polygon(
                [(x, y - L * 0.8), (x, y - L * 0.2), (x + b.heading * L * 0.34, y - L * 0.2)],
                fill=(252, 246, 226),
            )
    if scene.orb is not None:
        disc, dd = orb_disc(g, scene.orb)
        col = np.array([255, 226, 120]) if scene.orb.kind == "sun" else np.array([248, 244, 222])
        arr = np.asarray(pil, dtype=np.float32)
        arr = mix(arr, col, np.clip(disc + 0.45 * np.exp(-((dd / 2.5) ** 2)), 0, 1)[..., None])
        pil = to_image(arr)
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
                    fill=rgb(np.array([255, 236, 170]) + rng.normal(0, 8, 3)),
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
    out = downsample(to_image(img))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
