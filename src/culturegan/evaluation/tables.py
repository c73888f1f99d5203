"""The analysis's tables: per-pair summaries, the correlation rows, target difficulty, asymmetry
and the tidy per-(pair, seed, method) table.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from culturegan.config import Params
from culturegan.errors import SourceError
from culturegan.evaluation.measures import (
    COMBINED,
    CONTENT_MEASURES,
    GAN,
    MEASURES,
    finite,
    measures_of,
    metric_info,
    ordered_columns,
)
from culturegan.evaluation.stats import MIN_PAIRS, correlate, spearman, summary
from culturegan.fileio import atomic_path


def _flat_numbers(block: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(block, dict):
        for k, v in block.items():
            out |= _flat_numbers(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}")
    elif (value := finite(block)) is not None:
        out[prefix] = value
    return out


def margin_over_best(
    gan: float, rivals: list[tuple[str, float]], direction: str
) -> tuple[float, str]:
    """(the GAN's margin over the best of `rivals` (name, value), positive when the GAN is better
    in a metric where `direction` ('higher' or 'lower') is better; that rival's name)."""
    pick = max if direction == "higher" else min
    rival, value = pick(rivals, key=lambda t: t[1])
    sign = 1.0 if direction == "higher" else -1.0
    return sign * (gan - value), rival


def summarize_pair(
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
                if (fv := finite(v)) is not None:
                    values[name].append(fv)
            for name, v in measures_of(r, method).items():
                meas[name].append(v)
        per_method[method] = {k: s for k, v in values.items() if (s := summary(v)) is not None}
        per_measure[method] = {k: summary(v) for k, v in meas.items()}
    columns = ordered_columns(k for m in methods for k in per_method[m])
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
                and not (m == "identity" and name in CONTENT_MEASURES)
                and (s := per_measure[m].get(name)) is not None
            ]
            if gan is None or not rivals:
                margin[name] = None
                continue
            value, rival = margin_over_best(gan["mean"], rivals, info["direction"])
            margin[name] = {"value": value, "best_baseline": rival}
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
        "image_size": finite(first.get("image_size")),
        "methods": methods,
        "columns": columns,
        "metrics": per_method,
        "best": best,
        "measures": per_measure,
        "margin": margin,
        "reference": {k: summary(v) for k, v in reference.items()},
        "skipped": skipped,
        "grid": grid,
        "distance": distances,
        "run_ids": run_ids,
    }


def pair_distances(culture: dict[str, Any], source: str, target: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for view, matrix, styles in distance_views(culture):
        if source in styles and target in styles:
            out[view] = finite(matrix[styles.index(source)][styles.index(target)])
        else:
            out[view] = None
    return out


def distance_views(culture: dict[str, Any]) -> list[tuple[str, np.ndarray, list[str]]]:
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


def check_culture(culture: dict[str, Any], origin: str) -> None:
    hint = "re-run the culture stage (culture.json from stages.culture_stage)"
    if not isinstance(culture.get("styles"), list) or not isinstance(culture.get("combined"), dict):
        raise SourceError(f"{origin}: keys 'styles' and 'combined' are missing", hint=hint)
    for view, matrix, styles in distance_views(culture):
        if matrix.shape != (len(styles), len(styles)) or not np.isfinite(matrix).all():
            raise SourceError(
                f"{origin}: the {view} matrix is not a finite {len(styles)}x{len(styles)} matrix",
                hint=hint,
            )


def pair_sort_key(pair: dict[str, Any]) -> tuple[str, str]:
    return (pair["source"], pair["target"])


def correlation_rows(
    pairs: list[dict[str, Any]], culture: dict[str, Any], params: Params
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    cfg = params.analysis
    rows: list[dict[str, Any]] = []
    primary = None
    for mi, measure in enumerate(MEASURES):
        for vi, (view, matrix, styles) in enumerate(distance_views(culture)):
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


def within_target(
    pairs: list[dict[str, Any]], culture: dict[str, Any], params: Params
) -> dict[str, Any]:
    """Primary measure, centred on each target's mean, vs combined distance (exploratory).

    Yeh et al. (WACV 2020): the target style explains most of the quality; centring removes it,
    but only targets reached from two or more sources carry information then.
    """
    measure = params.analysis.primary_metric
    _, matrix, styles = distance_views(culture)[0]
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
    chosen.sort(key=pair_sort_key)
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


def target_difficulty(pairs: list[dict[str, Any]], measure: str) -> dict[str, Any]:
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


def asymmetry(pairs: list[dict[str, Any]], measure: str) -> list[dict[str, Any]]:
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


def tidy_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in sorted(records, key=lambda r: (r["pair"], r["seed"])):
        base = {"pair": r["pair"], "source": r["source"], "target": r["target"], "seed": r["seed"]}
        for method, values in r["methods"].items():
            for metric, value in values.items():
                if (v := finite(value)) is not None:
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


def write_tidy(rows: list[dict[str, Any]], path: Path) -> None:
    import pandas as pd

    columns = ["pair", "source", "target", "seed", "method", "metric", "kind", "space", "value"]
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=columns).to_csv(tmp, index=False)


def _rank_agreement(gains: list[list[float | None]], n: int) -> dict[str, Any]:
    """How alike the classifier runs rank the directed pairs by the GAN's gain: Spearman's rho
    between the gains of every two members over the pairs both scored (`gains`: per pair, one
    value per member). The per-pair values of the measure are only as reproducible as this order
    (docs/study.md: 0.36 to 0.88 between five members on the study's 30 directions)."""
    rhos = []
    for i, j in itertools.combinations(range(n), 2):
        points = [(g[i], g[j]) for g in gains if g[i] is not None and g[j] is not None]
        if len(points) >= MIN_PAIRS and (r := spearman(*zip(*points, strict=True))) is not None:
            rhos.append(r)
    return {
        # Spearman rho between two members' gains over the directed pairs, for every two members
        # (None: fewer than MIN_PAIRS pairs, or a constant); 1: every run ranks the pairs alike
        "rank_agreement": rhos,
        "rank_agreement_min": min(rhos) if rhos else None,
        "rank_agreement_median": float(np.median(rhos)) if rhos else None,
        "rank_agreement_max": max(rhos) if rhos else None,
    }


def classifier_runs(
    records: list[dict[str, Any]], distances: dict[str, float | None] | None = None
) -> dict[str, Any] | None:
    """The GAN-vs-best-baseline verdict on relative KID gain in each style classifier of an
    ensemble (evaluation.classifier.ensemble > 1), each member's feature space on its own.

    On few real images a verdict can flip with the classifier's training run alone (docs/quality.md,
    "Real art"); this says which directed pairs are won in every run, lost in every run, or split.
    Per pair and member the margin is the GAN's gain minus the best other method's (means over
    training seeds, as the pair tables do). With `distances` (pair -> combined cultural distance)
    each member's Spearman rho between the GAN's gain and the distance is added: the study's
    answer, run by run. None when the records carry no per-member scores.
    """
    if not any(isinstance(r.get("classifier_members"), dict) for r in records):
        return None
    # Records without a GAN (baselines-only evaluations) have no verdict to give.
    blocks = [(r, r.get("classifier_members")) for r in records if GAN in r["methods"]]
    if not blocks:
        return None
    sizes = set()
    for r, b in blocks:
        gains = b.get("methods") if isinstance(b, dict) else None
        if not isinstance(gains, dict) or GAN not in gains:
            raise SourceError(
                f"metrics of pair {r['pair']!r} seed {r['seed']} have no per-classifier GAN scores "
                "while others have them",
                hint="re-run the evaluate stage of every pair with the same classifier",
            )
        sizes.add(len(gains[GAN]))
    if len(sizes) != 1:
        raise SourceError(
            f"metrics were scored with ensembles of different sizes {sorted(sizes)}",
            hint="re-run the evaluate stage of every pair with the same classifier",
        )
    n = sizes.pop()
    seeds = blocks[0][1].get("seeds") or list(range(n))

    by_pair: dict[str, list[dict[str, Any]]] = defaultdict(list)
    ends: dict[str, tuple[str, str]] = {}
    for r, b in blocks:
        by_pair[r["pair"]].append(b["methods"])
        ends[r["pair"]] = (r["source"], r["target"])
    rows = []
    for pair in sorted(by_pair, key=ends.__getitem__):  # the order of the pair tables (pair_sort_key)
        group = by_pair[pair]
        methods = list(dict.fromkeys(m for g in group for m in g))

        def mean_gain(method: str, k: int, group: list[dict[str, Any]] = group) -> float | None:
            lists = [g.get(method) for g in group]
            vals = [v for x in lists if isinstance(x, list) and len(x) > k and (v := finite(x[k])) is not None]
            return float(np.mean(vals)) if vals else None

        margins: list[float | None] = []
        rivals: list[str | None] = []
        gan_gains: list[float | None] = []
        for k in range(n):
            gan = mean_gain(GAN, k)
            gan_gains.append(gan)
            scored = [(m, v) for m in methods if m != GAN and (v := mean_gain(m, k)) is not None]
            if gan is None or not scored:
                margins.append(None)
                rivals.append(None)
                continue
            value, rival = margin_over_best(gan, scored, "higher")
            margins.append(value)
            rivals.append(rival)
        known = [m for m in margins if m is not None]
        wins = sum(m > 0 for m in known)
        rows.append(
            {
                "pair": pair,
                "gan_gains": gan_gains,
                "margins": margins,
                "best_baselines": rivals,
                "wins": wins,
                "runs": len(known),
                "mean": float(np.mean(known)) if known else None,
                "sd": float(np.std(known, ddof=1)) if len(known) > 1 else None,
                "verdict": None
                if not known
                else "won in every run"
                if wins == len(known)
                else "lost in every run"
                if wins == 0
                else "depends on the run",
            }
        )
    per_member = [
        sum(1 for row in rows if row["margins"][k] is not None and row["margins"][k] > 0) for k in range(n)
    ]
    rhos: list[float | None] = []
    for k in range(n):
        points = [
            (row["gan_gains"][k], d)
            for row in rows
            if row["gan_gains"][k] is not None and (d := finite((distances or {}).get(row["pair"]))) is not None
        ]
        rhos.append(spearman(*zip(*points, strict=True)) if len(points) >= MIN_PAIRS else None)
    return {
        **_rank_agreement([row["gan_gains"] for row in rows], n),
        "measure": "kid_gain",
        "members": n,
        "seeds": seeds,
        "n_pairs": len(rows),
        "wins_per_member": per_member,
        "wins_min": min(per_member),
        "wins_median": float(np.median(per_member)),
        "wins_max": max(per_member),
        "pairs": rows,
        # Spearman rho of the GAN's gain against the combined distance, per run (None: too few
        # pairs with a distance, or a constant)
        "rho_per_member": rhos,
        "won_in_every_run": [r["pair"] for r in rows if r["verdict"] == "won in every run"],
        "lost_in_every_run": [r["pair"] for r in rows if r["verdict"] == "lost in every run"],
        "depends_on_the_run": [r["pair"] for r in rows if r["verdict"] == "depends on the run"],
    }
