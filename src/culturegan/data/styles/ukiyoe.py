"""Japanese ukiyo-e: flat colour blocks, an even dark key-block outline, bokashi, waves, cartouche."""

from __future__ import annotations

import numpy as np

from culturegan.data.scene import Scene
from culturegan.data.styles.canvas import (
    Geom,
    LabelledCanvas,
    downsample,
    mix,
    noise,
    open_side,
    smoothstep,
    to_image,
    tree_px,
)

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


def render(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    S = 2 * size
    g = Geom(scene, S)
    P = {k: np.array(v, dtype=np.float32) for k, v in _UK.items()}
    sunset = scene.orb is not None and scene.orb.kind == "sun" and rng.random() < 0.5
    band = rng.uniform(0.22, 0.34)
    top_t = smoothstep(0.0, band, g.yy)  # bokashi: printed gradient at the top of the sky
    sky = mix(P["prussian"], P["paper"], top_t[..., None])
    if sunset:
        glow = smoothstep(scene.horizon - 0.25, scene.horizon, g.yy)
        sky = mix(sky, P["rose"], (0.8 * glow)[..., None])
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
        edge_t = smoothstep(0.0, 0.05, g.yy - top[None, :])
        layer = mix(col * 0.72, col, edge_t[..., None])
        if i == 0 and scene.cone:
            peak = float(top.min())
            snow_line = peak + 0.09 + 0.012 * np.sin(g.c * 90)[None, :]  # jagged snow cap edge
            layer = np.where((g.yy < snow_line)[..., None], P["snow"], layer)
        img = np.where(m[..., None], layer, img)

    wt = smoothstep(scene.horizon, scene.horizon + 0.12, g.yy)
    water = mix(P["prussian"], P["sky_blue"], (0.75 * wt)[..., None])  # dark at the far water line
    img = np.where(g.water[..., None], water, img)
    bank_t = g.yy - g.bank_top[None, :]
    bank = np.where((bank_t < 0.03)[..., None], P["green"], P["ochre"])
    img = np.where(g.bank_mask[..., None], bank, img)

    labels = g.labels.copy()
    if scene.cone:
        peak = float(g.tops[0].min())
        labels[(labels == 1) & (g.yy < peak + 0.09 + 0.012 * np.sin(g.c * 90)[None, :])] = 15

    canvas = LabelledCanvas(img, labels)
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
        x, y, h, w = tree_px(g, tr)
        shape("rectangle", [x - w * 0.07, y - h * 0.45, x + w * 0.07, y], (120, 80, 50))
        if tr.kind == "pine":  # umbrella pine: flat stacked pads
            for k in range(3):
                cy = y - h * (0.5 + 0.18 * k)
                hw = w * (0.55 - 0.12 * k)
                shape("ellipse", [x - hw, cy - h * 0.1, x + hw, cy + h * 0.06], P["dark_green"])
        else:
            shape("ellipse", [x - w / 2, y - h, x + w / 2, y - h * 0.35], P["green"])
    canvas.hut_and_boats(g, scene, P["paper"], P["vermilion"], P["paper"], P["ochre"], eave=0.65, ridge=1.05)

    # Title cartouche: a tall rectangle in the emptier top corner, with a column of text.
    cw, ch = int(0.1 * S), int(0.3 * S)
    cx0 = int(0.05 * S) if open_side(scene) < 0 else S - cw - int(0.05 * S)
    cy0 = int(0.05 * S)
    fill = P["ochre"] if rng.random() < 0.5 else P["rose"]
    shape("rectangle", [cx0, cy0, cx0 + cw, cy0 + ch], fill)

    img = canvas.outlined(P["key"], max(2, round(S / 64)))
    for k in range(int(rng.integers(4, 8))):  # title glyphs inside the cartouche
        gy = cy0 + ch * (0.1 + 0.12 * k)
        gx = cx0 + cw * 0.3
        glyph_w = cw * rng.uniform(0.25, 0.45)
        img[int(gy) : int(gy + ch * 0.06), int(gx) : int(gx + glyph_w)] = P["key"]

    grain = 0.015 * noise(rng, S, (S // 4, S))
    grain = grain + 0.025 * rng.standard_normal((S, S)).astype(np.float32)
    img = img * (1 + grain)[..., None]  # paper fibre shows through every block
    out = downsample(to_image(img))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
