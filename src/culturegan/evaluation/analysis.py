"""The `analyze` stage: transfer quality of every directed pair against the cultural distance of its styles.

Statistics are rank-based and honest about the design: with k styles a style-relabelling test has
k! outcomes, so the smallest reachable p-value is stated beside every p (RESEARCH.md, traps 1-4).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from culturegan.config import Params, dump_params
from culturegan.errors import SourceError
from culturegan.evaluation import tables
from culturegan.evaluation.findings import (
    caveats,
    classifier_run_findings,
    honest_sentence,
    study_findings,
    validity_findings,
)
from culturegan.evaluation.measures import (
    COMBINED,
    CONTENT_MEASURES,
    GAN,
    MEASURES,
    SPACE_LABELS,
    measures_of,
)
from culturegan.evaluation.plots import plot_asymmetry, plot_methods, plot_scatter
from culturegan.evaluation.stats import MAX_EXACT_STYLES
from culturegan.fileio import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

ANALYSIS_JSON = "analysis.json"
TIDY_CSV = "tidy.csv"
SCATTER_PNG = "scatter.png"
ASYMMETRY_PNG = "asymmetry.png"
METHODS_PNG = "methods.png"
CULTURE_PNG = "culture.png"


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


# --- the analysis ----------------------------------------------------------------------------------


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
    eval_root: Path | None = None,
) -> dict[str, Any]:
    """The analysis of already-loaded metrics records and culture result; writes figures and analysis.json.

    `run_ids` are keyed by training-run folder (collect_run_ids); `eval_root`, the folder the
    records' metrics files were found in, lets each directed pair find the run that produced it.
    """
    cfg = params.analysis
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not records:
        raise SourceError("no metrics records to analyse", hint="run the evaluate stage first")
    for r in records:
        check_metrics(r, r.get("_file", f"metrics of pair {r.get('pair')!r}"))
    tables.check_culture(culture, "culture result")
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
        own = pair_run_ids(pair, group, run_ids, eval_root)
        pairs.append(
            tables.summarize_pair(
                group, tables.pair_distances(culture, first["source"], first["target"]), own
            )
        )
    pairs.sort(key=tables.pair_sort_key)

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
    correlations, primary = tables.correlation_rows(pairs, culture, params)
    within = tables.within_target(pairs, culture, params)
    difficulty = tables.target_difficulty(pairs, cfg.primary_metric)
    asym = tables.asymmetry(pairs, cfg.primary_metric)
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

    validity = metric_validity(records, MEASURES, measures_of, CONTENT_MEASURES, cfg.primary_metric)
    runs = tables.classifier_runs(records, {p["pair"]: p["distance"].get(COMBINED) for p in pairs})
    tidy = tables.tidy_rows(records)
    tables.write_tidy(tidy, out_dir / TIDY_CSV)
    analysis = {
        "format_version": 1,
        "question": "Does the quality of GAN style transfer between two cultural styles follow "
        "the cultural distance between them?",
        "summary": {
            "sentence": sentence,
            "findings": validity_findings(validity, cfg)
            + study_findings(pairs, design, asym, difficulty, cfg)
            + classifier_run_findings(runs),
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
        "classifier_runs": runs,
        "correlations": correlations,
        "primary_correlation": primary,
        "within_target": within,
        "target_difficulty": difficulty,
        "asymmetry": asym,
        "culture": {
            "styles": styles,
            "views": [v for v, _, _ in tables.distance_views(culture)],
            "combined": culture["combined"],
            "n_images": culture.get("n_images"),
        },
        "classifier": classifier,
        "run_ids": run_ids,
        "params": dump_params(params),
        "figures": figures,
        "tidy": str(out_dir / TIDY_CSV),
        "n_tidy_rows": len(tidy),
        "caveats": caveats(
            params.data.is_synthetic,
            params.train.cyclegan.source_cycle_scale if params.train.objective == "cyclegan" else None,
            classifier,
        ),
    }
    analysis = _clean(analysis)
    atomic_write_text(
        out_dir / ANALYSIS_JSON, json.dumps(analysis, indent=2, allow_nan=False) + "\n"
    )
    log.info("analysis of %d directed pairs: %s", len(pairs), sentence)
    return analysis


def analyze(
    params: Params,
    metrics_files: list[Path],
    culture_file: Path,
    out_dir: Path,
    classifier_file: Path | None = None,
    run_ids: dict[str, str] | None = None,
    eval_root: Path | None = None,
) -> dict[str, Any]:
    """Analyse evaluate-stage metrics.json files against culture.json; write analysis.json and figures.

    Pair and seed come from each file's content; `eval_root` (the folder the files are under) ties
    each file to its training run in `run_ids` (see pair_run_ids). Returns the analysis dict.
    """
    records = load_metrics(metrics_files)
    culture_file = Path(culture_file)
    culture = _read_json(culture_file, "culture file", "run the culture stage first")
    tables.check_culture(culture, str(culture_file))
    classifier = None
    if classifier_file is not None:
        classifier = _read_json(
            classifier_file, "classifier report", "run the classifier stage first"
        )
    return analyze_records(
        params,
        records,
        culture,
        out_dir,
        classifier,
        run_ids,
        culture_file.parent / CULTURE_PNG,
        eval_root,
    )


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


def pair_run_ids(
    pair: str,
    records: list[dict[str, Any]],
    run_ids: dict[str, str],
    eval_root: Path | None = None,
) -> dict[str, str]:
    """The training runs behind one directed pair, from `run_ids` keyed by run folder.

    By name: <runs>/<pair>/run_id.txt, or one per seed below it (<runs>/<pair>/seed1/run_id.txt). By
    place, with `eval_root`: the evaluate stage writes eval_root/<trained pair>/seed<k>/<direction>/
    for the model in <runs>/<trained pair>/seed<k>/, so the run whose folder leads to a record's
    metrics file produced it, the reverse direction of a CycleGAN included.
    """
    places = []
    if eval_root is not None:
        for r in records:
            folder = Path(r["_file"]).parent if r.get("_file") else None
            if folder is not None and folder.is_relative_to(eval_root):
                places.append(folder.relative_to(eval_root).as_posix())
    return {
        k: v
        for k, v in run_ids.items()
        if k == pair
        or k.startswith(pair + "/")
        or any(place == k or place.startswith(k + "/") for place in places)
    }


def write_analysis(
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
    analysis = analyze(params, files, culture_file, out_dir, classifier_file, run_ids, eval_root)
    index = render_report(analysis, out_dir)
    primary = analysis["primary_correlation"] or {}
    perm = primary.get("permutation") or {}
    margins = [
        m["value"] for p in analysis["pairs"] if (m := p["margin"].get(analysis["primary_metric"])) is not None
    ]
    runs = analysis.get("classifier_runs") or {}
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
        # directed pairs where the GAN beats the best baseline on the primary measure, of those scored
        "gan_wins": sum(v > 0 for v in margins),
        "gan_pairs_scored": len(margins),
        # the same count for relative KID gain in each classifier run (ensemble > 1), else null
        "gan_wins_per_classifier_run": runs.get("wins_per_member"),
    }
