"""Photo: the neutral source."""

from __future__ import annotations

import numpy as np
from PIL import ImageDraw, ImageFilter

from culturegan.data.scene import Scene
from culturegan.data.styles.canvas import (
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


def render(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    S = 2 * size
    g = Geom(scene, S)
    sky_top = np.array([58, 108, 190]) + rng.normal(0, 8, 3)
    haze = np.array([206, 220, 234]) + rng.normal(0, 5, 3)
    t = np.clip(g.yy / scene.horizon, 0, 1) ** 0.9
    img = np.broadcast_to(mix(sky_top, haze, t[..., None]), (S, S, 3)).copy()

    clouds = noise(rng, S, (8, 3)) + 0.5 * noise(rng, S, (20, 8))  # wide, flat cumulus banks
    cover = smoothstep(0.7, 2.0, clouds) * (0.85 - 0.55 * t)
    img = mix(img, np.array([246, 246, 248]), cover[..., None])

    if scene.orb is not None:
        disc, d = orb_disc(g, scene.orb)
        if scene.orb.kind == "sun":
            glow = 0.55 * np.exp(-((d / 5) ** 2))
            img = mix(img, np.array([255, 238, 200]), glow[..., None])
            img = mix(img, np.array([255, 251, 238]), disc[..., None])
        else:
            img = mix(img, np.array([236, 236, 228]), (0.9 * disc)[..., None])

    far_haze = mix(haze, sky_top, 0.3)  # distant slopes turn blue as well as light
    forest = [np.array([44, 70, 46]), np.array([58, 74, 52]), np.array([50, 78, 44])]
    rock = np.array([118, 112, 102])
    for i, ridge in enumerate(scene.ridges):
        top, m = g.tops[i], g.masks[i]
        a = 0.08 + 0.55 * ridge.depth**1.4  # atmospheric perspective: far is lighter and bluer
        below = np.clip((g.yy - top[None, :]) / (ridge.base - top[None, :] + 1e-3), 0, 1)
        # Bare rock near the summit, forest lower down; gullies run down the slopes.
        col = mix(
            rock,
            forest[int(rng.integers(0, 3))] + rng.normal(0, 5, 3),
            smoothstep(0.0, 0.35, below)[..., None],
        )
        if i == 0 and scene.cone:
            col = mix(
                np.array([242, 244, 248]),
                col,
                smoothstep(0.2, 0.3, below + 0.03 * noise(rng, S, (2, 30)))[..., None],
            )
        shade = 1 + 0.3 * slope_shade(top, S, 5)[None, :]
        tex = (
            0.05 * noise(rng, S, (3, 40))
            + 0.07 * noise(rng, S, (16, 16))
            + 0.05 * noise(rng, S, (S // 3, S // 3))
        )
        layer = col * (shade + tex * (1 - 0.6 * ridge.depth))[..., None]
        layer = mix(layer, far_haze, a)
        # Valley mist towards the water line.
        layer = mix(layer, haze, (0.4 * below**2.5)[..., None])
        img = np.where(m[..., None], layer, img)

    ripple = 2.5 * noise(rng, S, (40, 6))
    refl = mirror_rows(g, img, ripple)
    deep = np.array([36, 66, 86]) + rng.normal(0, 5, 3)
    wt = np.clip((g.yy - scene.horizon) / (1 - scene.horizon), 0, 1)
    water = mix(refl * 0.82, deep, (0.25 + 0.45 * wt)[..., None])
    water = water * (1 + 0.05 * noise(rng, S, (60, 5)))[..., None]
    img = np.where(g.water[..., None], water, img)

    grass = np.array([72, 104, 52]) + rng.normal(0, 6, 3)
    bt = np.clip((g.yy - g.bank_top[None, :]) / 0.25, 0, 1)
    grain = 0.08 * noise(rng, S, (24, 24)) + 0.05 * noise(rng, S, (60, 60))
    bank = grass * (1.05 - 0.4 * bt + grain)[..., None]
    img = np.where(g.bank_mask[..., None], bank, img)

    pil = to_image(img)
    d = ImageDraw.Draw(pil)
    for tr in sorted(scene.trees, key=lambda t: t.y):
        x, y, h, w = tree_px(g, tr)
        far = tr.height < 0.06
        dark = np.array([28, 58, 38]) if tr.kind == "pine" else np.array([46, 86, 40])
        if far:
            dark = mix(dark, haze, 0.25)
        light = dark * 1.45
        d.rectangle([x - w * 0.05, y - h * 0.35, x + w * 0.05, y], fill=rgb([70, 52, 40]))
        if tr.kind == "pine":
            for k in range(3):
                ty = y - h + k * h * 0.25
                hw = w * (0.25 + 0.15 * k)
                d.polygon(
                    [(x, ty), (x - hw, ty + h * 0.38), (x + hw, ty + h * 0.38)], fill=rgb(dark)
                )
                d.polygon([(x, ty), (x - hw, ty + h * 0.38), (x, ty + h * 0.38)], fill=rgb(light))
        else:
            d.ellipse([x - w / 2, y - h, x + w / 2, y - h * 0.28], fill=rgb(dark))
            d.ellipse([x - w * 0.4, y - h * 0.98, x + w * 0.1, y - h * 0.55], fill=rgb(light))
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
            hull(x, y, L),
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
    out = downsample(pil)

    r2 = ((g.c[::2, None] - 0.5) ** 2 + (g.c[None, ::2] - 0.5) ** 2) * 2
    out = out * (1 - 0.22 * r2[..., None] ** 1.5)  # vignetting
    out += rng.normal(0, 2.2, (size, size, 1)) + rng.normal(0, 1.2, (size, size, 3))  # sensor noise
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
