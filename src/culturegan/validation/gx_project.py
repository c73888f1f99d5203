"""The GX project: a file Data Context with one Data Docs site, and running a suite's checkpoint
into `CheckResult`s."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from culturegan.validation.report import CheckResult
from culturegan.validation.suites import PARTIAL_ROWS, SUITES, Check, plain

SITE_NAME = "culturegan"


def file_context(project_dir: Path, docs_dir: Path) -> Any:
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


def forget_previous_runs(context: Any, docs_dir: Path) -> None:
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


def run_checkpoint(
    context: Any,
    name: str,
    frame: pd.DataFrame,
    checks: list[Check],
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
                "partial_unexpected_count": PARTIAL_ROWS,
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


def _check_result(suite: str, check: Check, r: Any) -> CheckResult:
    name = f"{suite}/{check.name}"
    error = _exception_message(r.exception_info)
    if error is not None:
        return CheckResult(name, False, "error", f"{check.name}: the check could not run: {error}")
    res = dict(r.result or {})
    if res.get("observed_value") is not None:
        observed = str(plain(res["observed_value"]))
    elif "partial_missing_list" in res:
        observed = f"missing {res['partial_missing_list']}"
    else:
        observed = f"{res.get('unexpected_count', 0)} of {res.get('element_count', 0)} unexpected"
    return CheckResult(name, bool(r.success), observed, "" if r.success else check.explain(res))
