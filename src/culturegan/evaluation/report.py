"""The analysis as one self-contained, offline HTML page (index.html plus PNGs beside it), and its MLflow upload.

Every string reaches the page through Jinja2 autoescaping; the page loads nothing from the network.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from culturegan.config import TrackingConfig
from culturegan.evaluation.measures import COMBINED, GAN, MEASURES, metric_info
from culturegan.fileio import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

INDEX_HTML = "index.html"
GRIDS_DIR = "grids"
TEMPLATE = "report.html.j2"
ARROWS = {"higher": "\u2191", "lower": "\u2193"}
DIRECTION_TEXT = {"higher": "higher is better", "lower": "lower is better"}
GROUP_LABELS = {
    "distribution": "distribution",
    "style": "style (classifier)",
    "content": "content kept",
    "ground truth": "against the true target rendering",
    "cost": "cost",
    "other": "other",
}


def fmt(value: Any, digits: int = 4) -> str:
    """A number for the page: 4 significant digits, an em dash for missing or non-finite values."""
    if value is None or isinstance(value, bool):
        return "\u2014"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return "\u2014"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


def _spread(s: dict[str, Any] | None) -> str | None:
    """The seed SD for display, or None when there is none worth showing (one seed, a constant)."""
    if not s or s.get("sd") is None or s["sd"] <= 1e-9 * max(1.0, abs(s["mean"])):
        return None
    return fmt(s["sd"], 2)


def _slug(index: int, pair: str) -> str:
    # The pair name comes from a file's content: keep only safe characters in file and anchor names.
    return f"pair{index}-" + (re.sub(r"[^a-z0-9_-]+", "_", pair.lower())[:40] or "x")


def _copy_into(src: str | Path | None, out_dir: Path, name: str) -> str | None:
    """Copy `src` to out_dir/name unless it is that file already; the relative name, or None if absent."""
    if not src or not Path(src).is_file():
        return None
    dest = out_dir / name
    if Path(src).resolve() != dest.resolve():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
    return name


def _header(columns: list[str], space_labels: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """Two header rows: groups (with the feature space named for distribution metrics) and metrics."""
    groups: list[dict[str, Any]] = []
    cells = []
    for col in columns:
        info = metric_info(col)
        label = GROUP_LABELS.get(info["group"], info["group"])
        if info["space"]:
            label = f"{label} \u2014 {space_labels.get(info['space'], info['space_label'])}"
        if groups and groups[-1]["label"] == label:
            groups[-1]["span"] += 1
        else:
            groups.append({"label": label, "span": 1})
        cells.append(
            {
                "key": col,
                "label": info["label"],
                "arrow": ARROWS.get(info["direction"] or "", ""),
                "title": f"{col}: {DIRECTION_TEXT.get(info['direction'] or '', 'no better direction')}"
                + (f"; {info['space_label']}" if info["space_label"] else ""),
            }
        )
    return groups, cells


def _pair_view(
    index: int, pair: dict[str, Any], out_dir: Path, space_labels: dict[str, str]
) -> dict[str, Any]:
    slug = _slug(index, pair["pair"])
    grid = None
    if pair.get("grid"):
        name = _copy_into(
            pair["grid"]["source"], out_dir, f"{GRIDS_DIR}/{slug}-seed{pair['grid']['seed']}.png"
        )
        if name:
            grid = {"src": name, "seed": pair["grid"]["seed"]}
    groups, header = _header(pair["columns"], space_labels)
    rows = []
    for method in pair["methods"]:
        cells = []
        for col in pair["columns"]:
            s = pair["metrics"][method].get(col)
            cells.append(
                {
                    "text": fmt(s["mean"]) if s else "\u2014",
                    "sd": _spread(s),
                    "best": method in pair["best"].get(col, []),
                }
            )
        rows.append({"method": method, "is_gan": method == GAN, "cells": cells})
    ref = pair["reference"]

    def ref_value(key: str) -> str:
        s = ref.get(key)
        return fmt(s["mean"]) if s else "\u2014"

    references = []
    for key, s in sorted(ref.items()):
        if s is None or key.endswith(("_std", "n_per_half")):
            continue
        references.append({"key": key, "value": fmt(s["mean"]), "sd": _spread(s)})
    margins = []
    for name, m in pair["margin"].items():
        if m is None or name == "kid_raw":
            continue
        margins.append(
            {
                "label": MEASURES[name]["label"],
                "value": f"{m['value']:+.4g}",
                "better": m["value"] > 0,
                "rival": m["best_baseline"],
            }
        )
    return {
        "slug": slug,
        "pair": pair["pair"],
        "source": pair["source"],
        "target": pair["target"],
        "seeds": pair["seeds"],
        "ground_truth": pair["ground_truth"],
        "distance": fmt(pair["distance"].get(COMBINED), 3),
        "run_ids": pair.get("run_ids") or {},
        "grid": grid,
        "methods": pair["methods"],
        "groups": groups,
        "header": header,
        "rows": rows,
        "references": references,
        "floor": ref_value("target_real.kid_classifier_floor"),
        "gap": ref_value("source_vs_target.kid_classifier"),
        "ceiling": ref_value("target_real.style_accuracy"),
        "margins": margins,
        "skipped": pair.get("skipped") or {},
        "n_images": pair.get("n_images") or {},
    }


def _corr_view(row: dict[str, Any]) -> dict[str, Any]:
    view = {
        "measure": MEASURES[row["measure"]]["label"],
        "view": row["view"].replace("_", " "),
        "n": row["n_pairs"],
        "primary": row.get("primary", False),
        "estimated": row["status"] == "estimated",
        "reason": row.get("reason") or "",
        "rho": "\u2014",
        "ci": "\u2014",
        "p": "\u2014",
        "p_min": "\u2014",
        "relabellings": "\u2014",
    }
    if row["status"] == "estimated":
        perm, boot = row["permutation"], row["bootstrap"]
        view["rho"] = f"{row['rho']:+.2f}"
        if boot["ci"] is not None:
            view["ci"] = f"{boot['ci'][0]:+.2f} to {boot['ci'][1]:+.2f}"
        else:
            view["ci"] = f"none ({boot['valid']} of {boot['samples']} resamples usable)"
        if perm["exact"]:
            view["p"] = perm["p_fraction"] + (
                f" ({perm['p']:.3g})" if "/" in perm["p_fraction"] else ""
            )
            view["p_min"] = f"{perm['p_min_fraction']} ({perm['p_min']:.3g})"
            view["relabellings"] = f"{perm['relabellings']} (all {perm['k']}!)"
        else:
            view["p"] = f"{perm['p']:.3g}"
            view["p_min"] = f"\u2248 {perm['p_min']:.3g}"
            view["relabellings"] = f"{perm['relabellings'] - 1} sampled"
    return view


def _asym_view(asym: list[dict[str, Any]], measure: str) -> list[dict[str, Any]]:
    rows = []
    for e in asym:
        m = e["measures"].get(measure)
        if m is None:
            continue

        def side(s: dict[str, Any]) -> str:
            sd = _spread(s)
            return fmt(s["mean"]) + (f" \u00b1 {sd}" if sd else "")

        rows.append(
            {
                "forward": e["forward"],
                "backward": e["backward"],
                "f": side(m["forward"]),
                "b": side(m["backward"]),
                "n": f"{m['forward']['n']} / {m['backward']['n']}",
                "diff": f"{m['difference']:+.4g}",
                "se": fmt(m["se"], 2) if m.get("se") is not None else "\u2014",
                "distance": fmt(e.get("distance"), 3),
            }
        )
    return rows


def _classifier_view(clf: dict[str, Any] | None) -> dict[str, Any] | None:
    if not clf:
        return None
    styles = [str(s) for s in clf.get("styles") or []]
    matrix = (clf.get("confusion") or {}).get("matrix") or []
    per_style = clf.get("test_accuracy_per_style") or {}
    return {
        "accuracy": fmt(clf.get("test_accuracy"), 3),
        "styles": styles,
        "rows": [
            {
                "style": s,
                "counts": [str(int(c)) for c in (matrix[i] if i < len(matrix) else [])],
                "accuracy": fmt(per_style.get(s), 3),
            }
            for i, s in enumerate(styles)
        ],
        "n_test": clf.get("n_test") or {},
    }


def _classifier_runs_view(runs: dict[str, Any] | None) -> dict[str, Any] | None:
    if not runs:
        return None

    def signed(x: float | None) -> str:
        return "\u2014" if x is None else f"{round(x, 3) or 0.0:+.3f}"  # no "-0.000"

    rows = []
    for r in runs["pairs"]:
        cells = [
            {
                "text": signed(m),
                "cls": "" if m is None else ("good" if m > 0 else "bad"),
                "rival": rival or "-",
            }
            for m, rival in zip(r["margins"], r["best_baselines"], strict=True)
        ]
        rows.append(
            {
                "pair": r["pair"],
                "cells": cells,
                "mean": signed(r["mean"]),
                "sd": "\u2014" if r["sd"] is None else f"{r['sd']:.3f}",
                "wins": f"{r['wins']}/{r['runs']}",
                "verdict": r["verdict"] or "-",
            }
        )
    return {
        "label": MEASURES[runs["measure"]]["label"],
        "members": runs["members"],
        "seeds": runs["seeds"],
        "n_pairs": runs["n_pairs"],
        "wins": runs["wins_per_member"],
        "rows": rows,
        "rhos": [signed(r) for r in runs.get("rho_per_member") or []],
        "agreement": (
            None
            if not runs.get("rank_agreement")
            else {
                "min": signed(runs["rank_agreement_min"]),
                "median": signed(runs["rank_agreement_median"]),
                "max": signed(runs["rank_agreement_max"]),
                "n": len(runs["rank_agreement"]),
            }
        ),
    }


def _run_rows(analysis: dict[str, Any]) -> list[dict[str, str | None]]:
    """One row per (directed pair, training run), then the runs no evaluated pair came from."""
    rows: list[dict[str, str | None]] = []
    used = set()
    for p in analysis["pairs"]:
        runs = p.get("run_ids") or {}
        used |= set(runs)
        rows += [{"pair": p["pair"], "run": k, "id": v} for k, v in runs.items()]
        if not runs:
            rows.append({"pair": p["pair"], "run": None, "id": None})
    rows += [
        {"pair": None, "run": k, "id": v}
        for k, v in (analysis.get("run_ids") or {}).items()
        if k not in used
    ]
    return rows


def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("culturegan.evaluation", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    return env


def render_report(
    analysis: dict[str, Any],
    out_dir: Path,
    title: str = "culturegan: transfer quality and cultural distance",
) -> Path:
    """Write out_dir/index.html for `analysis` (from analyze), copying every figure and grid beside it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    space_labels = analysis.get("space_labels") or {}
    figures = {
        name: _copy_into(path, out_dir, Path(path).name)
        for name, path in (analysis.get("figures") or {}).items()
    }
    measure = analysis["primary_metric"]
    correlations = analysis.get("correlations") or []
    primary_rows = [_corr_view(r) for r in correlations if r["measure"] == measure]
    other_rows = [_corr_view(r) for r in correlations if r["measure"] != measure]
    within = analysis.get("within_target")
    context = {
        "title": title,
        "a": analysis,
        "measure": MEASURES[measure],
        "measure_key": measure,
        "measures": MEASURES,
        "figures": figures,
        "pairs": [_pair_view(i, p, out_dir, space_labels) for i, p in enumerate(analysis["pairs"])],
        "primary_rows": primary_rows,
        "other_rows": other_rows,
        "within": _corr_view(within) if within else None,
        "difficulty": analysis.get("target_difficulty") or {"per_target": [], "per_source": []},
        "asym_rows": _asym_view(analysis.get("asymmetry") or [], measure),
        "classifier": _classifier_view(analysis.get("classifier")),
        "runs": _classifier_runs_view(analysis.get("classifier_runs")),
        "run_rows": _run_rows(analysis),
        "params_yaml": yaml.safe_dump(
            analysis.get("params") or {}, sort_keys=False, allow_unicode=True
        ),
        "culture_views": [
            v.replace("_", " ") for v in (analysis.get("culture") or {}).get("views", [])
        ],
        "arrow": ARROWS[MEASURES[measure]["direction"]],
        "tidy_name": Path(analysis.get("tidy") or "tidy.csv").name,
    }
    html = _environment().get_template(TEMPLATE).render(**context)
    index = out_dir / INDEX_HTML
    atomic_write_text(index, html)
    return index


def log_report_to_mlflow(
    out_dir: Path, tracking_cfg: TrackingConfig, parent_run_id: str | None = None
) -> str:
    """Upload the report folder as artifacts under `report/`; returns the run id used.

    With `parent_run_id` the pipeline's parent run gets the artifacts; without one a run named
    'report' is created in the configured experiment and ended.
    """
    from culturegan.tracking.store import ROLE_TAG, configure, resolve_tracking_uri
    from culturegan.tracking.tracker import MlflowTracker

    out_dir = Path(out_dir)
    if not (out_dir / INDEX_HTML).is_file():
        from culturegan.errors import SourceError

        raise SourceError(
            f"{out_dir / INDEX_HTML} not found", hint="render the report first (analyze stage)"
        )
    experiment_id = configure(tracking_cfg)
    uri = resolve_tracking_uri(tracking_cfg)
    if parent_run_id is not None:
        tracker = MlflowTracker(parent_run_id, uri)
        tracker.log_artifact(out_dir, "report")
        return parent_run_id
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(experiment_id, tags={ROLE_TAG: "report"}, run_name="report")
    try:
        MlflowTracker(run.info.run_id, uri).log_artifact(out_dir, "report")
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
