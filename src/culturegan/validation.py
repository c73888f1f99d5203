"""The data validation gate: a Great Expectations suite over the manifest, with Data Docs.

GX validates three batches: the manifest itself, image counts per (style, split), and each test
image's exact perceptual-hash match among the train images of its style (a train/test leak).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from culturegan.config import Params
from culturegan.data.manifest import MANIFEST_COLUMNS, MANIFEST_NAME, SPLITS, read_manifest
from culturegan.errors import ValidationFailed
from culturegan.fileio import atomic_write_text

log = logging.getLogger(__name__)

SITE_NAME = "culturegan"
RUN_NAME = "validate"
# Data source, suite, validation definition, checkpoint and Data Docs folder share each
# batch's name.
MANIFEST_SUITE = "culturegan_manifest"
COUNTS_SUITE = "culturegan_style_split_counts"
LEAKS_SUITE = "culturegan_train_test_leaks"
SUITES = (MANIFEST_SUITE, COUNTS_SUITE, LEAKS_SUITE)
# How many offending rows GX returns per expectation; the summary quotes a few of them.
_PARTIAL_ROWS = 20
_EXAMPLES = 3


@dataclass(frozen=True)
class CheckResult:
    name: str  # "<suite>/<check>", e.g. "culturegan_manifest/sha256_unique"
    success: bool
    observed: str  # what GX observed, short
    message: str = ""  # the summary line when the check failed: expected vs observed

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "success": self.success,
            "observed": self.observed,
            "message": self.message,
        }


@dataclass
class ValidationReport:
    success: bool
    checks: list[CheckResult]
    summary: str  # one line per failed check, or one line saying everything passed
    docs_index: Path  # Data Docs index.html
    rows: int = 0
    styles: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "summary": self.summary,
            "docs_index": str(self.docs_index),
            "rows": self.rows,
            "styles": list(self.styles),
            "checks_total": len(self.checks),
            "checks_failed": len(self.failures),
            "seconds": round(self.seconds, 3),
            "checks": [c.to_dict() for c in self.checks],
        }

    def raise_for_failure(self) -> None:
        if not self.success:
            raise ValidationFailed(
                f"data validation failed ({len(self.failures)} check(s)):\n{self.summary}",
                hint=f"see the Data Docs at {self.docs_index}",
            )


# --- the frames GX validates -------------------------------------------------------------------


def required_styles(params: Params) -> list[str]:
    """Styles that params say must be present: the synthetic styles, or the renamed source domains."""
    if params.data.is_synthetic:
        return list(params.data.synthetic.styles)
    return sorted(set(params.data.style_names.values()))


def style_split_counts(manifest: pd.DataFrame, required: list[str]) -> pd.DataFrame:
    """One row per (style, split) with its image count; absent combinations count 0.

    `imbalance` is the count over the smallest count of the same split, so its maximum is the
    split's largest / smallest ratio; it is null where the smallest count is 0 (undefined).
    """
    columns = ["style", "split", "count", "smallest", "imbalance"]
    if not {"style", "split"} <= set(manifest.columns):
        return pd.DataFrame(
            {c: pd.Series(dtype="float64" if c == "imbalance" else "object") for c in columns}
        )
    styles = sorted(set(manifest["style"].dropna().astype(str)) | set(required))
    index = pd.MultiIndex.from_product([styles, list(SPLITS)], names=["style", "split"])
    counts = (
        manifest.groupby(["style", "split"])
        .size()
        .reindex(index, fill_value=0)
        .rename("count")
        .reset_index()
    )
    counts["count"] = counts["count"].astype("int64")
    counts["smallest"] = counts.groupby("split")["count"].transform("min").astype("int64")
    counts["imbalance"] = counts["count"] / counts["smallest"].where(counts["smallest"] > 0)
    return counts[columns]


def phash_leaks(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per test image; `train_match` is a train image of the same style with the same
    perceptual hash (null when there is none, which is what the gate expects)."""
    columns = ["style", "path", "phash", "train_match"]
    if not {"style", "split", "path", "phash"} <= set(manifest.columns):
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    known = manifest.dropna(subset=["style", "phash"])
    test = known.loc[known["split"] == "test", ["style", "path", "phash"]]
    train = (
        known.loc[known["split"] == "train", ["style", "phash", "path"]]
        .sort_values("path")
        .drop_duplicates(["style", "phash"])
        .rename(columns={"path": "train_match"})
    )
    leaks = test.merge(train, on=["style", "phash"], how="left")
    return leaks[columns].reset_index(drop=True)


# --- the checks: one GX expectation each, with the sentence that explains its failure ---------


@dataclass(frozen=True)
class _Check:
    name: str
    expectation: Any  # a gx.expectations.Expectation
    explain: Callable[[dict[str, Any]], str]  # GX result dict -> "what was expected, what was seen"


def _plain(value: Any) -> Any:
    """numpy scalars as Python values, so messages read 8 rather than np.int64(8)."""
    return value.item() if hasattr(value, "item") else value


def _examples(result: dict[str, Any], index_col: str = "path") -> str:
    rows = result.get("partial_unexpected_index_list") or []
    shown = [str(r.get(index_col)) for r in rows[:_EXAMPLES]]
    return f" (e.g. {', '.join(shown)})" if shown else ""


def _found(result: dict[str, Any]) -> str:
    counts = result.get("partial_unexpected_counts") or []
    return ", ".join(f"{_plain(c['value'])!r} ({c['count']})" for c in counts[:_EXAMPLES])


def _rows_line(label: str, column: str, expected: str) -> Callable[[dict[str, Any]], str]:
    def explain(r: dict[str, Any]) -> str:
        found = _found(r)
        return (
            f"{label}: {r.get('unexpected_count')} of {r.get('element_count')} images, expected {column} "
            f"{expected}{', found ' + found if found else ''}{_examples(r)}"
        )

    return explain


def _manifest_checks(params: Params, required: list[str]) -> list[_Check]:
    import great_expectations as gx

    e = gx.expectations
    v = params.validation
    checks = [
        _Check(
            "columns",
            e.ExpectTableColumnsToMatchSet(column_set=list(MANIFEST_COLUMNS), exact_match=True),
            lambda r: (
                f"manifest columns: expected exactly {list(MANIFEST_COLUMNS)}, found {r.get('observed_value')} "
                f"(mismatch: {(r.get('details') or {}).get('mismatched')}; run `culturegan prepare` to rebuild it)"
            ),
        ),
    ]
    for col in MANIFEST_COLUMNS:
        checks.append(
            _Check(
                f"{col}_not_null",
                e.ExpectColumnValuesToNotBeNull(column=col),
                lambda r, col=col: (
                    f"missing values: {r.get('unexpected_count')} of {r.get('element_count')} rows have no "
                    f"{col}, expected a value in every row{_examples(r)}"
                ),
            )
        )
    checks += [
        _Check(
            "sha256_unique",
            e.ExpectColumnValuesToBeUnique(column="sha256"),
            lambda r: (
                f"duplicate sha256: {r.get('unexpected_count')} images share their sha256 with another image "
                f"(exact duplicates), expected every sha256 to be unique{_examples(r)}"
            ),
        ),
        _Check(
            "path_unique",
            e.ExpectColumnValuesToBeUnique(column="path"),
            lambda r: (
                f"duplicate path: {r.get('unexpected_count')} rows repeat a path, expected one row per image, "
                f"found {_found(r)}"
            ),
        ),
        _Check(
            "sha256_format",
            e.ExpectColumnValuesToMatchRegex(column="sha256", regex=r"^[0-9a-f]{64}$"),
            _rows_line("bad sha256", "sha256", "64 lowercase hex digits"),
        ),
        _Check(
            "phash_format",
            e.ExpectColumnValuesToMatchRegex(column="phash", regex=r"^[0-9a-f]{16}$"),
            _rows_line("bad phash", "phash", "16 lowercase hex digits"),
        ),
        _Check(
            "path_format",
            e.ExpectColumnValuesToMatchRegex(
                column="path", regex=r"^styles/[a-z][a-z0-9_]*/(?:train|test)/[^/]+\.png$"
            ),
            _rows_line("bad path", "path", "styles/<style>/<split>/<name>.png"),
        ),
        _Check(
            "split_known",
            e.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
            _rows_line("unknown split", "split", f"in {list(SPLITS)}"),
        ),
        _Check(
            "mode_allowed",
            e.ExpectColumnValuesToBeInSet(column="mode", value_set=list(v.modes)),
            _rows_line("wrong mode", "mode", f"in {list(v.modes)} (validation.modes)"),
        ),
    ]
    for col in ("width", "height"):
        checks.append(
            _Check(
                f"{col}_in_range",
                e.ExpectColumnValuesToBeBetween(
                    column=col, min_value=v.min_size, max_value=v.max_size
                ),
                _rows_line(
                    f"{col} out of range",
                    col,
                    f"between {v.min_size} and {v.max_size} (validation.min_size/max_size)",
                ),
            )
        )
    checks += [
        _Check(
            "not_blank",
            e.ExpectColumnValuesToBeBetween(column="intensity_std", min_value=v.min_intensity_std),
            _rows_line(
                "blank images",
                "intensity_std",
                f"at least {v.min_intensity_std} (validation.min_intensity_std)",
            ),
        ),
        _Check(
            "at_least_two_styles",
            e.ExpectColumnUniqueValueCountToBeBetween(column="style", min_value=2),
            lambda r: (
                f"too few styles: the manifest has {r.get('observed_value')} style(s), expected at least 2 "
                "(a style transfer needs a pair)"
            ),
        ),
    ]
    if required:
        source = "data.synthetic.styles" if params.data.is_synthetic else "data.style_names"
        checks.append(
            _Check(
                "required_styles_present",
                e.ExpectColumnDistinctValuesToContainSet(column="style", value_set=list(required)),
                lambda r: (
                    f"missing styles: {sorted(r.get('partial_missing_list') or [])} not in the "
                    f"manifest, expected all of {required} ({source})"
                ),
            )
        )
    return checks


def _count_rows(r: dict[str, Any]) -> str:
    parts = []
    for row in (r.get("partial_unexpected_index_list") or [])[:_PARTIAL_ROWS]:
        n = int(row["count"])
        parts.append(
            f"style '{row['style']}' split '{row['split']}' has {n} images{' (missing)' if n == 0 else ''}"
        )
    return ", ".join(parts) or f"{r.get('unexpected_count')} style/split combinations"


def _counts_checks(params: Params, counts: pd.DataFrame) -> list[_Check]:
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    e = gx.expectations
    v = params.validation
    checks = []
    for split, minimum, key in (
        ("train", v.min_train_per_style, "min_train_per_style"),
        ("test", v.min_test_per_style, "min_test_per_style"),
    ):
        checks.append(
            _Check(
                f"min_{split}_per_style",
                e.ExpectColumnValuesToBeBetween(
                    column="count", min_value=minimum, row_condition=Column("split") == split
                ),
                lambda r, minimum=minimum, key=key: (
                    f"too few images: {_count_rows(r)}, expected at least {minimum} (validation.{key})"
                ),
            )
        )

    def explain_imbalance(r: dict[str, Any]) -> str:
        parts = []
        for row in (r.get("partial_unexpected_index_list") or [])[:_PARTIAL_ROWS]:
            same_split = counts[counts["split"] == row["split"]]
            smallest = same_split.loc[same_split["count"].idxmin()]
            parts.append(
                f"split '{row['split']}' style '{row['style']}' has {int(row['count'])} images, "
                f"{float(row['imbalance']):.2f}x the smallest ('{smallest['style']}', {int(smallest['count'])})"
            )
        return (
            f"class imbalance: {', '.join(parts)}, expected at most {v.max_class_imbalance}x "
            "(validation.max_class_imbalance)"
        )

    checks.append(
        _Check(
            "class_balance",
            e.ExpectColumnValuesToBeBetween(column="imbalance", max_value=v.max_class_imbalance),
            explain_imbalance,
        )
    )
    return checks


def _leak_checks() -> list[_Check]:
    import great_expectations as gx

    def explain(r: dict[str, Any]) -> str:
        rows = (r.get("partial_unexpected_index_list") or [])[:_EXAMPLES]
        shown = ", ".join(f"{x['path']} = {x['train_match']}" for x in rows)
        return (
            f"train/test leak: {r.get('unexpected_count')} test images have the same perceptual hash as a "
            f"train image of their style, expected none (e.g. {shown})"
        )

    return [
        _Check(
            "no_phash_collision",
            gx.expectations.ExpectColumnValuesToBeNull(column="train_match"),
            explain,
        )
    ]


# --- the GX project ----------------------------------------------------------------------------


def _file_context(project_dir: Path, docs_dir: Path) -> Any:
    """A file Data Context under `project_dir`/gx whose only Data Docs site writes to `docs_dir`."""
    # Usage statistics must never leave the machine; GX reads this when it is imported.
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=project_dir)
    context.variables.analytics_enabled = False
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    site = {
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(docs_dir),
        },
    }
    sites = context.get_site_names()
    for name in sites:
        if name != SITE_NAME:  # the default local_site would write inside the GX project instead
            context.delete_data_docs_site(name)
    if SITE_NAME in sites:
        context.update_data_docs_site(SITE_NAME, site)
    else:
        context.add_data_docs_site(SITE_NAME, site)
    context.variables.save()
    return context


def _forget_previous_runs(context: Any, docs_dir: Path) -> None:
    """Drop earlier results of these suites so the Data Docs show this run only.

    DVC deletes docs_dir before a run, and an index listing old results would link to pages that
    no longer exist; the JSON result and the docs then describe the same run.
    """
    store = context.validation_results_store
    for key in store.list_keys():
        if getattr(getattr(key, "expectation_suite_identifier", None), "name", None) in SUITES:
            store.remove_key(key)
    for suite in SUITES:
        shutil.rmtree(docs_dir / "validations" / suite, ignore_errors=True)


def _run_checkpoint(
    context: Any,
    name: str,
    frame: pd.DataFrame,
    checks: list[_Check],
    index_columns: list[str],
    run_id: Any,
) -> list[CheckResult]:
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    # One data source per batch: replacing a shared one would drop the other batches' assets.
    datasource = context.data_sources.add_or_update_pandas(name)
    batch = datasource.add_dataframe_asset(name).add_batch_definition_whole_dataframe("whole")
    for check in checks:
        check.expectation.meta = {"check": check.name}
    suite = context.suites.add_or_update(
        gx.ExpectationSuite(name=name, expectations=[c.expectation for c in checks])
    )
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[SITE_NAME])],
            result_format={
                "result_format": "SUMMARY",
                "partial_unexpected_count": _PARTIAL_ROWS,
                "unexpected_index_column_names": index_columns,
            },
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
    by_name = {c.name: c for c in checks}
    got: dict[str, CheckResult] = {}
    for suite_result in result.run_results.values():
        for r in suite_result.results:
            check = by_name[r.expectation_config.meta["check"]]
            got[check.name] = _check_result(name, check, r)
    # GX groups results by metric; report them in the order the suite declares them.
    return [got[c.name] for c in checks]


def _exception_message(info: Any) -> str | None:
    """The first error GX caught while computing an expectation's metrics, if any.

    exception_info is either one {raised_exception, exception_message} dict or a dict of them
    keyed by metric.
    """
    if not isinstance(info, dict):
        return None
    candidates = [info, *(v for v in info.values() if isinstance(v, dict))]
    for c in candidates:
        if c.get("raised_exception"):
            return str(c.get("exception_message") or "unknown error").splitlines()[0]
    return None


def _check_result(suite: str, check: _Check, r: Any) -> CheckResult:
    name = f"{suite}/{check.name}"
    error = _exception_message(r.exception_info)
    if error is not None:
        return CheckResult(name, False, "error", f"{check.name}: the check could not run: {error}")
    res = dict(r.result or {})
    if res.get("observed_value") is not None:
        observed = str(_plain(res["observed_value"]))
    elif "partial_missing_list" in res:
        observed = f"missing {res['partial_missing_list']}"
    else:
        observed = f"{res.get('unexpected_count', 0)} of {res.get('element_count', 0)} unexpected"
    return CheckResult(name, bool(r.success), observed, "" if r.success else check.explain(res))


# --- the stage ---------------------------------------------------------------------------------


def validate_data(
    params: Params, root: Path, docs_dir: Path | None = None, result_path: Path | None = None
) -> ValidationReport:
    """Run the GX gate on `root`/manifest.parquet; build Data Docs in `docs_dir` pass or fail.

    Returns the report (check `.success` or call `.raise_for_failure()`); writes its JSON to
    `result_path` if given. The GX project lives in `params.data.cache_dir`/gx.
    """
    started = time.perf_counter()
    root = Path(root)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ValidationFailed(
            f"{manifest_path} not found", hint="run `culturegan prepare` first to build it"
        )
    try:
        manifest = read_manifest(root)
    except (OSError, ValueError) as err:  # pyarrow: ArrowIOError, ArrowInvalid
        raise ValidationFailed(
            f"{manifest_path} cannot be read: {err}",
            hint="run `culturegan prepare` again to rebuild it",
        ) from None
    docs_dir = Path(docs_dir if docs_dir is not None else params.validation.docs_dir).resolve()
    required = required_styles(params)
    counts = style_split_counts(manifest, required)
    leaks = phash_leaks(manifest)

    context = _file_context(Path(params.data.cache_dir).resolve(), docs_dir)
    _forget_previous_runs(context, docs_dir)
    from great_expectations.core.run_identifier import RunIdentifier

    run_id = RunIdentifier(run_name=RUN_NAME)
    index_manifest = ["path"] if "path" in manifest.columns else []
    checks = _run_checkpoint(
        context,
        MANIFEST_SUITE,
        manifest,
        _manifest_checks(params, required),
        index_manifest,
        run_id,
    )
    checks += _run_checkpoint(
        context,
        COUNTS_SUITE,
        counts,
        _counts_checks(params, counts),
        ["style", "split", "count"],
        run_id,
    )
    checks += _run_checkpoint(context, LEAKS_SUITE, leaks, _leak_checks(), ["path"], run_id)

    failed = [c for c in checks if not c.success]
    styles = (
        sorted(manifest["style"].dropna().astype(str).unique())
        if "style" in manifest.columns
        else []
    )
    if failed:
        summary = "\n".join(c.message for c in failed)
    else:
        summary = (
            f"all {len(checks)} checks passed on {len(manifest)} images in {len(styles)} styles"
        )
    report = ValidationReport(
        success=not failed,
        checks=checks,
        summary=summary,
        docs_index=docs_dir / "index.html",
        rows=len(manifest),
        styles=styles,
        seconds=time.perf_counter() - started,
    )
    (log.info if report.success else log.warning)("data validation: %s", summary)
    if result_path is not None:
        atomic_write_text(
            result_path, json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n"
        )
    return report
