"""Rank statistics of the analysis: Spearman's rho, its two-stage bootstrap interval and the
style-relabelling permutation test, honest about the design's smallest reachable p-value.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
from scipy import stats

from culturegan.config import AnalysisConfig

MIN_PAIRS = 3  # Spearman on two points is +-1 whatever the data
MAX_EXACT_STYLES = 7  # 7! = 5040 relabellings are enumerated; beyond that they are sampled
_TOL = 1e-9  # rank correlations equal up to rounding count as equally extreme


def _rank_rows(a: np.ndarray) -> np.ndarray:
    return stats.rankdata(a, axis=-1)


def _corr_rows(ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis; NaN where either row is constant."""
    ra = ra - ra.mean(axis=-1, keepdims=True)
    rb = rb - rb.mean(axis=-1, keepdims=True)
    den = np.sqrt((ra * ra).sum(-1) * (rb * rb).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ra * rb).sum(-1) / den
    return np.where(den > 1e-12, np.clip(r, -1.0, 1.0), np.nan)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when either side is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y) or len(x) < 2:
        return None
    r = float(_corr_rows(_rank_rows(x), _rank_rows(y)))
    return None if math.isnan(r) else r


def bootstrap_spearman(
    seed_values: Sequence[np.ndarray],
    distance: np.ndarray,
    samples: int,
    level: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Percentile CI of Spearman's rho(distance, per-pair mean) under a two-stage bootstrap.

    Each resample draws the directed pairs with replacement, then, independently for every drawn
    pair, its seeds with replacement; rho is taken on the per-pair seed means. Resamples where
    either side is constant (e.g. one pair drawn every time) have no rho and are left out.
    """
    n = len(seed_values)
    draws = rng.integers(0, n, size=(samples, n))  # (B, n) pair indices
    means = np.empty((n, samples, n))  # means[i, b, j]: pair i's resampled mean, slot j of draw b
    for i, values in enumerate(seed_values):
        values = np.asarray(values, dtype=float)
        idx = rng.integers(0, len(values), size=(samples, n, len(values)))
        means[i] = values[idx].mean(-1)
    q = np.take_along_axis(means, draws[None], axis=0)[0]  # (B, n)
    rho = _corr_rows(_rank_rows(distance[draws]), _rank_rows(q))
    valid = rho[~np.isnan(rho)]
    out: dict[str, Any] = {"samples": samples, "valid": len(valid), "level": level, "ci": None}
    # Under half usable resamples means the interval describes a few lucky draws, not the data.
    if len(valid) >= max(20, samples // 2):
        tail = (1.0 - level) / 2.0
        out["ci"] = [float(np.quantile(valid, tail)), float(np.quantile(valid, 1.0 - tail))]
    return out


def _relabellings(k: int, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    if k <= MAX_EXACT_STYLES:
        return np.array(list(itertools.permutations(range(k)))), True
    sampled = np.array([rng.permutation(k) for _ in range(samples)])
    return np.vstack([np.arange(k)[None], sampled]), False  # the observed labelling counts once


def permutation_test(
    matrix: np.ndarray,
    src: np.ndarray,
    tgt: np.ndarray,
    quality: np.ndarray,
    samples: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Two-sided style-relabelling test of Spearman's rho(distance, quality).

    The styles of the distance matrix are permuted (quality per directed pair stays fixed), so the
    null is: quality does not depend on which styles sit at which distances. With k <= 7 styles
    all k! relabellings are enumerated and p is exact; above that `samples` random ones are drawn
    and p = (1 + #as extreme) / (1 + samples). `p_min` is the smallest p ANY quality values could
    reach with this design: relabellings whose distances rank like the observed ones (or exactly
    reversed) tie with it whatever the quality, so quality ranked exactly as distance attains it.
    """
    k = len(matrix)
    perms, exact = _relabellings(k, samples, rng)
    d_perm = matrix[perms[:, src], perms[:, tgt]]  # (P, n)
    r_perm_d = _rank_rows(d_perm)
    rho_perm = np.nan_to_num(_corr_rows(r_perm_d, _rank_rows(quality)[None]), nan=0.0)
    observed = abs(rho_perm[0])  # permutation 0 is the identity in both branches
    extreme = int((np.abs(rho_perm) >= observed - _TOL).sum())
    same_design = _corr_rows(r_perm_d, _rank_rows(matrix[src, tgt])[None])
    ties = int((np.abs(np.nan_to_num(same_design, nan=0.0)) >= 1.0 - _TOL).sum())
    total = len(perms)
    return {
        "p": extreme / total,
        "p_min": ties / total,
        "p_fraction": _fraction(extreme, total),
        "p_min_fraction": _fraction(ties, total),
        "relabellings": total,
        "exact": exact,
        "k": k,
    }


def _fraction(count: int, total: int) -> str:
    f = Fraction(count, total)
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def correlate(
    seed_values: Sequence[np.ndarray],
    distance: np.ndarray,
    matrix: np.ndarray,
    src: np.ndarray,
    tgt: np.ndarray,
    cfg: AnalysisConfig,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Spearman rho of per-pair mean quality vs distance, its bootstrap CI and permutation p.

    `status` is 'estimated' or 'not_estimable' (with `reason`); no field is ever NaN.
    """
    n = len(seed_values)
    out: dict[str, Any] = {"n_pairs": n, "status": "not_estimable", "reason": None, "rho": None}
    means = np.array([float(np.mean(v)) for v in seed_values]) if n else np.zeros(0)
    if n < MIN_PAIRS:
        out["reason"] = (
            f"{n} directed pair{'s' if n != 1 else ''} with a score and a distance; "
            f"at least {MIN_PAIRS} are needed"
        )
        return out
    if np.ptp(distance) <= 0:
        out["reason"] = "every pair has the same distance"
        return out
    rho = spearman(distance, means)
    if rho is None:
        out["reason"] = "the quality measure is the same for every pair"
        return out
    out.update(status="estimated", rho=rho)
    out["bootstrap"] = bootstrap_spearman(
        seed_values, distance, cfg.bootstrap_samples, cfg.ci_level, rng
    )
    out["permutation"] = permutation_test(matrix, src, tgt, means, cfg.permutation_samples, rng)
    return out


def summary(values: Sequence[float]) -> dict[str, Any] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    a = np.asarray(values, dtype=float)
    return {
        "mean": float(a.mean()),
        "sd": float(a.std(ddof=1)) if len(a) > 1 else None,
        "min": float(a.min()),
        "max": float(a.max()),
        "n": len(a),
        "values": [float(v) for v in a],
    }
