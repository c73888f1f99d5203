"""Tests of the ingest stage on tiny generated image folders: layouts, rejects, dedupe, resume."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import stat
import struct
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from culturegan.config import Params
from culturegan.data import ingest_workers
from culturegan.data.dedupe import _near_pairs, dedupe
from culturegan.data.ingest import FAILED_REJECTS_NAME, STAGING_MARK, ingest
from culturegan.data.journal import JOURNAL_NAME
from culturegan.data.manifest import Reason, read_manifest, read_rejects
from culturegan.data.prepare import prepare
from culturegan.errors import ConfigError, IngestError


def shapes_image(seed: int, size: tuple[int, int] = (80, 72)) -> Image.Image:
    """A picture of random rectangles and ellipses: distinct seeds give distinct pHashes."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        x0, y0 = rng.randrange(-10, size[0]), rng.randrange(-10, size[1])
        box = [x0, y0, x0 + rng.randrange(12, 50), y0 + rng.randrange(12, 50)]
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    return img


def save(img: Image.Image, path: Path, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def encoded(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_params(tmp_path: Path, source: Path | str, **data: object) -> Params:
    base = {
        "source": str(source),
        "root": str(tmp_path / "data"),
        "cache_dir": str(tmp_path / "cache"),
        "image_size": 32,
        "workers": 1,
    }
    return Params.model_validate({"data": {**base, **data}})


def run(params: Params) -> dict:
    return ingest(params, params.data.root)


def tree_state(top: Path) -> dict[str, tuple[str, int]]:
    return {
        p.relative_to(top).as_posix(): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(top.rglob("*"))
        if p.is_file()
    }


def name_of(origin: str) -> str:
    return origin.rstrip("/").rsplit("/", 1)[-1]


def rejects_by_name(root: Path) -> dict[str, str]:
    df = read_rejects(root)
    return {name_of(s): r for s, r in zip(df["source"], df["reason"], strict=True)}


def count_decodes(
    monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None, tiles: bool = False
) -> list[int]:
    """Count calls of the decoder (workers=1 runs in-process); optionally die at call `fail_at`.
    `tiles`: the tiling decoder (data.load_size) instead of the centre-square one."""
    calls = [0]
    name = "decode_tiles" if tiles else "decode_normalised"
    real = getattr(ingest_workers, name)

    def counting(data: bytes, opts: object) -> object:
        calls[0] += 1
        if fail_at is not None and calls[0] == fail_at:
            raise RuntimeError("simulated kill")
        return real(data, opts)

    monkeypatch.setattr(ingest_workers, name, counting)
    return calls


def assert_outputs_match_manifest(root: Path) -> pd.DataFrame:
    df = read_manifest(root)
    on_disk = {p.relative_to(root).as_posix() for p in (root / "styles").rglob("*") if p.is_file()}
    assert on_disk == set(df["path"])
    return df


# ---------------------------------------------------------------------------------------------
# Layouts


def test_cyclegan_layout_with_style_names(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i, d in enumerate(
        ["trainA", "trainA", "trainA", "trainB", "trainB", "trainB", "testA", "testB"]
    ):
        save(shapes_image(i), src / d / f"img{i}.jpg", quality=92)
    summary = run(make_params(tmp_path, src, style_names={"A": "ukiyoe", "B": "photo"}))
    root = tmp_path / "data"
    df = assert_outputs_match_manifest(root)
    assert summary["by_style"] == {
        "photo": {"train": 3, "test": 1},
        "ukiyoe": {"train": 3, "test": 1},
    }
    assert summary["accepted"] == 8 and summary["rejected"] == 0 and summary["layout"] == "cyclegan"
    assert set(df["mode"]) == {"RGB"} and set(df["width"]) == {32} and set(df["height"]) == {32}
    assert set(df["scene"]) == {""}
    for row in df.itertuples():
        assert row.path == f"styles/{row.style}/{row.split}/{row.sha256[:16]}.png"
        with Image.open(root / row.path) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    img0 = df[df["source"].map(name_of) == "img0.jpg"].iloc[0]
    assert (img0.style, img0.split) == ("ukiyoe", "train")
    assert img0.sha256 == hashlib.sha256((src / "trainA" / "img0.jpg").read_bytes()).hexdigest()
    assert len(read_rejects(root)) == 0


def test_cyclegan_names_inferred_from_wrapper_folder_and_system_files_counted(
    tmp_path: Path,
) -> None:
    src = tmp_path / "archive"
    wrapper = src / "ukiyoe2photo"
    for i, d in enumerate(["trainA", "trainA", "trainB", "trainB", "testA"]):
        save(shapes_image(10 + i), wrapper / d / f"p{i}.png")
    write(
        src / "__MACOSX" / "ukiyoe2photo" / "trainA" / "._p0.png", b"\x00\x05\x16\x07resource fork"
    )
    write(wrapper / "trainA" / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write(wrapper / "README.txt", b"ukiyoe2photo from the CycleGAN datasets\n")
    summary = run(make_params(tmp_path, src))
    assert summary["by_style"] == {"photo": {"train": 2}, "ukiyoe": {"train": 2, "test": 1}}
    assert summary["ignored"] == 2
    assert rejects_by_name(tmp_path / "data") == {"README.txt": Reason.UNKNOWN_STYLE}


def test_cyclegan_zip_over_http_takes_style_names_from_the_url(
    tmp_path: Path, http_server: tuple[str, Path]
) -> None:
    base_url, served = http_server
    with zipfile.ZipFile(served / "ukiyoe2photo.zip", "w") as zf:  # no wrapper folder inside
        for i, d in enumerate(["trainA", "trainB", "testA", "testB"]):
            member = zipfile.ZipInfo(f"{d}/z{i}.jpg")
            member.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(member, encoded(shapes_image(40 + i), "JPEG", quality=90))
    summary = run(make_params(tmp_path, f"{base_url}/ukiyoe2photo.zip"))
    assert summary["by_style"] == {
        "photo": {"train": 1, "test": 1},
        "ukiyoe": {"train": 1, "test": 1},
    }
    df = read_manifest(tmp_path / "data")
    assert all(s.startswith(f"{base_url}/ukiyoe2photo.zip#") for s in df["source"])


def test_cyclegan_without_style_names_or_telling_folder_name_asks_for_style_names(
    tmp_path: Path,
) -> None:
    src = tmp_path / "mydata"
    save(shapes_image(1), src / "trainA" / "a.png")
    save(shapes_image(2), src / "trainB" / "b.png")
    with pytest.raises(IngestError) as err:
        run(make_params(tmp_path, src))
    assert "style_names" in err.value.hint


def test_cyclegan_style_names_with_wrong_keys_is_a_config_error(tmp_path: Path) -> None:
    src = tmp_path / "horse2zebra"
    save(shapes_image(1), src / "trainA" / "a.png")
    save(shapes_image(2), src / "trainB" / "b.png")
    with pytest.raises(ConfigError, match="A and B"):
        run(make_params(tmp_path, src, style_names={"horse": "horse", "zebra": "zebra"}))


def test_per_style_layout_with_train_test_subfolders(tmp_path: Path) -> None:
    src = tmp_path / "src"
    seed = 100
    for style in ("inkwash", "Ukiyo-e"):
        for split, n in (("train", 3), ("test", 2)):
            for _ in range(n):
                seed += 1
                save(shapes_image(seed), src / style / split / f"{seed}.png")
    write(src / "inkwash" / "notes.txt", b"not in train/ or test/")
    params = make_params(tmp_path, src, style_names={"Ukiyo-e": "ukiyoe"})
    summary = run(params)
    assert summary["layout"] == "per_style"
    assert summary["by_style"] == {
        "inkwash": {"train": 3, "test": 2},
        "ukiyoe": {"train": 3, "test": 2},
    }
    assert rejects_by_name(tmp_path / "data") == {"notes.txt": Reason.UNKNOWN_STYLE}
    df = read_manifest(tmp_path / "data")
    for row in df.itertuples():
        assert f"/{row.split}/" in row.source


def test_per_style_invalid_folder_name_raises_with_a_hint(tmp_path: Path) -> None:
    src = tmp_path / "src"
    save(shapes_image(1), src / "Ukiyo-e" / "a.png")
    save(shapes_image(2), src / "photo" / "b.png")
    with pytest.raises(IngestError) as err:
        run(make_params(tmp_path, src))
    assert "Ukiyo-e" in err.value.message and "style_names" in err.value.hint


def test_per_style_flat_folders_split_deterministically_by_sha256(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(20):
        save(
            shapes_image(200 + i), src / ("inkwash" if i % 2 else "photo") / f"f{i}.jpg", quality=90
        )
    params = make_params(tmp_path, src, test_fraction=0.5)
    summary = run(params)
    df = read_manifest(tmp_path / "data")
    assert len(df) == 20 and summary["rejected"] == 0
    for row in df.itertuples():
        expected = "test" if int(row.sha256[:8], 16) / 2**32 < 0.5 else "train"
        assert row.split == expected
    assert set(df["split"]) == {"train", "test"}
    assert set(summary["by_style"]["photo"]) == {"train", "test"}


def test_single_style_folder_is_not_mistaken_for_an_archive_wrapper(tmp_path: Path) -> None:
    src = tmp_path / "src"
    save(shapes_image(1), src / "photo" / "train" / "a.png")
    save(shapes_image(2), src / "photo" / "test" / "b.png")
    summary = run(make_params(tmp_path, src))
    assert summary["by_style"] == {"photo": {"train": 1, "test": 1}}


# ---------------------------------------------------------------------------------------------
# Bad inputs


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_with_header(width: int, height: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def test_every_bad_input_is_rejected_with_its_reason_and_nothing_is_lost(tmp_path: Path) -> None:
    src = tmp_path / "src"
    d = src / "photo"
    jpeg = encoded(shapes_image(1), "JPEG", quality=90)
    png = encoded(shapes_image(2), "PNG")
    expected = {
        "empty.jpg": Reason.EMPTY,
        "text.jpg": Reason.NOT_IMAGE,
        "random.png": Reason.NOT_IMAGE,
        "cut.jpg": Reason.TRUNCATED,
        "cut.png": Reason.TRUNCATED,
        "garbled.png": Reason.CORRUPT,
        "tiny.png": Reason.TOO_SMALL,
        "bomb.png": Reason.TOO_LARGE,
    }
    write(d / "empty.jpg", b"")
    write(d / "text.jpg", b"this is a text file that pretends to be a JPEG\n" * 20)
    write(
        d / "random.png", np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    )
    write(d / "cut.jpg", jpeg[: len(jpeg) // 2])
    write(d / "cut.png", png[: len(png) // 2])
    write(d / "garbled.png", png_with_header(64, 64, b"not zlib data" * 20))
    save(shapes_image(3, size=(20, 90)), d / "tiny.png")
    write(d / "bomb.png", png_with_header(100_000, 100_000, zlib.compress(b"\0" * 1000)))
    write(d / "good.jpg", jpeg)
    write(d / "good.png", png)
    for i in range(3):
        save(shapes_image(10 + i), src / "inkwash" / f"i{i}.png")
    write(src / ".DS_Store", b"\0\0\0\1Bud1")
    n_files = sum(1 for p in src.rglob("*") if p.is_file())

    summary = run(make_params(tmp_path, src))
    root = tmp_path / "data"
    assert rejects_by_name(root) == expected
    df = assert_outputs_match_manifest(root)
    assert sorted(df["source"].map(name_of)) == [
        "good.jpg",
        "good.png",
        "i0.png",
        "i1.png",
        "i2.png",
    ]
    assert summary["accepted"] + summary["rejected"] + summary["ignored"] == n_files
    assert summary["reasons"] == dict(Counter(expected.values()))
    rejects = read_rejects(root)
    assert (rejects["detail"] != "").all()
    assert set(rejects["style"]) == {"photo"}


def test_max_pixels_rejects_a_source_above_the_limit(tmp_path: Path) -> None:
    src = tmp_path / "src"
    save(shapes_image(1, size=(80, 80)), src / "photo" / "big.png")
    save(shapes_image(2, size=(60, 60)), src / "photo" / "ok.png")
    save(shapes_image(3, size=(60, 60)), src / "inkwash" / "ok2.png")
    run(make_params(tmp_path, src, max_pixels=5000))
    assert rejects_by_name(tmp_path / "data") == {"big.png": Reason.TOO_LARGE}


def test_source_without_any_image_raises_ingest_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    write(empty / ".DS_Store", b"\0")
    with pytest.raises(IngestError, match="no image of .* was accepted .0 file") as err:
        run(make_params(tmp_path, empty))
    assert "1 hidden/system file(s) ignored" in err.value.message
    assert "a folder per style" in err.value.hint
    texts = tmp_path / "texts"
    write(texts / "photo" / "a.jpg", b"hello")
    write(texts / "inkwash" / "b.jpg", b"")
    with pytest.raises(IngestError, match="no image of .* was accepted") as err:
        run(make_params(tmp_path, texts))
    failed = tmp_path / "cache" / FAILED_REJECTS_NAME
    assert str(failed) in err.value.hint
    assert not (tmp_path / "data" / "rejects.csv").exists()  # the data root is left alone
    got = pd.read_csv(failed, dtype=str, keep_default_na=False)
    assert dict(zip(got["source"].map(name_of), got["reason"], strict=True)) == {
        "a.jpg": Reason.NOT_IMAGE,
        "b.jpg": Reason.EMPTY,
    }


def test_a_failed_ingest_leaves_the_previous_outputs_untouched(tmp_path: Path) -> None:
    good = tmp_path / "good"
    small_dataset(good)
    root = tmp_path / "data"
    prepare(make_params(tmp_path, good))  # the stage: manifest, rejects, styles/ and preview
    before = tree_state(root)
    assert {"manifest.parquet", "rejects.csv", "preview.png"} <= set(before)
    texts = tmp_path / "texts"
    write(texts / "photo" / "a.jpg", b"hello")
    write(texts / "inkwash" / "b.jpg", b"")
    (tmp_path / "empty").mkdir()
    for source in (texts, tmp_path / "empty"):
        with pytest.raises(IngestError):
            prepare(make_params(tmp_path, source))
        assert tree_state(root) == before  # same bytes, same mtimes, nothing added or removed
    assert_outputs_match_manifest(root)


def tar_of(path: Path, members: dict[str, bytes]) -> Path:
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_source_without_any_accepted_image_is_one_error_and_changes_nothing(
    tmp_path: Path,
) -> None:
    good = tmp_path / "good"
    small_dataset(good)
    root = tmp_path / "data"
    prepare(make_params(tmp_path, good))
    before = tree_state(root)
    tiny = encoded(shapes_image(1, size=(8, 8)), "PNG")
    sources = {
        "empty.tar": tar_of(tmp_path / "empty.tar", {}),
        "tiny.tar": tar_of(tmp_path / "tiny.tar", {"photo/a.png": tiny, "inkwash/b.png": tiny}),
        "flat.tar": tar_of(tmp_path / "flat.tar", {"a.png": encoded(shapes_image(2), "PNG")}),
        "texts": write(tmp_path / "texts" / "photo" / "a.jpg", b"hello").parent.parent,
        "ambiguous": tmp_path / "ambiguous",  # decoded and staged, then refused: none lands
    }
    for style in ("photo", "inkwash"):
        save(shapes_image(77), tmp_path / "ambiguous" / style / "same.png")
    failed = tmp_path / "cache" / FAILED_REJECTS_NAME
    for name, source in sources.items():
        with pytest.raises(IngestError) as err:
            prepare(make_params(tmp_path, source))
        assert err.value.message.startswith(f"no image of {source} was accepted"), name
        assert str(failed) in err.value.hint, name
        assert failed.is_file(), name
        assert tree_state(root) == before, name
    prepare(make_params(tmp_path, good))  # a good run again: the failed run's rejects go
    assert not failed.exists()


def test_the_bomb_reject_names_data_max_pixels_and_its_value(tmp_path: Path) -> None:
    src = tmp_path / "src"
    save(shapes_image(1), src / "photo" / "ok.png")
    # 1e10 pixels: PIL's DecompressionBombError, whose own message says twice its limit
    write(src / "photo" / "bomb.png", png_with_header(100_000, 100_000, zlib.compress(b"\0" * 99)))
    # 6400 pixels against 5000: PIL's DecompressionBombWarning (between the limit and twice it)
    save(shapes_image(2, size=(80, 80)), src / "inkwash" / "big.png")
    save(shapes_image(3, size=(60, 60)), src / "inkwash" / "ok.png")
    for max_pixels in (40_000_000, 5000):
        run(make_params(tmp_path, src, max_pixels=max_pixels))
        rejects = read_rejects(tmp_path / "data").set_index(
            read_rejects(tmp_path / "data")["source"].map(name_of)
        )
        bomb = rejects.loc["bomb.png"]
        assert bomb["reason"] == Reason.TOO_LARGE
        assert f"data.max_pixels={max_pixels}" in bomb["detail"], bomb["detail"]
        assert f"limit of {2 * max_pixels}" not in bomb["detail"]
        assert bomb["detail"] == f"10000000000 pixels is more than data.max_pixels={max_pixels}"
    assert f"data.max_pixels={max_pixels}" in rejects.loc["big.png", "detail"]


def test_style_with_nothing_accepted_is_still_reported(tmp_path: Path) -> None:
    src = tmp_path / "src"
    save(shapes_image(1), src / "photo" / "train" / "a.png")
    write(src / "photo" / "test" / "b.png", b"")
    summary = run(make_params(tmp_path, src))
    assert summary["by_style"] == {"photo": {"train": 1, "test": 0}}


def test_synthetic_source_is_a_config_error(tmp_path: Path) -> None:
    params = Params.model_validate(
        {"data": {"root": str(tmp_path / "data"), "cache_dir": str(tmp_path / "c")}}
    )
    with pytest.raises(ConfigError, match="synthetic"):
        ingest(params, tmp_path / "data")


def test_source_inside_the_output_styles_folder_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "data" / "styles"
    save(shapes_image(1), src / "photo" / "a.png")
    with pytest.raises(IngestError, match="styles"):
        run(make_params(tmp_path, src))
    assert (src / "photo" / "a.png").is_file()


# ---------------------------------------------------------------------------------------------
# Duplicates and leaks


def test_exact_and_near_duplicates_and_train_test_leaks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    a = encoded(shapes_image(1), "PNG")
    write(src / "ink" / "train" / "a.png", a)
    write(src / "ink" / "train" / "a_copy.png", a)  # exact copy, same split
    write(src / "ink" / "test" / "a_again.png", a)  # exact copy in the test split
    b = shapes_image(2)
    save(b, src / "ink" / "train" / "b.jpg", quality=95)
    save(b, src / "ink" / "train" / "b_q60.jpg", quality=60)  # re-encoded
    c = shapes_image(3)
    save(c, src / "ink" / "train" / "c.png")
    save(
        c.resize((72, 65), Image.Resampling.BICUBIC), src / "ink" / "test" / "c_small.png"
    )  # resized
    for i in range(3):
        save(shapes_image(20 + i), src / "ink" / "test" / f"t{i}.png")
        save(shapes_image(30 + i), src / "photo" / "train" / f"p{i}.png")
    summary = run(make_params(tmp_path, src))
    root = tmp_path / "data"
    rej = read_rejects(root)
    got = {
        name_of(s): (r, d)
        for s, r, d in zip(rej["source"], rej["reason"], rej["detail"], strict=True)
    }
    assert {k: v[0] for k, v in got.items()} == {
        "a_copy.png": Reason.DUPLICATE,
        "a_again.png": Reason.LEAK,
        "b_q60.jpg": Reason.NEAR_DUPLICATE,
        "c_small.png": Reason.LEAK,
    }
    assert (
        got["a_copy.png"][1].startswith("same bytes as") and "train/a.png" in got["a_copy.png"][1]
    )
    assert "pHash distance" in got["b_q60.jpg"][1] and "b.jpg" in got["b_q60.jpg"][1]
    assert "c.png" in got["c_small.png"][1]
    df = assert_outputs_match_manifest(root)
    assert {"a.png", "b.jpg", "c.png"} <= set(df["source"].map(name_of))
    assert summary["by_style"] == {"ink": {"train": 3, "test": 3}, "photo": {"train": 3}}


def test_an_image_in_two_styles_is_refused_from_both(tmp_path: Path) -> None:
    """Same bytes or a near-identical picture under two styles: its label is ambiguous, so no
    copy is kept (keeping the first would file it under whichever style sorts first)."""
    src = tmp_path / "src"
    a = encoded(shapes_image(1), "PNG")
    write(src / "photo" / "train" / "x.png", a)
    write(src / "inkwash" / "train" / "a.png", a)
    write(src / "inkwash" / "train" / "a_copy.png", a)  # a copy within the style, too
    n = shapes_image(2)
    save(n, src / "photo" / "test" / "n.jpg", quality=95)
    save(n, src / "inkwash" / "train" / "n_q60.jpg", quality=60)  # re-encoded: a near copy
    for i in range(3):
        save(shapes_image(20 + i), src / "photo" / "train" / f"p{i}.png")
        save(shapes_image(30 + i), src / "inkwash" / "train" / f"i{i}.png")
    summary = run(make_params(tmp_path, src))
    root = tmp_path / "data"
    rej = read_rejects(root)
    got = {name_of(s): (r, d) for s, r, d in zip(rej["source"], rej["reason"], rej["detail"])}
    ambiguous = {"x.png", "a.png", "a_copy.png", "n.jpg", "n_q60.jpg"}
    assert {k: v[0] for k, v in got.items()} == dict.fromkeys(ambiguous, Reason.AMBIGUOUS)
    assert "same bytes as" in got["x.png"][1] and "(inkwash/train)" in got["x.png"][1]
    assert "(photo/train)" in got["a.png"][1] and "(photo/train)" in got["a_copy.png"][1]
    assert "pHash distance" in got["n.jpg"][1] and "n_q60.jpg (inkwash/train)" in got["n.jpg"][1]
    assert "n.jpg (photo/test)" in got["n_q60.jpg"][1]
    df = assert_outputs_match_manifest(root)
    assert not ambiguous & set(df["source"].map(name_of))
    assert summary["by_style"] == {"inkwash": {"train": 3}, "photo": {"train": 3, "test": 0}}


def test_dedupe_keeps_train_over_test_whatever_the_origin_order() -> None:
    def row(origin: str, split: str, ph: str, sha: str) -> dict:
        return {"origin": origin, "split": split, "style": "s", "phash": ph, "sha256": sha}

    accepted = [
        row("a/test.png", "test", "00000000000000ff", "1"),
        row("z/train.png", "train", "00000000000000fe", "2"),
        row("m/far.png", "train", "ffffffffffff0000", "3"),
    ]
    dropped = dedupe(accepted, max_bits=4)
    assert list(dropped) == [0]
    assert (
        dropped[0][0] == Reason.LEAK
        and "distance 1" in dropped[0][1]
        and "z/train.png" in dropped[0][1]
    )


def test_near_pairs_match_brute_force_across_chunk_boundaries() -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 3000, dtype=np.uint64)  # 3000 rows: several chunks
    hashes[2999] = hashes[0] ^ np.uint64(0b101)  # a pair far apart, in different chunks
    hashes[1500] = hashes[1499] ^ np.uint64(1)
    got = _near_pairs(hashes, 12)
    dist = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    i, j = np.nonzero(np.tril(dist <= 12, k=-1))
    expected: dict[int, list[tuple[int, int]]] = {}
    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        expected.setdefault(a, []).append((b, int(dist[a, b])))
    assert dict(got) == expected
    assert (0, 2) in got[2999] and (1499, 1) in got[1500]


# ---------------------------------------------------------------------------------------------
# Normalisation


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    src = tmp_path / "src"
    stored = Image.new("RGB", (96, 64), (255, 0, 0))
    stored.paste((0, 0, 255), (0, 32, 96, 64))  # stored: red top half, blue bottom half
    exif = Image.Exif()
    exif[0x0112] = 6  # viewer rotates 90 degrees clockwise: the top edge goes to the right
    save(stored, src / "photo" / "rot.jpg", quality=95, exif=exif.tobytes())
    save(shapes_image(1), src / "inkwash" / "x.png")
    run(make_params(tmp_path, src))
    df = read_manifest(tmp_path / "data")
    path = df[df["source"].map(name_of) == "rot.jpg"]["path"].iloc[0]
    with Image.open(tmp_path / "data" / path) as im:
        left, right = im.getpixel((4, 16)), im.getpixel((27, 16))
    assert left[2] > 200 and left[0] < 60  # blue on the left
    assert right[0] > 200 and right[2] < 60  # red on the right


def test_rgba_grayscale_palette_and_16bit_become_rgb(tmp_path: Path) -> None:
    src = tmp_path / "src"
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).rectangle([40, 0, 63, 63], fill=(10, 20, 200, 255))
    save(rgba, src / "photo" / "rgba.png")
    save(shapes_image(1, (64, 64)).convert("L"), src / "photo" / "gray.png")
    save(
        shapes_image(2, (64, 64)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
        src / "photo" / "pal.gif",
    )
    save(shapes_image(3, (64, 64)).convert("LA"), src / "photo" / "la.png")
    gray16 = Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    assert gray16.mode.startswith("I;16")
    save(gray16, src / "photo" / "g16.png")
    save(shapes_image(4), src / "inkwash" / "x.png")
    summary = run(make_params(tmp_path, src))
    assert summary["rejected"] == 0 and summary["accepted"] == 6
    df = read_manifest(tmp_path / "data")
    for path in df["path"]:
        with Image.open(tmp_path / "data" / path) as im:
            assert im.mode == "RGB"
    path = df[df["source"].map(name_of) == "rgba.png"]["path"].iloc[0]
    with Image.open(tmp_path / "data" / path) as im:
        assert im.getpixel((2, 16)) == (255, 255, 255)  # transparent -> white
        assert im.getpixel((30, 16))[2] > 150
    g16 = df[df["source"].map(name_of) == "g16.png"].iloc[0]
    assert g16.intensity_std > 20  # scaled from 16 bits, not clipped to white


# ---------------------------------------------------------------------------------------------
# Safety, idempotence, resume


def small_dataset(src: Path, n: int = 6) -> None:
    for i in range(n):
        split = "test" if i < 2 else "train"
        save(
            shapes_image(300 + i),
            src / ("photo" if i % 2 else "inkwash") / split / f"s{i}.jpg",
            quality=90,
        )
    # Copies (sorted after their originals) make reruns meet the "PNG removed by dedupe" case.
    write(src / "photo" / "train" / "z_dup.jpg", (src / "photo" / "train" / "s3.jpg").read_bytes())
    save(shapes_image(303), src / "photo" / "train" / "z_near.jpg", quality=50)


def test_sources_are_never_modified(tmp_path: Path) -> None:
    src = tmp_path / "src"
    small_dataset(src)
    write(src / "photo" / "train" / "bad.jpg", b"not an image")
    before = tree_state(src)
    run(make_params(tmp_path, src))
    assert tree_state(src) == before


def test_rerun_is_idempotent_and_decodes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    small_dataset(src)
    params = make_params(tmp_path, src)
    root = tmp_path / "data"
    run(params)
    manifest = (root / "manifest.parquet").read_bytes()
    rejects = (root / "rejects.csv").read_bytes()
    pngs = tree_state(root / "styles")
    assert rejects_by_name(root) == {
        "z_dup.jpg": Reason.DUPLICATE,
        "z_near.jpg": Reason.NEAR_DUPLICATE,
    }

    calls = count_decodes(monkeypatch)
    second = run(params)
    assert calls[0] == 0
    assert second["reused"] == 8
    assert (root / "manifest.parquet").read_bytes() == manifest
    assert (root / "rejects.csv").read_bytes() == rejects
    assert tree_state(root / "styles") == pngs  # same bytes and same mtimes: nothing rewritten
    journal = tmp_path / "cache" / JOURNAL_NAME
    assert len(journal.read_text().splitlines()) == 8


def test_new_data_root_reuses_the_journal_but_writes_every_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    small_dataset(src)
    run(make_params(tmp_path, src))
    calls = count_decodes(monkeypatch)
    other = make_params(tmp_path, src, root=str(tmp_path / "data2"))
    run(other)
    assert calls[0] == 6  # the kept ones; the two duplicates are settled from the journal
    assert read_manifest(tmp_path / "data2").equals(read_manifest(tmp_path / "data"))
    assert_outputs_match_manifest(tmp_path / "data2")


def test_resume_after_interruption_completes_without_redoing_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    small_dataset(src)
    params = make_params(tmp_path, src)
    calls = count_decodes(monkeypatch, fail_at=4)
    with pytest.raises(RuntimeError, match="simulated kill"):
        run(params)
    assert not (tmp_path / "data" / "manifest.parquet").exists()

    monkeypatch.undo()
    calls = count_decodes(monkeypatch)
    summary = run(params)
    assert calls[0] == 8 - 3
    assert summary["reused"] == 3 and summary["accepted"] == 6

    clean = make_params(tmp_path / "clean", src)
    monkeypatch.undo()
    run(clean)
    assert (tmp_path / "data" / "manifest.parquet").read_bytes() == (
        tmp_path / "clean" / "data" / "manifest.parquet"
    ).read_bytes()


def test_a_success_removes_what_crashed_runs_into_its_root_left_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    small_dataset(src)
    staging = tmp_path / "cache" / "ingest-staging"
    # a crash at image size 48 into data/, and one into another root: both leave PNGs staged
    count_decodes(monkeypatch, fail_at=4)
    with pytest.raises(RuntimeError, match="simulated kill"):
        run(make_params(tmp_path, src, image_size=48))
    monkeypatch.undo()
    count_decodes(monkeypatch, fail_at=4)
    other = make_params(tmp_path, src, root=str(tmp_path / "other"))
    with pytest.raises(RuntimeError, match="simulated kill"):
        run(other)
    monkeypatch.undo()
    unmarked = staging / "0000000000000000" / "styles" / "a.png"  # from before the mark existed
    write(unmarked, b"png")
    crashed = {d.name: len(list(d.rglob("*.png"))) for d in staging.iterdir()}
    assert len(crashed) == 3 and all(n > 0 for n in crashed.values())

    run(make_params(tmp_path, src))  # image size 32 into data/: succeeds
    assert_outputs_match_manifest(tmp_path / "data")
    left = sorted(d.name for d in staging.iterdir())
    assert len(left) == 2 and "0000000000000000" in left  # the 48-px folder of data/ went
    mark = json.loads((staging / next(n for n in left if n != "0000000000000000") / STAGING_MARK).read_text())
    assert mark == {"root": str((tmp_path / "other").resolve())}

    # the other root's own run then cleans up after itself
    run(other)
    assert_outputs_match_manifest(tmp_path / "other")
    assert sorted(d.name for d in staging.iterdir()) == ["0000000000000000"]


def test_changed_image_size_is_not_served_from_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    small_dataset(src)
    run(make_params(tmp_path, src))
    calls = count_decodes(monkeypatch)
    run(make_params(tmp_path, src, image_size=48))
    assert calls[0] == 8
    df = assert_outputs_match_manifest(tmp_path / "data")
    assert set(df["width"]) == {48}


def test_a_journal_of_other_ingest_code_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from culturegan.data import ingest as ingest_module

    src = tmp_path / "src"
    small_dataset(src)
    params = make_params(tmp_path, src)
    run(params)
    manifest = (tmp_path / "data" / "manifest.parquet").read_bytes()
    calls = count_decodes(monkeypatch)
    # what an edit of normalise.py (or of anything else in INGEST_CODE) does to the hash
    monkeypatch.setattr(ingest_workers, "ingest_code_hash", lambda: "0123456789abcdef")
    monkeypatch.setattr(ingest_module, "ingest_code_hash", lambda: "0123456789abcdef")
    summary = run(params)
    assert calls[0] == 8 and summary["reused"] == 0
    assert (tmp_path / "data" / "manifest.parquet").read_bytes() == manifest
    assert_outputs_match_manifest(tmp_path / "data")
    # the other code's lines can never be matched again: compaction drops them
    lines = [json.loads(x) for x in (tmp_path / "cache" / JOURNAL_NAME).read_text().splitlines()]
    assert len(lines) == 8 and {x["code"] for x in lines} == {"0123456789abcdef"}


# Imported on the per-file path but not shaping a result: the hasher, the pool size, the journal
# (it stores results), errors, atomic writes and the params schema (values arrive as WorkerOpts).
NOT_SHAPING = {
    "culturegan.codehash",
    "culturegan.cpus",
    "culturegan.data.journal",
    "culturegan.errors",
    "culturegan.fileio",
    "culturegan.config",
}


def test_the_ingest_code_hash_covers_every_module_a_files_result_comes_from() -> None:
    from test_structure import import_graph

    graph = import_graph()
    seen: set[str] = set()
    todo = ["culturegan.data.ingest_workers"]
    while todo:
        module = todo.pop()
        if module in seen or module in NOT_SHAPING:
            continue
        seen.add(module)
        todo += graph[module]
    covered = {"culturegan." + rel.removesuffix(".py").replace("/", ".") for rel in ingest_workers.INGEST_CODE}
    assert seen == covered
    assert len(ingest_workers.ingest_code_hash()) == 16


def test_stale_outputs_are_removed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    small_dataset(src)
    root = tmp_path / "data"
    save(shapes_image(999), root / "styles" / "old_style" / "train" / "junk.png")
    write(root / "styles" / "photo" / "train" / ".x.png.abc.tmp", b"half-written")
    summary = run(make_params(tmp_path, src))
    assert summary["stale_removed"] >= 2
    assert not (root / "styles" / "old_style").exists()
    assert not (root / "styles" / "photo" / "train" / ".x.png.abc.tmp").exists()
    assert_outputs_match_manifest(root)


def test_worker_pool_gives_the_same_manifest_as_one_process(tmp_path: Path) -> None:
    src = tmp_path / "src"
    small_dataset(src, n=10)
    run(make_params(tmp_path / "one", src, workers=1))
    summary = run(make_params(tmp_path / "two", src, workers=2))
    assert summary["accepted"] == 10
    one = (tmp_path / "one" / "data" / "manifest.parquet").read_bytes()
    assert (tmp_path / "two" / "data" / "manifest.parquet").read_bytes() == one
    assert (tmp_path / "two" / "data" / "rejects.csv").read_bytes() == (
        tmp_path / "one" / "data" / "rejects.csv"
    ).read_bytes()


def test_bench_ingest_reports_throughput(tmp_path: Path) -> None:
    from culturegan.bench import bench_ingest

    result = bench_ingest(n=12, size=96, workers=1, tmp=tmp_path)
    assert result["images"] == 12 and result["workers"] == 1
    assert result["seconds"] > 0 and result["images_per_s"] > 0
    assert result["accepted"] == 12
    assert os.path.isdir(tmp_path)


# ---------------------------------------------------------------------------------------------
# Tiles (data.load_size): few large paintings become many images, each source in one split


def busy_image(seed: int, size: tuple[int, int]) -> Image.Image:
    """shapes_image with grain everywhere, so that no tile of it is blank."""
    grain = np.random.default_rng(seed).integers(0, 48, (size[1], size[0], 3))
    base = np.asarray(shapes_image(seed, size), dtype=np.int64)
    return Image.fromarray(np.clip(base + grain - 24, 0, 255).astype(np.uint8))


def test_load_size_cuts_each_source_into_tiles_of_one_split(tmp_path: Path) -> None:
    src = tmp_path / "src"
    wide = save(busy_image(1, size=(300, 200)), src / "photo" / "wide.png")  # -> 96x64: 3x2 tiles
    save(busy_image(2, size=(200, 300)), src / "photo" / "tall.png")  # -> 64x96: 2x3
    for i in range(6):
        save(busy_image(10 + i, size=(160, 100)), src / "inkwash" / f"i{i}.png")  # -> 102x64: 3x2
    params = make_params(tmp_path, src, load_size=64, test_fraction=0.5)
    summary = run(params)
    root = tmp_path / "data"
    df = assert_outputs_match_manifest(root)
    assert summary["sources_accepted"] == 8 and summary["accepted"] == len(df) == 6 + 6 + 6 * 6
    assert set(df["width"]) == set(df["height"]) == {32}
    per_source = df.groupby("source")
    assert per_source["split"].nunique().max() == 1  # no source in both splits
    assert set(df["split"]) == {"train", "test"}
    wide_rows = df[df["source"].str.endswith("wide.png")].sort_values("tile")
    assert list(wide_rows["tile"]) == ["r0c0", "r0c1", "r0c2", "r1c0", "r1c1", "r1c2"]
    assert wide_rows["sha256"].nunique() == 1 and wide_rows["path"].nunique() == 6
    # Each tile is the matching square of the source resized to shorter side 64 (centred grid).
    resized = Image.open(wide).convert("RGB").resize((96, 64), Image.Resampling.LANCZOS)
    tile = Image.open(root / wide_rows.iloc[4]["path"])  # r1c1
    expect = np.asarray(resized.crop((32, 32, 64, 64)), dtype=np.int16)
    assert np.abs(np.asarray(tile, dtype=np.int16) - expect).max() <= 1


def test_blank_tiles_are_dropped_and_reported_and_an_all_blank_source_rejected(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    # Left half detailed, right half plain paper: at load_size 64 a 4x2 grid of 32 px tiles whose
    # right half is blank.
    half = Image.new("RGB", (256, 128), (236, 228, 210))
    half.paste(busy_image(5, size=(128, 128)), (0, 0))
    save(half, src / "inkwash" / "train" / "half.png")
    save(Image.new("RGB", (256, 128), (236, 228, 210)), src / "inkwash" / "train" / "paper.png")
    save(busy_image(6, size=(256, 128)), src / "photo" / "train" / "p.png")
    summary = run(make_params(tmp_path, src, load_size=64))
    df = assert_outputs_match_manifest(tmp_path / "data")
    half_rows = df[df["source"].str.endswith("half.png")]
    assert list(half_rows["tile"]) == ["r0c0", "r0c1", "r1c0", "r1c1"]
    assert summary["sources_accepted"] == 2
    rejects = read_rejects(tmp_path / "data")
    blank = rejects[rejects["reason"] == Reason.BLANK]
    assert sorted(map(name_of, blank["source"])) == ["half.png"] * 4 + ["paper.png"]
    details = " ".join(blank["detail"])
    assert all(f"tile r{r}c{c}:" in details for r in (0, 1) for c in (2, 3))
    assert "min_intensity_std=2.0" in details and "all 8 tile(s)" in details


def test_load_size_change_decodes_again_and_a_rerun_decodes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    small_dataset(src)
    root = tmp_path / "data"
    run(make_params(tmp_path, src))
    untiled = read_manifest(root)
    assert set(untiled["tile"]) == {""}
    calls = count_decodes(monkeypatch, tiles=True)
    run(make_params(tmp_path, src, load_size=64))
    assert calls[0] == 8  # a new setting is never served from the journal
    tiled = assert_outputs_match_manifest(root)
    assert len(tiled) > len(untiled) and "" not in set(tiled["tile"])
    manifest = (root / "manifest.parquet").read_bytes()
    pngs = tree_state(root / "styles")
    run(make_params(tmp_path, src, load_size=64))
    assert calls[0] == 8
    assert (root / "manifest.parquet").read_bytes() == manifest
    assert tree_state(root / "styles") == pngs
    run(make_params(tmp_path, src, load_size=64, root=str(tmp_path / "data2")))
    assert calls[0] == 8 + 6  # a new root: the journal's kept sources are decoded for their PNGs
    assert read_manifest(tmp_path / "data2").equals(tiled)
    assert_outputs_match_manifest(tmp_path / "data2")


def test_load_size_below_image_size_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="load_size .16. is smaller than image_size .32."):
        make_params(tmp_path, tmp_path, load_size=16)
