"""The Great Expectations gate: a clean manifest passes, each kind of bad data fails by name."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from culturegan.config import Params, parse_params
from culturegan.data.manifest import MANIFEST_COLUMNS, MANIFEST_NAME
from culturegan.errors import ValidationFailed
from culturegan.validation.frames import phash_leaks, required_styles, style_split_counts
from culturegan.validation.gate import validate_data
from culturegan.validation.report import CheckResult, ValidationReport
from culturegan.validation.suites import COUNTS_SUITE, LEAKS_SUITE, MANIFEST_SUITE, SUITES

STYLES = ["photo", "inkwash", "ukiyoe"]
TRAIN, TEST = 12, 4  # per style; thresholds below are 10 and 3


def manifest(
    styles: list[str] = STYLES, train: int = TRAIN, test: int = TEST, start: int = 0
) -> pd.DataFrame:
    """A valid manifest with distinct hashes; no images are needed, GX only reads the table."""
    rows = []
    i = start
    for style in styles:
        for split, n in (("train", train), ("test", test)):
            for k in range(n):
                rows.append(
                    {
                        "path": f"styles/{style}/{split}/{i:05d}.png",
                        "style": style,
                        "split": split,
                        "scene": f"{k:05d}",
                        "sha256": f"{i:064x}",
                        "source": f"synthetic:{i}",
                        "width": 64,
                        "height": 64,
                        "mode": "RGB",
                        "phash": f"{i + 1:016x}",
                        "intensity_std": 30.0 + k,
                        "tile": "",
                    }
                )
                i += 1
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


@pytest.fixture(scope="module")
def gx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One GX project for the whole module: every test after the first is also a rerun in it."""
    return tmp_path_factory.mktemp("cache")


def make_params(cache: Path, root: Path, **validation: object) -> Params:
    return parse_params(
        {
            "data": {"root": str(root), "cache_dir": str(cache), "synthetic": {"styles": STYLES}},
            "train": {"pairs": ["photo-inkwash", "photo-ukiyoe"]},
            "validation": {"min_train_per_style": 10, "min_test_per_style": 3, **validation},
        }
    )


def run_gate(tmp_path: Path, cache: Path, df: pd.DataFrame, **validation: object):
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    # Written directly, not through write_manifest, so that malformed manifests can be tested.
    df.reset_index(drop=True).to_parquet(root / MANIFEST_NAME, index=False)
    params = make_params(cache, root, **validation)
    return validate_data(
        params, root, docs_dir=tmp_path / "docs", result_path=tmp_path / "validation.json"
    )


def failed_names(report) -> set[str]:
    return {c.name for c in report.checks if not c.success}


# --- the derived frames (pandas only, no GX) ---------------------------------------------------


def test_counts_frame_fills_missing_style_split_with_zero_and_leaves_ratio_undefined():
    df = manifest(["photo", "inkwash"], train=12, test=4)
    df = df[~((df["style"] == "inkwash") & (df["split"] == "test"))]
    counts = style_split_counts(df, required=["photo", "inkwash", "ukiyoe"]).set_index(
        ["style", "split"]
    )
    assert counts.loc[("inkwash", "test"), "count"] == 0
    assert counts.loc[("ukiyoe", "train"), "count"] == 0
    assert counts.loc[("photo", "train"), "count"] == 12
    assert counts["imbalance"].isna().all()  # every split has a 0 somewhere: ratio undefined


def test_counts_frame_ratio_is_count_over_smallest_in_split():
    df = pd.concat(
        [manifest(["photo"], train=30, test=4), manifest(["inkwash"], train=10, test=4, start=100)]
    )
    counts = style_split_counts(df, required=[]).set_index(["style", "split"])
    assert counts.loc[("photo", "train"), "imbalance"] == pytest.approx(3.0)
    assert counts.loc[("inkwash", "train"), "imbalance"] == pytest.approx(1.0)
    assert counts.loc[("photo", "test"), "imbalance"] == pytest.approx(1.0)


def test_leak_frame_matches_only_same_style_across_splits():
    df = manifest(["photo", "inkwash"], train=3, test=2)
    train_photo = df.index[(df["style"] == "photo") & (df["split"] == "train")][0]
    test_photo = df.index[(df["style"] == "photo") & (df["split"] == "test")][0]
    test_ink = df.index[(df["style"] == "inkwash") & (df["split"] == "test")][0]
    df.loc[test_photo, "phash"] = df.loc[train_photo, "phash"]  # a leak
    df.loc[test_ink, "phash"] = df.loc[train_photo, "phash"]  # same hash, other style: not a leak
    leaks = phash_leaks(df)
    hits = leaks.dropna(subset=["train_match"])
    assert list(hits["path"]) == [df.loc[test_photo, "path"]]
    assert list(hits["train_match"]) == [df.loc[train_photo, "path"]]
    assert len(leaks) == 4  # one row per test image


def test_required_styles_follow_the_data_source():
    assert required_styles(
        parse_params({"data": {"synthetic": {"styles": ["photo", "ukiyoe"]}}, "train": {"pairs": ["photo-ukiyoe"]}})
    ) == [
        "photo",
        "ukiyoe",
    ]
    real = parse_params(
        {"data": {"source": "/some/folder", "style_names": {"A": "ukiyoe", "B": "photo"}}}
    )
    assert required_styles(real) == ["photo", "ukiyoe"]
    assert required_styles(parse_params({"data": {"source": "/some/folder"}})) == []


# --- the gate ----------------------------------------------------------------------------------


def test_missing_manifest_raises_validation_failed_with_prepare_hint(tmp_path, gx_cache):
    params = make_params(gx_cache, tmp_path / "data")
    with pytest.raises(ValidationFailed) as err:
        validate_data(params, tmp_path / "data", docs_dir=tmp_path / "docs")
    assert "manifest.parquet" in err.value.message
    assert "culturegan prepare" in err.value.hint


def test_good_manifest_passes_and_writes_data_docs_and_json(tmp_path, gx_cache):
    report = run_gate(tmp_path, gx_cache, manifest())
    assert report.success, report.summary
    assert report.summary.startswith("all ") and "passed" in report.summary
    assert report.docs_index == (tmp_path / "docs" / "index.html").resolve()
    assert report.docs_index.is_file()
    for suite in SUITES:  # one validation page per batch, so all three show up in Data Docs
        assert list((tmp_path / "docs" / "validations" / suite).rglob("*.html")), suite
    names = {c.name for c in report.checks}
    for expected in (
        f"{MANIFEST_SUITE}/sha256_unique",
        f"{MANIFEST_SUITE}/not_blank",
        f"{MANIFEST_SUITE}/required_styles_present",
        f"{COUNTS_SUITE}/min_test_per_style",
        f"{COUNTS_SUITE}/class_balance",
        f"{LEAKS_SUITE}/no_phash_collision",
    ):
        assert expected in names
    saved = json.loads((tmp_path / "validation.json").read_text())
    assert saved["success"] is True
    assert saved["checks_failed"] == 0
    assert saved["checks_total"] == len(report.checks)
    assert saved["rows"] == len(STYLES) * (TRAIN + TEST)


def test_tiles_of_one_source_share_its_sha256_and_pass(tmp_path, gx_cache):
    """data.load_size: a source's tiles keep its sha256 and differ in `tile`; (sha256, tile) is unique."""
    df = manifest()
    rows = _rows(df, "photo", "train")[:4]
    df.loc[rows, "sha256"] = df.loc[rows[0], "sha256"]
    df.loc[rows, "tile"] = ["r0c0", "r0c1", "r1c0", "r1c1"]
    report = run_gate(tmp_path, gx_cache, df)
    assert report.success, report.summary
    df.loc[rows[1], "tile"] = "r0c0"
    report = run_gate(tmp_path, gx_cache, df)
    assert failed_names(report) == {f"{MANIFEST_SUITE}/sha256_unique"}


def _rows(df: pd.DataFrame, style: str, split: str) -> pd.Index:
    return df.index[(df["style"] == style) & (df["split"] == split)]


def too_few(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(_rows(df, "inkwash", "test")[2:])  # 2 test images left, 3 required


def missing_split(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(_rows(df, "ukiyoe", "test"))


def duplicate_sha(df: pd.DataFrame) -> pd.DataFrame:
    a, b = _rows(df, "photo", "train")[:2]
    df.loc[b, "sha256"] = df.loc[a, "sha256"]
    return df


def phash_collision(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[_rows(df, "inkwash", "test")[0], "phash"] = df.loc[
        _rows(df, "inkwash", "train")[5], "phash"
    ]
    return df


def blank(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[_rows(df, "photo", "test")[1], "intensity_std"] = 0.0
    return df


def wrong_mode(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[_rows(df, "ukiyoe", "train")[0], "mode"] = "L"
    return df


def size_out_of_range(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[_rows(df, "photo", "train")[3], "width"] = 8
    df.loc[_rows(df, "inkwash", "test")[0], "height"] = 4096
    return df


def imbalanced(df: pd.DataFrame) -> pd.DataFrame:
    extra = manifest(["photo"], train=28, test=0, start=1000)  # photo train: 40 = 3.33 x 12
    return pd.concat([df, extra], ignore_index=True)


def missing_style(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["style"] != "ukiyoe"]


def unknown_split(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[_rows(df, "photo", "train")[0], "split"] = "val"
    return df


def missing_column(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["intensity_std"])


def null_scene(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[0, "scene"] = None
    return df


FAILURES: list[tuple[str, Callable[[pd.DataFrame], pd.DataFrame], set[str], list[str]]] = [
    (
        "too_few_images",
        too_few,
        {f"{COUNTS_SUITE}/min_test_per_style"},
        ["too few images: style 'inkwash' split 'test' has 2 images, expected at least 3"],
    ),
    (
        "missing_split",
        missing_split,
        {f"{COUNTS_SUITE}/min_test_per_style"},
        ["style 'ukiyoe' split 'test' has 0 images (missing)"],
    ),
    (
        "duplicate_sha256",
        duplicate_sha,
        {f"{MANIFEST_SUITE}/sha256_unique"},
        ["duplicate sha256: 2 images"],
    ),
    (
        "train_test_phash_collision",
        phash_collision,
        {f"{LEAKS_SUITE}/no_phash_collision"},
        ["train/test leak: 1 test images", "styles/inkwash/test/"],
    ),
    (
        "blank_images",
        blank,
        {f"{MANIFEST_SUITE}/not_blank"},
        ["blank images: 1 of 48 images", "found 0.0"],
    ),
    ("wrong_mode", wrong_mode, {f"{MANIFEST_SUITE}/mode_allowed"}, ["wrong mode", "found 'L'"]),
    (
        "size_out_of_range",
        size_out_of_range,
        {f"{MANIFEST_SUITE}/width_in_range", f"{MANIFEST_SUITE}/height_in_range"},
        ["width out of range: 1 of 48 images", "found 8", "height out of range", "found 4096"],
    ),
    (
        "class_imbalance",
        imbalanced,
        {f"{COUNTS_SUITE}/class_balance"},
        [
            "class imbalance: split 'train' style 'photo' has 40 images, 3.33x the smallest",
            "at most 3.0x",
        ],
    ),
    (
        "missing_synthetic_style",
        missing_style,
        {
            f"{MANIFEST_SUITE}/required_styles_present",
            f"{COUNTS_SUITE}/min_train_per_style",
            f"{COUNTS_SUITE}/min_test_per_style",
        },
        ["missing styles: ['ukiyoe'] not in the manifest"],
    ),
    (
        "unknown_split",
        unknown_split,
        {f"{MANIFEST_SUITE}/split_known"},
        ["unknown split", "found 'val'"],
    ),
    (
        "missing_column",
        missing_column,
        {
            f"{MANIFEST_SUITE}/columns",
            f"{MANIFEST_SUITE}/intensity_std_not_null",
            f"{MANIFEST_SUITE}/not_blank",
        },
        ["manifest columns", "intensity_std_not_null: the check could not run"],
    ),
    (
        "null_value",
        null_scene,
        {f"{MANIFEST_SUITE}/scene_not_null"},
        ["missing values: 1 of 48 rows have no scene"],
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected_failed", "expected_text"),
    [pytest.param(m, f, t, id=name) for name, m, f, t in FAILURES],
)
def test_bad_manifest_fails_with_a_summary_line_naming_the_problem(
    tmp_path, gx_cache, mutate, expected_failed, expected_text
):
    report = run_gate(tmp_path, gx_cache, mutate(manifest()))
    assert not report.success
    assert failed_names(report) == expected_failed, report.summary
    for text in expected_text:
        assert text in report.summary, report.summary
    assert len(report.summary.splitlines()) == len(expected_failed)  # one line per failed check
    # Data Docs are built on failure too, and the JSON result records the failure.
    assert report.docs_index.is_file()
    assert list((tmp_path / "docs" / "validations" / MANIFEST_SUITE).rglob("*.html"))
    saved = json.loads((tmp_path / "validation.json").read_text())
    assert saved["success"] is False
    assert {c["name"] for c in saved["checks"] if not c["success"]} == expected_failed


def test_raise_for_failure_carries_the_summary_and_the_docs_path(tmp_path):
    bad = CheckResult(
        "culturegan_manifest/mode_allowed", False, "1 of 4 unexpected", "wrong mode: ..."
    )
    report = ValidationReport(False, [bad], bad.message, tmp_path / "index.html")
    with pytest.raises(ValidationFailed) as err:
        report.raise_for_failure()
    assert "wrong mode" in err.value.message
    assert str(tmp_path / "index.html") in err.value.hint
    ValidationReport(True, [], "all 0 checks passed", tmp_path / "index.html").raise_for_failure()


def test_thresholds_come_from_params(tmp_path, gx_cache):
    df = wrong_mode(manifest())
    report = run_gate(tmp_path, gx_cache, df, modes=["RGB", "L"], min_train_per_style=13)
    # 'L' is allowed now, and 12 train images per style are too few.
    assert failed_names(report) == {f"{COUNTS_SUITE}/min_train_per_style"}, report.summary
    assert "expected at least 13 (validation.min_train_per_style)" in report.summary


def test_rerun_in_same_dirs_replaces_results_without_duplicating_gx_objects(tmp_path, gx_cache):
    first = run_gate(tmp_path, gx_cache, blank(manifest()))
    second = run_gate(tmp_path, gx_cache, manifest())
    assert not first.success and second.success
    assert [c.name for c in first.checks] == [c.name for c in second.checks]
    gx_dir = gx_cache / "gx"
    for store in ("expectations", "checkpoints", "validation_definitions"):
        assert sorted(p.stem for p in (gx_dir / store).glob("*.json")) == sorted(SUITES), store
    # The docs describe the latest run only: one validation page per suite, and it passed.
    for suite in SUITES:
        assert len(list((tmp_path / "docs" / "validations" / suite).rglob("*.html"))) == 1, suite
    assert json.loads((tmp_path / "validation.json").read_text())["success"] is True
