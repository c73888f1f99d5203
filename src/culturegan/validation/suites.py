"""The expectation suites: one GX expectation per check, with the sentence that explains its
failure (what was expected, what was seen).

great_expectations is imported inside the functions that build the expectations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from culturegan.config import Params
from culturegan.data.manifest import MANIFEST_COLUMNS, SPLITS

# Data source, suite, validation definition, checkpoint and Data Docs folder share each
# batch's name.
MANIFEST_SUITE = "culturegan_manifest"
COUNTS_SUITE = "culturegan_style_split_counts"
LEAKS_SUITE = "culturegan_train_test_leaks"
SUITES = (MANIFEST_SUITE, COUNTS_SUITE, LEAKS_SUITE)
# How many offending rows GX returns per expectation; the summary quotes a few of them.
PARTIAL_ROWS = 20
_EXAMPLES = 3


@dataclass(frozen=True)
class Check:
    name: str
    expectation: Any  # a gx.expectations.Expectation
    explain: Callable[[dict[str, Any]], str]  # GX result dict -> "what was expected, what was seen"


def plain(value: Any) -> Any:
    """numpy scalars as Python values, so messages read 8 rather than np.int64(8)."""
    return value.item() if hasattr(value, "item") else value


def _examples(result: dict[str, Any], index_col: str = "path") -> str:
    rows = result.get("partial_unexpected_index_list") or []
    shown = [str(r.get(index_col)) for r in rows[:_EXAMPLES]]
    return f" (e.g. {', '.join(shown)})" if shown else ""


def _found(result: dict[str, Any]) -> str:
    counts = result.get("partial_unexpected_counts") or []
    return ", ".join(f"{plain(c['value'])!r} ({c['count']})" for c in counts[:_EXAMPLES])


def _rows_line(label: str, column: str, expected: str) -> Callable[[dict[str, Any]], str]:
    def explain(r: dict[str, Any]) -> str:
        found = _found(r)
        return (
            f"{label}: {r.get('unexpected_count')} of {r.get('element_count')} images, expected {column} "
            f"{expected}{', found ' + found if found else ''}{_examples(r)}"
        )

    return explain


def manifest_checks(params: Params, required: list[str]) -> list[Check]:
    import great_expectations as gx

    e = gx.expectations
    v = params.validation
    checks = [
        Check(
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
            Check(
                f"{col}_not_null",
                e.ExpectColumnValuesToNotBeNull(column=col),
                lambda r, col=col: (
                    f"missing values: {r.get('unexpected_count')} of {r.get('element_count')} rows have no "
                    f"{col}, expected a value in every row{_examples(r)}"
                ),
            )
        )
    checks += [
        Check(
            "sha256_unique",
            # The tiles of one source (data.load_size) share its sha256 and differ in `tile`.
            e.ExpectCompoundColumnsToBeUnique(column_list=["sha256", "tile"]),
            lambda r: (
                f"duplicate sha256: {r.get('unexpected_count')} images share their sha256 and tile with another "
                f"image (exact duplicates), expected every (sha256, tile) to be unique{_examples(r)}"
            ),
        ),
        Check(
            "path_unique",
            e.ExpectColumnValuesToBeUnique(column="path"),
            lambda r: (
                f"duplicate path: {r.get('unexpected_count')} rows repeat a path, expected one row per image, "
                f"found {_found(r)}"
            ),
        ),
        Check(
            "sha256_format",
            e.ExpectColumnValuesToMatchRegex(column="sha256", regex=r"^[0-9a-f]{64}$"),
            _rows_line("bad sha256", "sha256", "64 lowercase hex digits"),
        ),
        Check(
            "phash_format",
            e.ExpectColumnValuesToMatchRegex(column="phash", regex=r"^[0-9a-f]{16}$"),
            _rows_line("bad phash", "phash", "16 lowercase hex digits"),
        ),
        Check(
            "path_format",
            e.ExpectColumnValuesToMatchRegex(
                column="path", regex=r"^styles/[a-z][a-z0-9_]*/(?:train|test)/[^/]+\.png$"
            ),
            _rows_line("bad path", "path", "styles/<style>/<split>/<name>.png"),
        ),
        Check(
            "split_known",
            e.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
            _rows_line("unknown split", "split", f"in {list(SPLITS)}"),
        ),
        Check(
            "mode_allowed",
            e.ExpectColumnValuesToBeInSet(column="mode", value_set=list(v.modes)),
            _rows_line("wrong mode", "mode", f"in {list(v.modes)} (validation.modes)"),
        ),
    ]
    for col in ("width", "height"):
        checks.append(
            Check(
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
        Check(
            "not_blank",
            e.ExpectColumnValuesToBeBetween(column="intensity_std", min_value=v.min_intensity_std),
            _rows_line(
                "blank images",
                "intensity_std",
                f"at least {v.min_intensity_std} (validation.min_intensity_std)",
            ),
        ),
        Check(
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
            Check(
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
    for row in (r.get("partial_unexpected_index_list") or [])[:PARTIAL_ROWS]:
        n = int(row["count"])
        parts.append(
            f"style '{row['style']}' split '{row['split']}' has {n} images{' (missing)' if n == 0 else ''}"
        )
    return ", ".join(parts) or f"{r.get('unexpected_count')} style/split combinations"


def counts_checks(params: Params, counts: pd.DataFrame) -> list[Check]:
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
            Check(
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
        for row in (r.get("partial_unexpected_index_list") or [])[:PARTIAL_ROWS]:
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
        Check(
            "class_balance",
            e.ExpectColumnValuesToBeBetween(column="imbalance", max_value=v.max_class_imbalance),
            explain_imbalance,
        )
    )
    return checks


def leak_checks() -> list[Check]:
    import great_expectations as gx

    def explain(r: dict[str, Any]) -> str:
        rows = (r.get("partial_unexpected_index_list") or [])[:_EXAMPLES]
        shown = ", ".join(f"{x['path']} = {x['train_match']}" for x in rows)
        return (
            f"train/test leak: {r.get('unexpected_count')} test images have the same perceptual hash as a "
            f"train image of their style, expected none (e.g. {shown})"
        )

    return [
        Check(
            "no_phash_collision",
            gx.expectations.ExpectColumnValuesToBeNull(column="train_match"),
            explain,
        )
    ]
