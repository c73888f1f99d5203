"""The data validation gate (the validate stage): GX checks on the manifest, with Data Docs."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from culturegan.config import Params
from culturegan.data.manifest import MANIFEST_NAME, read_manifest
from culturegan.errors import SourceError, ValidationFailed
from culturegan.fileio import atomic_write_text
from culturegan.validation.frames import phash_leaks, required_styles, style_split_counts
from culturegan.validation.gx_project import file_context, forget_previous_runs, run_checkpoint
from culturegan.validation.report import ValidationReport
from culturegan.validation.suites import (
    COUNTS_SUITE,
    LEAKS_SUITE,
    MANIFEST_SUITE,
    counts_checks,
    leak_checks,
    manifest_checks,
)

log = logging.getLogger(__name__)

RUN_NAME = "validate"


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
    try:
        manifest = read_manifest(root)
    except SourceError as err:  # no manifest: the gate's own failure, with read_manifest's words
        raise ValidationFailed(err.message, hint=err.hint) from None
    except (OSError, ValueError) as err:  # pyarrow: ArrowIOError, ArrowInvalid
        raise ValidationFailed(
            f"{manifest_path} cannot be read: {err}",
            hint="run `culturegan prepare` again to rebuild it",
        ) from None
    docs_dir = Path(docs_dir if docs_dir is not None else params.validation.docs_dir).resolve()
    required = required_styles(params)
    counts = style_split_counts(manifest, required)
    leaks = phash_leaks(manifest)

    context = file_context(Path(params.data.cache_dir).resolve(), docs_dir)
    forget_previous_runs(context, docs_dir)
    from great_expectations.core.run_identifier import RunIdentifier

    run_id = RunIdentifier(run_name=RUN_NAME)
    index_manifest = ["path"] if "path" in manifest.columns else []
    checks = run_checkpoint(
        context,
        MANIFEST_SUITE,
        manifest,
        manifest_checks(params, required),
        index_manifest,
        run_id,
    )
    checks += run_checkpoint(
        context,
        COUNTS_SUITE,
        counts,
        counts_checks(params, counts),
        ["style", "split", "count"],
        run_id,
    )
    checks += run_checkpoint(context, LEAKS_SUITE, leaks, leak_checks(), ["path"], run_id)

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
