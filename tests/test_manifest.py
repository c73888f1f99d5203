"""Manifest helpers: perceptual hash behaviour, atomic deterministic writes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from culturegan.data.manifest import (
    MANIFEST_COLUMNS,
    ManifestRow,
    RejectRow,
    intensity_std,
    manifest_frame,
    manifest_records,
    phash,
    phash_ints,
    read_manifest,
    read_rejects,
    write_manifest,
    write_rejects,
)
from culturegan.errors import SourceError


def _picture(seed: int, size: int = 96) -> Image.Image:
    rng = np.random.default_rng(seed)
    # smooth random field: a few large blobs, so pHash sees structure rather than noise
    low = rng.random((6, 6, 3)) * 255
    return Image.fromarray(low.astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)


def test_phash_is_stable_under_resize_and_jpeg_but_separates_different_pictures():
    img = _picture(1)
    buf = io.BytesIO()
    img.resize((64, 64)).save(buf, "JPEG", quality=60)
    recoded = Image.open(io.BytesIO(buf.getvalue()))
    h, h_recoded, h_other = phash_ints([phash(img), phash(recoded), phash(_picture(2))])
    d = [(int(h) ^ int(other)).bit_count() for other in (h_recoded, h_other)]  # Hamming
    assert d[0] <= 4, "a re-encoded, resized copy must be a near duplicate"
    assert d[1] > 10, "a different picture must be far away"
    assert len(phash(img)) == 16


def test_intensity_std_flags_blank_images():
    assert intensity_std(Image.new("RGB", (32, 32), (200, 10, 10))) == 0.0
    assert intensity_std(_picture(3)) > 5


def test_manifest_write_is_sorted_deterministic_and_leaves_no_temp_files(tmp_path: Path):
    rows = [
        ManifestRow(f"styles/{s}/train/{i}.png", s, "train", "", f"{i:064x}", "x", 8, 8, "RGB", f"{i:016x}", 1.0)
        for s in ("b", "a")
        for i in range(3)
    ]
    write_manifest(manifest_frame(rows), tmp_path)
    first = (tmp_path / "manifest.parquet").read_bytes()
    write_manifest(manifest_frame(reversed(rows)), tmp_path)
    assert (tmp_path / "manifest.parquet").read_bytes() == first
    df = read_manifest(tmp_path)
    assert list(df.columns) == MANIFEST_COLUMNS
    assert df["style"].tolist() == ["a"] * 3 + ["b"] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.parquet"]


def test_manifest_missing_column_is_refused(tmp_path: Path):
    df = manifest_frame([]).drop(columns=["phash"])
    with pytest.raises(ValueError, match="phash"):
        write_manifest(df, tmp_path)


def test_reading_a_folder_without_a_manifest_names_it_and_says_to_prepare(tmp_path: Path):
    # one check for both readers (pandas for evaluation, pyarrow alone for the trainer)
    for read in (read_manifest, lambda root: manifest_records(root, ["style"])):
        with pytest.raises(SourceError, match="manifest.parquet not found") as info:
            read(tmp_path)
        assert str(tmp_path) in str(info.value) and "prepare" in info.value.hint


def _row(style: str, split: str, i: int) -> ManifestRow:
    return ManifestRow(f"styles/{style}/{split}/{i}.png", style, split, "", f"{i:064x}", "x", 8, 8, "RGB", f"{i:016x}", 1.0)


def test_manifest_records_reads_the_columns_and_rereads_a_rewritten_manifest(tmp_path: Path):
    rows = [_row("a", "train", i) for i in range(2)]
    write_manifest(manifest_frame(rows), tmp_path)
    got = manifest_records(tmp_path, ["style", "split", "path"])
    assert got == [{"style": "a", "split": "train", "path": r.path} for r in rows]
    got[0]["style"] = "changed"  # callers get their own copies of the cached rows
    assert manifest_records(tmp_path, ["style", "split", "path"])[0]["style"] == "a"
    assert manifest_records(tmp_path, ["style"]) == [{"style": "a"}] * 2
    write_manifest(manifest_frame([*rows, _row("b", "test", 0)]), tmp_path)
    assert [r["style"] for r in manifest_records(tmp_path, ["style"])] == ["a", "a", "b"]


def test_an_unreadable_manifest_is_named_with_the_readers_error(tmp_path: Path):
    (tmp_path / "manifest.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(SourceError, match="manifest.parquet") as info:
        manifest_records(tmp_path, ["style"])
    assert "prepare" in info.value.hint
    write_manifest(manifest_frame([_row("a", "train", 0)]), tmp_path)
    with pytest.raises(SourceError, match="no_such_column"):
        manifest_records(tmp_path, ["no_such_column"])


def test_rejects_round_trip_with_header_when_empty(tmp_path: Path):
    write_rejects([], tmp_path)
    assert read_rejects(tmp_path).empty
    write_rejects([RejectRow("s3://b/x.jpg", "corrupt_image", "cannot identify, image", "a", "train")], tmp_path)
    df = read_rejects(tmp_path)
    assert df.to_dict("records") == [
        {"source": "s3://b/x.jpg", "reason": "corrupt_image", "detail": "cannot identify, image", "style": "a", "split": "train"}
    ]
