"""Glue between KFP artifacts and the stage functions: params, stage roots, metadata and metrics.

The component bodies import this module inside the image, so it imports neither kfp nor any
heavy library at module level; artifacts are duck-typed (`.path`, `.metadata`, `.log_metric`).
"""

from __future__ import annotations

import base64
import json
import math
import mimetypes
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from culturegan.config import Pair, Params, dump_params, parse_params
from culturegan.errors import ConfigError
from culturegan.fileio import atomic_write_text
from culturegan.tracking.parent_run import use_parent_run  # noqa: F401 - the KFP steps call kfp_io.use_parent_run

PARAMS_SOURCE = "pipeline parameter 'params'"
# KFP's UI lists metadata and metrics in one table: keep both short.
MAX_METRICS = 200
MAX_FACT_CHARS = 200
MAX_FACT_ITEMS = 32
KFP_RUN_TAG = "culturegan.kfp_run_id"  # on the MLflow parent run: the KFP run it belongs to


def params_text(params: Params) -> str:
    """The pipeline parameter `params`: the effective params (every key, defaults included) as JSON.

    One line: kfp copies the default into a comment of the compiled YAML without prefixing
    further lines with `#`, so a multi-line default would make that file invalid YAML.
    """
    return json.dumps(dump_params(params))


def parse(text: str) -> Params:
    """The pipeline parameter `params`, validated again in every step (it may be edited at submit time)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{PARAMS_SOURCE} is not valid JSON: {err}",
            hint="pass the whole params mapping as JSON (as `culturegan pipeline compile` writes it)",
        ) from None
    return parse_params(raw, PARAMS_SOURCE)


def run_seed(value: Any) -> int:
    """The `seed` of an item of the pipeline parameter `runs` as an int.

    JSON numbers in a pipeline's parameters may reach a step as floats (0.0), so an integral
    float is accepted; anything else is a ConfigError naming the parameter.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            f"seed {value!r} in pipeline parameter 'runs' is not a non-negative integer",
            hint='each item of runs is {"pair": "<source>-<target>", "seed": <int >= 0>}',
        )
    return value


def run_pair(text: str) -> Pair:
    """The `pair` of an item of the pipeline parameter `runs`, parsed once for the stage functions:
    a bad pair is a ConfigError (`Pair.parse`)."""
    return Pair.parse(text)


def numbers(result: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numeric leaves of a nested result dict as {"a.b": value}; booleans are not numbers."""
    out: dict[str, float] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(numbers(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def _fact(value: Any) -> Any:
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str) and len(value) <= MAX_FACT_CHARS and not os.path.isabs(value):
        return value  # paths of the step's own file system mean nothing elsewhere
    if (
        isinstance(value, (list, tuple))
        and len(value) <= MAX_FACT_ITEMS
        and all(isinstance(v, (bool, int, float, str)) and _fact(v) is not None for v in value)
    ):
        return list(value)
    return None


def facts(result: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level small facts of a result dict (numbers, short strings, short lists of them) for
    artifact metadata; nulls, nested dicts and local paths are left out."""
    return {str(k): f for k, v in result.items() if (f := _fact(v)) is not None}


def record(result: Mapping[str, Any], metrics: Any | None = None, *artifacts: Any, **extra: Any) -> None:
    """Log the numbers of `result` to a Metrics artifact and its small facts (+ `extra`) as metadata."""
    if metrics is not None:
        for name, value in list(numbers(result).items())[:MAX_METRICS]:
            metrics.log_metric(name, value)
    for artifact in artifacts:
        artifact.metadata.update({**facts(result), **extra})


def gather(roots: Iterable[str | Path], dest: Path) -> Path:
    """One stage root from several per-run artifacts: merge each root's tree into `dest`.

    The train and evaluate steps of each (pair, seed) write `<root>/<pair>/seed<seed>/...`;
    analyze reads one `runs/` and one `eval/` holding every pair and seed, so folders merge and
    only a file from two artifacts is refused. Copies, not links: the stages walk the tree with
    `Path.rglob`, which does not enter linked folders.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for root in roots:
        root = Path(root)
        for entry in sorted(root.rglob("*")):
            target = dest / entry.relative_to(root)
            if entry.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if target.exists():
                raise ConfigError(
                    f"{entry.relative_to(root).as_posix()} comes from two pipeline artifacts "
                    f"({root} and an earlier one)",
                    hint="the {pair, seed} items of the pipeline parameter 'runs' must not repeat",
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(entry, target)
    return dest


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(Path(path), json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def validation_markdown(report: Mapping[str, Any]) -> str:
    """The gate's result (ValidationReport.to_dict()) as a Markdown page for the KFP UI."""
    verdict = "passed" if report["success"] else "FAILED"
    lines = [
        f"# Data validation {verdict}",
        "",
        (
            f"{report['rows']} images, styles: {', '.join(report['styles']) or 'none'}; "
            f"{report['checks_failed']} of {report['checks_total']} checks failed."
        ),
        "",
        "```",
        str(report["summary"]),
        "```",
        "",
        "| check | result | observed |",
        "|---|---|---|",
    ]
    for check in report["checks"]:
        lines.append(
            f"| {_cell(check['name'])} | {'ok' if check['success'] else 'FAILED'} | {_cell(check['observed'])} |"
        )
    lines += ["", "The full Great Expectations Data Docs are the step's `data_docs` artifact."]
    return "\n".join(lines) + "\n"


def evaluation_numbers(result: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The GAN's metrics of every direction the evaluate stage scored, as {"<direction>.<metric>": v}."""
    from culturegan.registry.gate import GAN

    out: dict[str, float] = {}
    for direction, summary in result.items():
        metrics = json.loads(Path(summary["metrics"]).read_text(encoding="utf-8"))
        gan = metrics.get("methods", {}).get(GAN)
        if isinstance(gan, Mapping):
            out.update(numbers(gan, f"{direction}."))
    return out


_SRC = re.compile(r'(\bsrc=")([^"#?:]+)(")')


def inline_html(index: Path) -> str:
    """`index` with the images it links beside it embedded as data URIs: one file, viewable alone.

    KFP's UI shows an HTML artifact as a single file, so relative image links would break there.
    """
    index = Path(index)
    base = index.parent.resolve()

    def embed(match: re.Match[str]) -> str:
        path = (base / match.group(2)).resolve()
        if not path.is_file() or base not in path.parents:
            return match.group(0)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"{match.group(1)}data:{mime};base64,{data}{match.group(3)}"

    return _SRC.sub(embed, index.read_text(encoding="utf-8"))


def open_parent(params: Params, pipeline_job: str, pipeline_run_id: str) -> str:
    """A new MLflow parent run for one pipeline run, named after the KFP job and tagged with its id.

    Uses CULTUREGAN_PARENT_RUN_ID instead when that is set (tracking.start_parent). The steps get
    the id as a parameter: unlike a DVC parent run, this one carries no workspace tag, so no stage
    run outside the pipeline can take it for its own.
    """
    from mlflow import MlflowClient

    from culturegan.tracking.parent_run import start_parent
    from culturegan.tracking.store import resolve_tracking_uri

    run_id = start_parent(params.tracking, params, name=pipeline_job)
    MlflowClient(resolve_tracking_uri(params.tracking)).set_tag(run_id, KFP_RUN_TAG, pipeline_run_id)
    return run_id


def close_parent(params: Params, pipeline_run_id: str, state: str) -> str:
    """At the pipeline's exit (KFP state SUCCEEDED, FAILED or CANCELLED): end its parent run.

    On success the analyze step has already ended it (FINISHED) and it is left alone; otherwise
    a parent run still RUNNING is marked FAILED (KILLED when cancelled) instead of staying open
    forever. Returns the MLflow status given, or "" when nothing was left open.
    """
    if state == "SUCCEEDED":
        return ""
    from mlflow import MlflowClient

    from culturegan.tracking.parent_run import finish_run
    from culturegan.tracking.store import configure, resolve_tracking_uri

    experiment_id = configure(params.tracking)
    runs = MlflowClient(resolve_tracking_uri(params.tracking)).search_runs(
        [experiment_id], filter_string=f"tags.`{KFP_RUN_TAG}` = '{pipeline_run_id}'"
    )
    status = "KILLED" if state == "CANCELLED" else "FAILED"
    closed = ""
    for run in runs:
        if run.info.status == "RUNNING":
            finish_run(params.tracking, run.info.run_id, status)
            closed = status
    return closed
