"""Chinese ink wash: ink density on warm paper; mist and water left blank."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.ndimage import gaussian_filter

from culturegan.data.scene import Scene
from culturegan.data.styles.canvas import (
    Geom,
    downsample,
    mix,
    noise,
    open_side,
    smoothstep,
    to_image,
    tree_px,
)

_INK = np.array([24, 22, 22], dtype=np.float32)
_SEAL = np.array([184, 42, 34], dtype=np.float32)


def _dry(mask: np.ndarray, fibre: np.ndarray, keep: float) -> np.ndarray:
    """Break a stroke mask like a dry brush: keep only where the fibrous noise is high enough."""
    return mask * smoothstep(-keep - 0.4, -keep + 0.4, fibre)


def render(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    S = 2 * size
    g = Geom(scene, S)
    paper = np.array([236, 228, 206]) + rng.normal(0, 3, 3)
    # Streaky paper fibres; also what breaks dry-brush strokes and the seal's print.
    fibre = noise(rng, S, (6, 60)) * 0.6 + noise(rng, S, (S // 2, S // 2)) * 0.8
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
        mist = 1 - smoothstep(0.45, 0.95, below + 0.15 * noise(rng, S, (4, 10)))
        body = tone * (0.3 + 0.4 * np.exp(-dist * 1.4)) * mist
        body = body * (1 + 0.3 * noise(rng, S, (10, 14)))
        line_w = (1.0 + 2.2 * (1 - ridge.depth)) / S * (1 + 0.4 * noise(rng, S, (1, 12))[0])
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
        x, y, h, w = tree_px(g, tr)
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
    text_x = (0.08 if open_side(scene) < 0 else 0.9) * S
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
        paper_px = mix(paper_px, np.array([206, 176, 130]), wash[..., None])
    img = mix(paper_px, _INK, ink[..., None])

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
    cover = np.asarray(seal, dtype=np.float32) / 255 * smoothstep(-1.6, -0.8, fibre[patch])
    img[patch] = mix(img[patch], _SEAL, 0.92 * cover[..., None])

    out = downsample(to_image(img))
    out += rng.normal(0, 1.0, (size, size, 1))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
