"""The benchmark's scene model: random landscapes as geometry only, in normalised coordinates
(x right, y down, both in [0, 1]); every style renders the same scene (culturegan.data.styles).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROFILE_POINTS = 129  # samples of a ridge profile over x in [0, 1]
PX = np.linspace(0.0, 1.0, PROFILE_POINTS)  # the x of each profile sample
_SCENE_SALT = 0x5CE7E  # keeps scene streams apart from the per-style render streams


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
    """1-D fractal noise over PX in about [-1, 1]: jagged ridge detail."""
    out = np.zeros(PROFILE_POINTS)
    amp, cells, total = 1.0, base_cells, 0.0
    for _ in range(octaves):
        knots = np.linspace(0, 1, cells + 1)
        out += amp * np.interp(PX, knots, rng.uniform(-1, 1, cells + 1))
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
        h = np.maximum(h, a * np.exp(-(np.abs((PX - c) / w) ** sharp)))
    h += tallest * (0.08 * _fractal(rng, 5, 4) + 0.15)
    return np.clip(h, 0.0, None)


def _cone_heights(rng: np.random.Generator, tallest: float) -> np.ndarray:
    c = rng.uniform(0.3, 0.7)
    w = rng.uniform(0.3, 0.45)
    h = tallest * np.clip(1 - np.abs(PX - c) / w, 0, None) ** 1.15
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
    u = PX if side < 0 else 1 - PX  # distance from the side the bank rises from
    extent = rng.uniform(0.4, 0.75)
    top = rng.uniform(max(0.76, horizon + 0.08), 0.86)
    bank_y = top + (1.05 - top) * (u / extent) ** 1.6 + 0.025 * _fractal(rng, 4, 6)
    bank = Ridge(profile=np.minimum(bank_y, 1.2), base=1.0, depth=0.0)

    def bank_top(x: float) -> float:
        return float(np.interp(x, PX, bank.profile))

    visible = PX[bank.profile < 0.92]
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
    tall_enough = PX[(near.profile < horizon - 0.05) & (PX > 0.03) & (PX < 0.97)]
    if tall_enough.size:
        for _ in range(int(rng.integers(0, 6))):
            x = float(rng.choice(tall_enough))
            hgt = float(rng.uniform(0.03, 0.055))
            y = float(np.interp(x, PX, near.profile)) + 0.008
            trees.append(Tree(x, y, hgt, hgt * 0.6, str(rng.choice(["pine", "round"]))))

    boats: list[Boat] = []
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        for _attempt in range(12):
            y = float(rng.uniform(horizon + 0.04, min(horizon + 0.3, 0.95)))
            length = 0.05 + 0.1 * (y - horizon) / (1 - horizon)  # nearer boats look longer
            x = float(rng.uniform(0.08, 0.92))
            xs = np.linspace(x - length, x + length, 9)
            clear = all(abs(b.x - x) > 0.15 for b in boats)
            if clear and np.all(np.interp(xs, PX, bank.profile) > y + 0.04):
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
            lo = float(skyline[np.abs(PX - x) <= r + 0.02].min()) - r - 0.03
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
