"""The `analyze` stage: transfer quality of every directed pair against the cultural distance of its styles.

Statistics are rank-based and honest about the design: with k styles a style-relabelling test has
k! outcomes, so the smallest reachable p-value is stated beside every p (RESEARCH.md, traps 1-4).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import shutil
from collections import defaultdict
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from culturegan.config import AnalysisConfig, Params, dump_params
from culturegan.errors import SourceError
from culturegan.fileio import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

ANALYSIS_JSON = "analysis.json"
TIDY_CSV = "tidy.csv"
SCATTER_PNG = "scatter.png"
ASYMMETRY_PNG = "asymmetry.png"
METHODS_PNG = "methods.png"
CULTURE_PNG = "culture.png"
GAN = "gan"
COMBINED = "combined"
MIN_PAIRS = 3  # Spearman on two points is +-1 whatever the data
MAX_EXACT_STYLES = 7  # 7! = 5040 relabellings are enumerated; beyond that they are sampled
_TOL = 1e-9  # rank correlations equal up to rounding count as equally extreme

SPACE_LABELS = {
    "classifier": "classifier feature space (trained in this pipeline)",
    "inception": "Inception-v3 (local weights)",
}

# name -> (label, higher|lower is better, group). Distribution metrics are matched by pattern below.
_METRICS: dict[str, tuple[str, str | None, str]] = {
    "style_accuracy": ("deception rate", "higher", "style"),
    "target_probability": ("target-style probability", "higher", "style"),
    "content_ssim": ("content SSIM", "higher", "content"),
    "content_edge_ssim": ("content edge SSIM", "higher", "content"),
    "gt_ssim": ("SSIM to truth", "higher", "ground truth"),
    "gt_psnr": ("PSNR to truth (dB)", "higher", "ground truth"),
    "gt_hist_hellinger": ("histogram distance to truth", "lower", "ground truth"),
    "seconds": ("seconds", "lower", "cost"),
}
_DIST = re.compile(r"^(kid|fid)_([a-z0-9]+?)(_relative_gain)?$")
_HIDDEN = re.compile(r"(_std$|^n_images$)")
_GROUP_ORDER = ["distribution", "style", "content", "ground truth", "cost", "other"]

# The GAN's headline quality measures, derived per (pair, seed, method) from metrics.json.
MEASURES: dict[str, dict[str, str]] = {
    "kid_gain": {
        "label": "relative KID gain",
        "direction": "higher",
        "description": "1 - KID(G(A), B) / KID(A, B) in the classifier feature space: "
        "the share of the source-target gap closed (0 = doing nothing)",
    },
    "kid_gain_floor": {
        "label": "relative KID gain above the target floor",
        "direction": "higher",
        "description": "1 - (KID(G(A), B) - floor_B) / (KID(A, B) - floor_B), floor_B = KID between "
        "two halves of the real target set: corrects for how hard the target is to match",
    },
    "deception": {
        "label": "deception rate",
        "direction": "higher",
        "description": "share of outputs the style classifier assigns to the target style",
    },
    "deception_vs_ceiling": {
        "label": "deception rate / ceiling",
        "direction": "higher",
        "description": "deception rate divided by the classifier's accuracy on real target images",
    },
    "content_edge_ssim": {
        "label": "content edge SSIM",
        "direction": "higher",
        "description": "SSIM between Sobel edge maps of source and output (scene kept)",
    },
    "gt_ssim": {
        "label": "SSIM to truth",
        "direction": "higher",
        "description": "SSIM to the true target rendering of the same scene",
    },
    "gt_psnr": {
        "label": "PSNR to truth (dB)",
        "direction": "higher",
        "description": "PSNR to the true target rendering of the same scene",
    },
    "gt_hist_hellinger": {
        "label": "histogram distance to truth",
        "direction": "lower",
        "description": "Hellinger distance between RGB histograms of output and true rendering",
    },
    "kid_raw": {
        "label": "KID (raw; circular)",
        "direction": "lower",
        "description": "KID(G(A), B) in the classifier space; grows with the source-target gap "
        "by construction (trap 1), shown only beside the relative gain",
    },
}
# Identity scores content SSIM 1 by construction: a margin against it says nothing.
_CONTENT_MEASURES = {"content_edge_ssim"}
# Shown in the per-method bar chart (the circular raw KID and the ratios are left to the tables).
BAR_MEASURES = (
    "kid_gain",
    "deception",
    "content_edge_ssim",
    "gt_ssim",
    "gt_psnr",
    "gt_hist_hellinger",
)

CAVEATS = [
    (
        "The style classifier is closed-set: it only knows these styles, so it can reward a colour "
        "shift alone. Read KID and the deception rate together with the content and ground-truth "
        "metrics."
    ),
    (
        "Raw KID and FID grow with the distance between source and target by construction "
        "(identity scores worse the farther apart the styles are); the relative gain corrects for that."
    ),
    (
        "Few domains: with k styles a style-relabelling test has only k! outcomes, so a strong-looking "
        "correlation can be chance. More styles help more than more seeds."
    ),
    "The cultural distance is symmetric, so it cannot explain differences between A->B and B->A.",
    (
        "Synthetic data: the procedural benchmark renders the same scenes in every style, which removes "
        "the subject-matter confound but does not show how the results carry over to real art."
    ),
    "FID at small N is biased, and the bias depends on N: compare FIDs only at equal image counts.",
]


# --- metric metadata -------------------------------------------------------------------------------


def space_label(space: str) -> str:
    return SPACE_LABELS.get(space, f"{space} feature space")


def metric_info(name: str) -> dict[str, Any]:
    """Label, direction ('higher'/'lower'/None), feature space and table group of a metric key."""
    m = _DIST.match(name)
    if m:
        kind, space, gain = m.groups()
        label = "relative KID gain" if gain else kind.upper()
        return {
            "label": label,
            "direction": "higher" if gain else "lower",
            "space": space,
            "space_label": space_label(space),
            "group": "distribution",
        }
    label, direction, group = _METRICS.get(name, (name.replace("_", " "), None, "other"))
    return {
        "label": label,
        "direction": direction,
        "space": None,
        "space_label": None,
        "group": group,
    }


# --- loading ---------------------------------------------------------------------------------------


def _read_json(path: Path, what: str, hint: str) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"{what} {path} not found", hint=hint) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SourceError(f"{what} {path} is not valid JSON: {err}", hint=hint) from None
    if not isinstance(data, dict):
        raise SourceError(f"{what} {path} is not a JSON object", hint=hint)
    return data


def check_metrics(record: dict[str, Any], origin: str) -> None:
    """Raise SourceError unless `record` has the keys of an evaluate-stage metrics.json."""
    hint = "re-run the evaluate stage for this pair"
    for key, kind in (
        ("pair", str),
        ("source", str),
        ("target", str),
        ("seed", int),
        ("methods", dict),
    ):
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise SourceError(
                f"{origin}: key {key!r} is missing or not a {kind.__name__}", hint=hint
            )
    for method, values in record["methods"].items():
        if not isinstance(values, dict):
            raise SourceError(f"{origin}: methods.{method} is not an object of metrics", hint=hint)


def load_metrics(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Read evaluate-stage metrics.json files; pair and seed come from their content, not their paths."""
    records: list[dict[str, Any]] = []
    seen: dict[tuple[str, int], str] = {}
    for path in sorted(Path(p) for p in paths):
        record = _read_json(path, "metrics file", "re-run the evaluate stage")
        check_metrics(record, str(path))
        key = (record["pair"], record["seed"])
        if key in seen:
            raise SourceError(
                f"{path} and {seen[key]} both hold pair {key[0]!r} seed {key[1]}",
                hint="remove the stale one: each (pair, seed) must be evaluated once",
            )
        seen[key] = str(path)
        records.append({**record, "_file": str(path)})
    return records


# --- statistics ------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


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


# --- per-pair summaries ----------------------------------------------------------------------------


def measures_of(record: dict[str, Any], method: str) -> dict[str, float | None]:
    """The headline measures (MEASURES) of one method in one metrics.json; None where undefined.

    `record["methods"]` may also be the "controls" block (metric validity)."""
    m = record["methods"][method]
    ref = record.get("reference") or {}
    real, gap = ref.get("target_real") or {}, ref.get("source_vs_target") or {}
    kid, src_kid = _finite(m.get("kid_classifier")), _finite(gap.get("kid_classifier"))
    floor, ceiling = _finite(real.get("kid_classifier_floor")), _finite(real.get("style_accuracy"))
    deception = _finite(m.get("style_accuracy"))
    gain = _finite(m.get("kid_classifier_relative_gain"))
    if gain is None and kid is not None and src_kid is not None and src_kid > 0:
        gain = 1.0 - kid / src_kid
    out: dict[str, float | None] = {
        "kid_gain": gain,
        "kid_gain_floor": None,
        "deception": deception,
        "deception_vs_ceiling": None,
        "kid_raw": kid,
    }
    if kid is not None and src_kid is not None and floor is not None and src_kid - floor > 0:
        out["kid_gain_floor"] = 1.0 - (kid - floor) / (src_kid - floor)
    if deception is not None and ceiling is not None and ceiling > 0:
        out["deception_vs_ceiling"] = deception / ceiling
    for key in ("content_edge_ssim", "gt_ssim", "gt_psnr", "gt_hist_hellinger"):
        out[key] = _finite(m.get(key))
    return {k: out[k] for k in MEASURES}


def _summary(values: Sequence[float]) -> dict[str, Any] | None:
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


def _flat_numbers(block: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(block, dict):
        for k, v in block.items():
            out |= _flat_numbers(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}")
    elif (value := _finite(block)) is not None:
        out[prefix] = value
    return out


def _ordered_columns(metric_names: Iterable[str]) -> list[str]:
    names = [n for n in dict.fromkeys(metric_names) if not _HIDDEN.search(n)]

    def key(name: str) -> tuple[int, str, int]:
        info = metric_info(name)
        m = _DIST.match(name)
        # KID, FID, then the relative gain within each feature space; other groups keep file order.
        within = (0 if m.group(1) == "kid" else 1) + (2 if m.group(3) else 0) if m else 0
        return (_GROUP_ORDER.index(info["group"]), info["space"] or "", within)

    return sorted(names, key=key)


def _pair_summary(
    records: list[dict[str, Any]], distances: dict[str, float | None], run_ids: dict[str, str]
) -> dict[str, Any]:
    records = sorted(records, key=lambda r: r["seed"])
    first = records[0]
    methods = list(dict.fromkeys(m for r in records for m in r["methods"]))
    if GAN in methods:  # the GAN leads every table; baselines follow in evaluation order
        methods = [GAN] + [m for m in methods if m != GAN]
    per_method: dict[str, dict[str, Any]] = {}
    per_measure: dict[str, dict[str, Any]] = {}
    for method in methods:
        values: dict[str, list[float]] = defaultdict(list)
        meas: dict[str, list[float]] = defaultdict(list)
        for r in records:
            if method not in r["methods"]:
                continue
            for name, v in r["methods"][method].items():
                if (fv := _finite(v)) is not None:
                    values[name].append(fv)
            for name, v in measures_of(r, method).items():
                meas[name].append(v)
        per_method[method] = {k: s for k, v in values.items() if (s := _summary(v)) is not None}
        per_measure[method] = {k: _summary(v) for k, v in meas.items()}
    columns = _ordered_columns(k for m in methods for k in per_method[m])
    best: dict[str, list[str]] = {}
    for col in columns:
        direction = metric_info(col)["direction"]
        scored = [(m, per_method[m][col]["mean"]) for m in methods if col in per_method[m]]
        if direction is None or len(scored) < 2:
            continue
        top = max(v for _, v in scored) if direction == "higher" else min(v for _, v in scored)
        best[col] = [m for m, v in scored if abs(v - top) <= 1e-12 * max(1.0, abs(top))]
    margin: dict[str, Any] = {}
    if GAN in per_measure:
        for name, info in MEASURES.items():
            gan = per_measure[GAN].get(name)
            rivals = [
                (m, s["mean"])
                for m in methods
                if m != GAN
                and not (m == "identity" and name in _CONTENT_MEASURES)
                and (s := per_measure[m].get(name)) is not None
            ]
            if gan is None or not rivals:
                margin[name] = None
                continue
            pick = max if info["direction"] == "higher" else min
            rival, value = pick(rivals, key=lambda t: t[1])
            sign = 1.0 if info["direction"] == "higher" else -1.0
            margin[name] = {"value": sign * (gan["mean"] - value), "best_baseline": rival}
    reference: dict[str, list[float]] = defaultdict(list)
    for r in records:
        for k, v in _flat_numbers(r.get("reference") or {}).items():
            reference[k].append(v)
    skipped: dict[str, str] = {}
    for r in records:
        for k, v in (r.get("skipped") or {}).items():
            skipped.setdefault(str(k), str(v))
    grid = None
    for r in records:
        if r.get("_file") and (Path(r["_file"]).parent / "grid.png").is_file():
            grid = {"source": str(Path(r["_file"]).parent / "grid.png"), "seed": r["seed"]}
            break
    return {
        "pair": first["pair"],
        "source": first["source"],
        "target": first["target"],
        "seeds": [r["seed"] for r in records],
        "files": [r["_file"] for r in records if r.get("_file")],
        "ground_truth": any(bool(r.get("ground_truth")) for r in records),
        "n_images": first.get("n_images") if isinstance(first.get("n_images"), dict) else {},
        "image_size": _finite(first.get("image_size")),
        "methods": methods,
        "columns": columns,
        "metrics": per_method,
        "best": best,
        "measures": per_measure,
        "margin": margin,
        "reference": {k: _summary(v) for k, v in reference.items()},
        "skipped": skipped,
        "grid": grid,
        "distance": distances,
        "run_ids": run_ids,
    }


def _pair_distances(culture: dict[str, Any], source: str, target: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for view, matrix, styles in _views(culture):
        if source in styles and target in styles:
            out[view] = _finite(matrix[styles.index(source)][styles.index(target)])
        else:
            out[view] = None
    return out


def _views(culture: dict[str, Any]) -> list[tuple[str, np.ndarray, list[str]]]:
    styles = list(culture.get("styles") or [])
    views = []
    if "combined" in culture:
        block = culture["combined"]
        views.append(
            (COMBINED, np.asarray(block["matrix"], dtype=float), list(block.get("styles", styles)))
        )
    for name, block in (culture.get("views") or {}).items():
        views.append(
            (name, np.asarray(block["matrix"], dtype=float), list(block.get("styles", styles)))
        )
    return views


def _check_culture(culture: dict[str, Any], origin: str) -> None:
    hint = "re-run the culture stage (culture.json from culture_stage)"
    if not isinstance(culture.get("styles"), list) or not isinstance(culture.get("combined"), dict):
        raise SourceError(f"{origin}: keys 'styles' and 'combined' are missing", hint=hint)
    for view, matrix, styles in _views(culture):
        if matrix.shape != (len(styles), len(styles)) or not np.isfinite(matrix).all():
            raise SourceError(
                f"{origin}: the {view} matrix is not a finite {len(styles)}x{len(styles)} matrix",
                hint=hint,
            )


# --- the analysis ----------------------------------------------------------------------------------


def _p_text(perm: dict[str, Any]) -> str:
    if perm["exact"] and "/" in perm["p_fraction"]:
        return f"{perm['p_fraction']} = {perm['p']:.3g}"
    return f"{perm['p']:.3g}"


def _pmin_text(perm: dict[str, Any]) -> str:
    if perm["exact"]:
        return f"{perm['p_min_fraction']} = {perm['p_min']:.3g}"
    return f"about {perm['p_min']:.3g}"


def _relabel_text(perm: dict[str, Any]) -> str:
    if perm["exact"]:
        return f"all {perm['k']}! = {perm['relabellings']} relabellings of the styles"
    return f"{perm['relabellings'] - 1} random relabellings of the {perm['k']} styles"


def honest_sentence(
    design: dict[str, Any], corr: dict[str, Any] | None, cfg: AnalysisConfig
) -> str:
    """The plain-words answer to 'does quality follow cultural distance?', built from the numbers only."""
    n, k = design["n_pairs_scored"], design["n_styles"]
    label = MEASURES[cfg.primary_metric]["label"]
    head = f"With {n} directed pair{'s' if n != 1 else ''} among {k} style{'s' if k != 1 else ''}"
    if not design["has_gan"]:
        return (
            "No GAN output was evaluated (baselines only), so nothing can be said about how the "
            "GAN's quality relates to cultural distance."
        )
    if corr is None or corr["status"] != "estimated":
        why = f" ({corr['reason']})" if corr and corr.get("reason") else ""
        return (
            f"{head}, no correlation between {label} and cultural distance can be estimated{why}; "
            "the figures below are descriptive."
        )
    perm, boot = corr["permutation"], corr["bootstrap"]
    level = f"{boot['level'] * 100:g} %"
    if boot["ci"] is None:
        ci = f"no {level} bootstrap interval (too few resamples with distinct pairs)"
    else:
        lo, hi = boot["ci"]
        ci = f"{level} bootstrap CI {lo:.2f} to {hi:.2f}, width {hi - lo:.2f}"
    stat = (
        f"Spearman's \u03c1 between {label} and the combined cultural distance is "
        f"{corr['rho']:.2f} ({ci})"
    )
    if perm["p_min"] > cfg.alpha:
        return (
            f"{head}, no correlation can be distinguished from chance whatever the results: the "
            f"smallest p-value this design can give is {_pmin_text(perm)} ({_relabel_text(perm)}), "
            f"above \u03b1 = {cfg.alpha:g}. {stat}; the observed p is {_p_text(perm)}. "
            "The figures below are descriptive."
        )
    tail = f"the permutation test over {_relabel_text(perm)} gives p = {_p_text(perm)} (smallest achievable {_pmin_text(perm)})"
    if perm["p"] <= cfg.alpha:
        covers = boot["ci"] is not None and boot["ci"][0] <= 0.0 <= boot["ci"][1]
        return (
            f"{head}, {stat}; {tail}, so at \u03b1 = {cfg.alpha:g} this association is unlikely to "
            "come from an arbitrary assignment of the styles"
            + (", although the bootstrap interval includes 0" if covers else "")
            + ". It is one pre-specified test; the other measures and views are exploratory and "
            "uncorrected, and with so few styles one style can drive it."
        )
    return (
        f"{head}, {stat}; {tail}, so the data do not distinguish this correlation from chance. "
        "The figures below are descriptive."
    )


def _pair_sort_key(pair: dict[str, Any]) -> tuple[str, str]:
    return (pair["source"], pair["target"])


def _correlations(
    pairs: list[dict[str, Any]], culture: dict[str, Any], params: Params
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    cfg = params.analysis
    rows: list[dict[str, Any]] = []
    primary = None
    for mi, measure in enumerate(MEASURES):
        for vi, (view, matrix, styles) in enumerate(_views(culture)):
            chosen = [
                p
                for p in pairs
                if (p["measures"].get(GAN) or {}).get(measure) is not None
                and p["source"] in styles
                and p["target"] in styles
            ]
            seed_values = [np.asarray(p["measures"][GAN][measure]["values"]) for p in chosen]
            src = np.array([styles.index(p["source"]) for p in chosen], dtype=int)
            tgt = np.array([styles.index(p["target"]) for p in chosen], dtype=int)
            distance = matrix[src, tgt] if len(chosen) else np.zeros(0)
            rng = np.random.default_rng([params.seed, mi, vi])
            result = correlate(seed_values, distance, matrix, src, tgt, cfg, rng)
            row = {
                "measure": measure,
                "view": view,
                "pairs": [p["pair"] for p in chosen],
                "primary": measure == cfg.primary_metric and view == COMBINED,
                **result,
            }
            rows.append(row)
            if row["primary"]:
                primary = row
    return rows, primary


def _within_target(
    pairs: list[dict[str, Any]], culture: dict[str, Any], params: Params
) -> dict[str, Any]:
    """Primary measure, centred on each target's mean, vs combined distance (exploratory).

    Yeh et al. (WACV 2020): the target style explains most of the quality; centring removes it,
    but only targets reached from two or more sources carry information then.
    """
    measure = params.analysis.primary_metric
    _, matrix, styles = _views(culture)[0]
    scored = [
        p
        for p in pairs
        if (p["measures"].get(GAN) or {}).get(measure) is not None
        and p["source"] in styles
        and p["target"] in styles
    ]
    by_target: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in scored:
        by_target[p["target"]].append(p)
    chosen = [p for group in by_target.values() if len(group) >= 2 for p in group]
    chosen.sort(key=_pair_sort_key)
    target_mean = {
        t: float(np.mean([p["measures"][GAN][measure]["mean"] for p in g]))
        for t, g in by_target.items()
    }
    seed_values = [
        np.asarray(p["measures"][GAN][measure]["values"]) - target_mean[p["target"]] for p in chosen
    ]
    src = np.array([styles.index(p["source"]) for p in chosen], dtype=int)
    tgt = np.array([styles.index(p["target"]) for p in chosen], dtype=int)
    distance = matrix[src, tgt] if chosen else np.zeros(0)
    rng = np.random.default_rng([params.seed, 99])
    result = correlate(seed_values, distance, matrix, src, tgt, params.analysis, rng)
    if result["status"] != "estimated" and len(chosen) < MIN_PAIRS:
        result["reason"] = (
            f"{len(chosen)} pairs share a target with another scored pair; at least {MIN_PAIRS} "
            "are needed (evaluate more sources per target)"
        )
    return {"measure": measure, "view": COMBINED, "pairs": [p["pair"] for p in chosen], **result}


def _target_difficulty(pairs: list[dict[str, Any]], measure: str) -> dict[str, Any]:
    def block(key: str) -> list[dict[str, Any]]:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for p in pairs:
            groups[p[key]].append(p)
        rows = []
        for style, group in sorted(groups.items()):
            gan = [
                p["measures"][GAN][measure]["mean"]
                for p in group
                if (p["measures"].get(GAN) or {}).get(measure) is not None
            ]

            def ref(name: str, group: list[dict[str, Any]] = group) -> float | None:
                vals = [p["reference"][name]["mean"] for p in group if p["reference"].get(name)]
                return float(np.mean(vals)) if vals else None

            rows.append(
                {
                    "style": style,
                    "pairs": [p["pair"] for p in group],
                    "mean": float(np.mean(gan)) if gan else None,
                    "min": float(np.min(gan)) if gan else None,
                    "max": float(np.max(gan)) if gan else None,
                    "kid_floor": ref("target_real.kid_classifier_floor"),
                    "kid_source_target": ref("source_vs_target.kid_classifier"),
                    "deception_ceiling": ref("target_real.style_accuracy"),
                }
            )
        return rows

    return {"measure": measure, "per_target": block("target"), "per_source": block("source")}


def _asymmetry(pairs: list[dict[str, Any]], measure: str) -> list[dict[str, Any]]:
    """A->B against B->A for every pair evaluated in both directions (difference = A->B minus B->A)."""
    index = {(p["source"], p["target"]): p for p in pairs if GAN in p["measures"]}
    rows = []
    for (a, b), forward in sorted(index.items()):
        backward = index.get((b, a))
        if backward is None or a > b:
            continue
        entry: dict[str, Any] = {
            "a": a,
            "b": b,
            "forward": forward["pair"],
            "backward": backward["pair"],
            "distance": forward["distance"].get(COMBINED),
            "measures": {},
        }
        for name in MEASURES:
            f, r = forward["measures"][GAN].get(name), backward["measures"][GAN].get(name)
            if f is None or r is None:
                continue
            se = None
            if f["sd"] is not None and r["sd"] is not None:
                se = math.sqrt(f["sd"] ** 2 / f["n"] + r["sd"] ** 2 / r["n"])
            entry["measures"][name] = {
                "forward": f,
                "backward": r,
                "difference": f["mean"] - r["mean"],
                "se": se,
            }
        rows.append(entry)
    return rows


def _tidy(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in sorted(records, key=lambda r: (r["pair"], r["seed"])):
        base = {"pair": r["pair"], "source": r["source"], "target": r["target"], "seed": r["seed"]}
        for method, values in r["methods"].items():
            for metric, value in values.items():
                if (v := _finite(value)) is not None:
                    space = metric_info(metric)["space"]
                    rows.append(
                        {
                            **base,
                            "method": method,
                            "metric": metric,
                            "kind": "metric",
                            "space": space,
                            "value": v,
                        }
                    )
            for measure, v in measures_of(r, method).items():
                if v is not None:
                    rows.append(
                        {
                            **base,
                            "method": method,
                            "metric": measure,
                            "kind": "measure",
                            "space": "classifier" if measure.startswith("kid") else None,
                            "value": v,
                        }
                    )
    return rows


def _validity_findings(validity: dict[str, Any], cfg: AnalysisConfig) -> list[str]:
    """One line on whether the primary metric passed the metric-validity test, if it was run."""
    ok = validity.get("primary_passes")
    if ok is None:
        return []
    label = MEASURES[cfg.primary_metric]["label"]
    if ok:
        return [f"The primary metric ({label}) ranks the true rendering above every control in every directed pair."]
    row = next(r for r in validity["rows"] if r["primary"])
    lost = [
        f"{validity['controls'][c]} ({v['wins']}/{v['pairs']} pairs)"
        for c, v in row["controls"].items()
        if v["wins"] < v["pairs"]
    ]
    sentence = (
        f"The primary metric ({label}) FAILS the metric-validity test: the true rendering does not "
        f"beat {', '.join(lost)}. Its results below cannot be trusted as a measure of transfer quality."
    )
    return [sentence]


def _findings(
    pairs: list[dict[str, Any]],
    design: dict[str, Any],
    asym: list[dict[str, Any]],
    difficulty: dict[str, Any],
    cfg: AnalysisConfig,
) -> list[str]:
    measure = cfg.primary_metric
    label = MEASURES[measure]["label"]
    lines = []
    seeds = design["seeds_per_pair"]
    if seeds:
        lo, hi = min(seeds.values()), max(seeds.values())
        span = f"{lo}" if lo == hi else f"{lo} to {hi}"
        lines.append(
            f"{design['n_pairs']} directed pair{'s' if design['n_pairs'] != 1 else ''} evaluated, "
            f"{span} seed{'s' if hi != 1 else ''} each, among the {design['n_styles']} styles of the "
            "distance matrix."
        )
        if lo < 3:
            lines.append(
                "Fewer than 3 seeds for some pairs: the spread between training restarts is barely "
                "or not estimated (RESEARCH.md, trap 4)."
            )
    if design["pairs_without_distance"]:
        lines.append(
            "Left out of the correlations (a style missing from the distance matrix): "
            + ", ".join(design["pairs_without_distance"])
            + "."
        )
    margins = [p["margin"].get(measure) for p in pairs if p["margin"].get(measure) is not None]
    if margins:
        wins = sum(m["value"] > 0 for m in margins)
        med = float(np.median([m["value"] for m in margins]))
        lines.append(
            f"On {label}, the GAN beats the best baseline in {wins} of {len(margins)} directed "
            f"pair{'s' if len(margins) != 1 else ''} (median margin {med:+.3f}; positive = GAN better)."
        )
    if asym:
        entries = [e for e in asym if measure in e["measures"]]
        if entries:
            worst = max(entries, key=lambda e: abs(e["measures"][measure]["difference"]))
            d = worst["measures"][measure]["difference"]
            lines.append(
                f"{len(asym)} pair{'s were' if len(asym) != 1 else ' was'} evaluated in both directions; "
                f"the largest difference in {label} is {d:+.3f} ({worst['forward']} minus {worst['backward']})."
            )
    else:
        lines.append("No pair was evaluated in both directions, so asymmetry cannot be shown.")
    targets = [t for t in difficulty["per_target"] if t["mean"] is not None]
    if len(targets) >= 2:
        lo_t = min(targets, key=lambda t: t["mean"])
        hi_t = max(targets, key=lambda t: t["mean"])
        lines.append(
            f"Per-target mean {label} ranges from {lo_t['mean']:.3f} (target {lo_t['style']}) to "
            f"{hi_t['mean']:.3f} (target {hi_t['style']}): part of any trend with distance may be "
            "target difficulty."
        )
    return lines


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, non-finite floats to None (no NaN reaches JSON or HTML)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def analyze_records(
    params: Params,
    records: list[dict[str, Any]],
    culture: dict[str, Any],
    out_dir: Path,
    classifier: dict[str, Any] | None = None,
    run_ids: dict[str, str] | None = None,
    culture_png: Path | None = None,
) -> dict[str, Any]:
    """The analysis of already-loaded metrics records and culture result; writes figures and analysis.json."""
    cfg = params.analysis
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not records:
        raise SourceError("no metrics records to analyse", hint="run the evaluate stage first")
    for r in records:
        check_metrics(r, r.get("_file", f"metrics of pair {r.get('pair')!r}"))
    _check_culture(culture, "culture result")
    run_ids = dict(run_ids or {})

    by_pair: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_pair[r["pair"]].append(r)
    pairs = []
    for pair, group in by_pair.items():
        seeds = [r["seed"] for r in group]
        if len(set(seeds)) != len(seeds):
            raise SourceError(
                f"pair {pair!r} has seed {max(seeds, key=seeds.count)} more than once",
                hint="each (pair, seed) must be evaluated once",
            )
        first = group[0]
        # runs/<pair>/run_id.txt, or one per seed below it (runs/<pair>/seed1/run_id.txt)
        own = {k: v for k, v in run_ids.items() if k == pair or k.startswith(pair + "/")}
        pairs.append(
            _pair_summary(group, _pair_distances(culture, first["source"], first["target"]), own)
        )
    pairs.sort(key=_pair_sort_key)

    styles = list(culture["styles"])
    scored = [
        p for p in pairs if (p["measures"].get(GAN) or {}).get(cfg.primary_metric) is not None
    ]
    design = {
        "n_pairs": len(pairs),
        "n_pairs_scored": len(scored),
        "n_styles": len(styles),
        "styles": styles,
        "styles_in_pairs": sorted({s for p in pairs for s in (p["source"], p["target"])}),
        "seeds_per_pair": {p["pair"]: len(p["seeds"]) for p in pairs},
        "has_gan": any(GAN in p["measures"] for p in pairs),
        "pairs_without_distance": [p["pair"] for p in pairs if p["distance"].get(COMBINED) is None],
    }
    correlations, primary = _correlations(pairs, culture, params)
    within = _within_target(pairs, culture, params)
    difficulty = _target_difficulty(pairs, cfg.primary_metric)
    asym = _asymmetry(pairs, cfg.primary_metric)
    sentence = honest_sentence(design, primary, cfg)

    figures = {
        "scatter": str(
            plot_scatter(pairs, correlations, cfg.primary_metric, out_dir / SCATTER_PNG)
        ),
        "methods": str(plot_methods(pairs, out_dir / METHODS_PNG)),
    }
    if asym:
        figures["asymmetry"] = str(
            plot_asymmetry(asym, cfg.primary_metric, out_dir / ASYMMETRY_PNG)
        )
    culture_out = out_dir / CULTURE_PNG
    if culture_png is not None and Path(culture_png).is_file():
        if Path(culture_png).resolve() != culture_out.resolve():
            with atomic_path(culture_out) as tmp:
                shutil.copyfile(culture_png, tmp)
    else:
        from culturegan.evaluation.culture import plot_heatmaps  # imports torch: only when needed

        plot_heatmaps(culture, culture_out)
    figures["culture"] = str(culture_out)

    from culturegan.evaluation.validity import metric_validity

    validity = metric_validity(records, MEASURES, measures_of, _CONTENT_MEASURES, cfg.primary_metric)
    tidy = _tidy(records)
    _write_tidy(tidy, out_dir / TIDY_CSV)
    analysis = {
        "format_version": 1,
        "question": "Does the quality of GAN style transfer between two cultural styles follow "
        "the cultural distance between them?",
        "summary": {
            "sentence": sentence,
            "findings": _validity_findings(validity, cfg) + _findings(pairs, design, asym, difficulty, cfg),
        },
        "config": cfg.model_dump(mode="json"),
        "primary_metric": cfg.primary_metric,
        "measures": MEASURES,
        "space_labels": SPACE_LABELS,
        "design": design,
        "methods_note": {
            "bootstrap": "two-stage: directed pairs drawn with replacement, then each drawn pair's "
            "seeds with replacement; rho on the per-pair seed means; percentile interval",
            "permutation": "styles relabelled in the distance matrix with the quality of each directed "
            f"pair fixed; two-sided on |rho|; all k! relabellings for k <= {MAX_EXACT_STYLES} styles, "
            "the observed labelling included",
            "p_min": "the smallest p any results could give with these pairs and this distance matrix "
            "(quality ranked exactly as distance)",
            "primary": f"The one pre-specified test is {MEASURES[cfg.primary_metric]['label']} "
            "against the combined distance; every other row is exploratory and uncorrected for "
            "multiple comparisons",
        },
        "pairs": pairs,
        "metric_validity": validity,
        "correlations": correlations,
        "primary_correlation": primary,
        "within_target": within,
        "target_difficulty": difficulty,
        "asymmetry": asym,
        "culture": {
            "styles": styles,
            "views": [v for v, _, _ in _views(culture)],
            "combined": culture["combined"],
            "n_images": culture.get("n_images"),
        },
        "classifier": classifier,
        "run_ids": run_ids,
        "params": dump_params(params),
        "figures": figures,
        "tidy": str(out_dir / TIDY_CSV),
        "n_tidy_rows": len(tidy),
        "caveats": CAVEATS,
    }
    analysis = _clean(analysis)
    atomic_write_text(
        out_dir / ANALYSIS_JSON, json.dumps(analysis, indent=2, allow_nan=False) + "\n"
    )
    log.info("analysis of %d directed pairs: %s", len(pairs), sentence)
    return analysis


def _write_tidy(rows: list[dict[str, Any]], path: Path) -> None:
    import pandas as pd

    columns = ["pair", "source", "target", "seed", "method", "metric", "kind", "space", "value"]
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=columns).to_csv(tmp, index=False)


def analyze(
    params: Params,
    metrics_files: list[Path],
    culture_file: Path,
    out_dir: Path,
    classifier_file: Path | None = None,
    run_ids: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Analyse evaluate-stage metrics.json files against culture.json; write analysis.json and figures.

    Pair and seed come from each file's content. Returns the analysis dict (as written).
    """
    records = load_metrics(metrics_files)
    culture_file = Path(culture_file)
    culture = _read_json(culture_file, "culture file", "run the culture stage first")
    _check_culture(culture, str(culture_file))
    classifier = None
    if classifier_file is not None:
        classifier = _read_json(
            classifier_file, "classifier report", "run the classifier stage first"
        )
    return analyze_records(
        params, records, culture, out_dir, classifier, run_ids, culture_file.parent / CULTURE_PNG
    )


# --- figures (matplotlib Figure objects on the Agg canvas: no pyplot state) ---------------------------


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def _arrow(direction: str | None) -> str:
    return {"higher": " (higher is better)", "lower": " (lower is better)"}.get(direction or "", "")


def _mpl(text: str) -> str:
    # A '$' would start matplotlib mathtext and can fail to parse: style names come from data.
    return str(text).replace("$", r"\$")


def _short(pair: dict[str, Any]) -> str:
    return _mpl(f"{pair['source']}\u2192{pair['target']}")


def _place_labels(
    ax: Any, xy: list[tuple[float, float]], labels: list[str], fontsize: float = 7
) -> None:
    """Annotate points greedily at the corner (right/left, above/below) that overlaps least.

    A->B and B->A share a distance, so their points often sit on one vertical line; a fixed
    offset would print their labels over each other.
    """
    if not xy:
        return
    ax.get_xlim(), ax.get_ylim()  # settles autoscaling so transData is final
    scale = ax.figure.dpi / 72.0
    pts = ax.transData.transform(np.asarray(xy, dtype=float))
    frame = tuple(ax.bbox.extents)
    placed: list[tuple[float, float, float, float]] = [
        (x - 4 * scale, y - 4 * scale, x + 4 * scale, y + 4 * scale) for x, y in pts
    ]

    def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return max(w, 0.0) * max(h, 0.0)

    for (x, y), text in zip(pts, labels, strict=True):
        w, h = 0.6 * fontsize * len(text) * scale, 1.2 * fontsize * scale
        best = None
        for dx, dy in (
            (4, 3),
            (4, -3 - 1.2 * fontsize),
            (-4 - w / scale, 3),
            (-4 - w / scale, -3 - 1.2 * fontsize),
        ):
            box = (x + dx * scale, y + dy * scale, x + dx * scale + w, y + dy * scale + h)
            inside = overlap(box, frame)
            cost = sum(overlap(box, other) for other in placed) + (w * h - inside)
            if best is None or cost < best[0] - 1e-9:
                best = (cost, dx, dy, box)
        assert best is not None
        _, dx, dy, box = best
        placed.append(box)
        ax.annotate(
            text,
            ax.transData.inverted().transform((x, y)),
            textcoords="offset points",
            xytext=(dx, dy),
            fontsize=fontsize,
            va="bottom",
        )


def plot_scatter(
    pairs: list[dict[str, Any]], correlations: list[dict[str, Any]], measure: str, path: Path
) -> Path:
    """The GAN's `measure` per directed pair against each distance view; bars span the seeds."""
    views = list(dict.fromkeys(r["view"] for r in correlations))
    by_view = {r["view"]: r for r in correlations if r["measure"] == measure}
    cols = min(4, max(1, len(views)))
    rows = -(-max(1, len(views)) // cols)
    fig = _figure(3.6 * cols, 3.2 * rows)
    info = MEASURES[measure]
    pending: list[tuple[Any, list[tuple[float, float]], list[str]]] = []
    for k, view in enumerate(views):
        ax = fig.add_subplot(rows, cols, k + 1)
        pts = [
            p
            for p in pairs
            if (p["measures"].get(GAN) or {}).get(measure) is not None
            and p["distance"].get(view) is not None
        ]
        for p in pts:
            s = p["measures"][GAN][measure]
            ax.errorbar(
                p["distance"][view],
                s["mean"],
                yerr=[[s["mean"] - s["min"]], [s["max"] - s["mean"]]],
                fmt="o",
                color="#1f5f8b",
                ecolor="#7aa6c2",
                capsize=3,
                markersize=5,
            )
        r = by_view.get(view)
        if r is not None and r["status"] == "estimated":
            title = f"{view.replace('_', ' ')}: \u03c1 = {r['rho']:.2f}, p = {r['permutation']['p']:.2g}"
        else:
            title = f"{view.replace('_', ' ')}: \u03c1 not estimable"
        ax.set_title(title, fontsize=9, fontweight="bold" if view == COMBINED else "normal")
        ax.set_xlabel(f"{view.replace('_', ' ')} distance", fontsize=8)
        if k % cols == 0:
            ax.set_ylabel(info["label"], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.margins(x=0.25, y=0.15)
        ax.grid(alpha=0.3)
        pending.append(
            (
                ax,
                [(p["distance"][view], p["measures"][GAN][measure]["mean"]) for p in pts],
                [_short(p) for p in pts],
            )
        )
        if not pts:
            ax.text(0.5, 0.5, "no scored pairs", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(
        f"GAN {info['label']}{_arrow(info['direction'])} vs cultural distance; bars: range over seeds",
        fontsize=10,
    )
    fig.tight_layout()
    for ax, xy, labels in pending:  # after the layout, so label positions are final
        _place_labels(ax, xy, labels)
    return _save(fig, path)


def plot_asymmetry(asym: list[dict[str, Any]], measure: str, path: Path) -> Path:
    """A->B and B->A side by side for each pair evaluated both ways (bars: range over seeds)."""
    rows = [e for e in asym if measure in e["measures"]]
    fig = _figure(6.5, 0.6 * max(1, len(rows)) + 1.4)
    ax = fig.add_subplot(1, 1, 1)
    for y, e in enumerate(rows):
        m = e["measures"][measure]
        f, b = m["forward"], m["backward"]
        ax.plot([f["mean"], b["mean"]], [y, y], color="#bbbbbb", zorder=1)
        for s, colour, lab in (
            (f, "#1f5f8b", _mpl(f"{e['a']}\u2192{e['b']}")),
            (b, "#c0562b", _mpl(f"{e['b']}\u2192{e['a']}")),
        ):
            ax.errorbar(
                s["mean"],
                y,
                xerr=[[s["mean"] - s["min"]], [s["max"] - s["mean"]]],
                fmt="o",
                color=colour,
                capsize=3,
                zorder=2,
            )
            # Forward label above, backward below: close means would print one over the other.
            dy = 7 if s is f else -13
            ax.annotate(
                lab,
                (s["mean"], y),
                textcoords="offset points",
                xytext=(0, dy),
                fontsize=7,
                ha="center",
                color=colour,
            )
    ax.set_yticks(range(len(rows)), [_mpl(f"{e['a']} / {e['b']}") for e in rows], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    info = MEASURES[measure]
    ax.set_xlabel(f"GAN {info['label']}{_arrow(info['direction'])}", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Asymmetry: each pair in both directions", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_methods(pairs: list[dict[str, Any]], path: Path) -> Path:
    """Grouped bars per directed pair: the GAN and every baseline on each headline measure (bars: seed SD)."""
    measures = [
        m
        for m in BAR_MEASURES
        if any((p["measures"].get(meth) or {}).get(m) for p in pairs for meth in p["measures"])
    ]
    methods = list(dict.fromkeys(m for p in pairs for m in p["methods"]))
    cols = min(3, max(1, len(measures)))
    rows = -(-max(1, len(measures)) // cols)
    width = max(3.8, 0.55 * len(pairs) * max(1, len(methods)) / 2.2)
    fig = _figure(width * cols, 3.0 * rows + 0.6)
    palette = ["#1f5f8b", "#9a9a9a", "#d4a03a", "#5a9a5a", "#a05a9a", "#c0562b", "#4aa0a0"]
    bar = 0.8 / max(1, len(methods))
    for k, measure in enumerate(measures):
        ax = fig.add_subplot(rows, cols, k + 1)
        for j, method in enumerate(methods):
            xs, ys, es = [], [], []
            for i, p in enumerate(pairs):
                s = (p["measures"].get(method) or {}).get(measure)
                if s is not None:
                    xs.append(i + (j - (len(methods) - 1) / 2) * bar)
                    ys.append(s["mean"])
                    es.append(s["sd"] or 0.0)
            if xs:
                ax.bar(
                    xs,
                    ys,
                    bar,
                    yerr=es if any(es) else None,  # one seed: no spread to draw
                    capsize=2,
                    label=_mpl(method),
                    color=palette[j % len(palette)],
                    edgecolor="black" if method == GAN else "none",
                    linewidth=0.8,
                )
        info = MEASURES[measure]
        ax.set_title(f"{info['label']}{_arrow(info['direction'])}", fontsize=9)
        ax.set_xticks(
            range(len(pairs)), [_short(p) for p in pairs], rotation=30, ha="right", fontsize=7
        )
        ax.tick_params(axis="y", labelsize=7)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.grid(axis="y", alpha=0.3)
    if measures:
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(
            handles, labels, loc="upper center", ncol=len(methods), fontsize=8, frameon=False
        )
        fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _save(fig, path)


# --- the stage -------------------------------------------------------------------------------------


def collect_run_ids(runs_root: Path) -> dict[str, str]:
    """{'<pair>' or '<pair>/<sub>': run id} from every run_id.txt under `runs_root` (none if absent)."""
    runs_root = Path(runs_root)
    out: dict[str, str] = {}
    if not runs_root.is_dir():
        return out
    for path in sorted(runs_root.rglob("run_id.txt")):
        run_id = path.read_text(encoding="utf-8").strip()
        if run_id:
            out[path.parent.relative_to(runs_root).as_posix()] = run_id
    return out


def analyze_stage(
    params: Params,
    eval_root: Path,
    culture_file: Path,
    classifier_file: Path | None,
    runs_root: Path,
    out_dir: Path,
) -> dict[str, Any]:
    """Analyse every `eval_root/**/metrics.json`, then render `out_dir/index.html`; a small summary."""
    from culturegan.evaluation.report import render_report

    eval_root = Path(eval_root)
    files = sorted(eval_root.rglob("metrics.json"))
    if not files:
        raise SourceError(
            f"no metrics.json under {eval_root}",
            hint="run the evaluate stage for at least one pair",
        )
    run_ids = collect_run_ids(runs_root)
    analysis = analyze(params, files, culture_file, out_dir, classifier_file, run_ids)
    index = render_report(analysis, out_dir)
    primary = analysis["primary_correlation"] or {}
    perm = primary.get("permutation") or {}
    return {
        "report": str(index),
        "analysis": str(Path(out_dir) / ANALYSIS_JSON),
        "n_pairs": analysis["design"]["n_pairs"],
        "n_metrics_files": len(files),
        "primary_metric": analysis["primary_metric"],
        "rho": primary.get("rho"),
        "p": perm.get("p"),
        "p_min": perm.get("p_min"),
        "sentence": analysis["summary"]["sentence"],
    }
