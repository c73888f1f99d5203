"""The `culturegan prepare` / `validate` commands on real-data layouts (a CycleGAN folder, an S3
prefix on a local moto server), and the CLI's one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from culturegan.data.manifest import read_manifest, read_rejects
from culturegan.data.scene import make_scene
from culturegan.data.synthetic import render

VENV_BIN = Path(sys.executable).parent


def _culturegan(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [str(VENV_BIN / "culturegan"), *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _write_params(cwd: Path, data: dict) -> None:
    params = {
        "data": {"image_size": 32, "min_source_size": 32, **data},
        "validation": {"min_train_per_style": 6, "min_test_per_style": 2},
    }
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))


def _scene_jpeg(path: Path, scene: int, style: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render(make_scene(1000 + scene), style, 96)).save(path, "JPEG", quality=90)


def test_prepare_and_validate_a_cyclegan_folder_with_no_code_change(tmp_path: Path):
    src = tmp_path / "ukiyoe2photo"
    for split, scenes in (("train", range(8)), ("test", range(8, 11))):
        for s in scenes:
            _scene_jpeg(src / f"{split}A" / f"{s}.jpg", s, "ukiyoe")
            _scene_jpeg(src / f"{split}B" / f"{s}.jpg", s, "photo")
    (src / "trainA" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    _write_params(tmp_path, {"source": str(src)})

    prep = _culturegan("prepare", "--summary", "reports/prepare.json", cwd=tmp_path)
    assert prep.returncode == 0, prep.stderr
    df = read_manifest(tmp_path / "data")
    assert sorted(df["style"].unique()) == ["photo", "ukiyoe"]  # names inferred from 'ukiyoe2photo'
    assert len(df) == 22
    rejects = read_rejects(tmp_path / "data")
    assert rejects[["reason"]].to_dict("records") == [{"reason": "not_an_image"}]
    assert rejects["source"].iloc[0].endswith("trainA/broken.jpg")
    # every source gets the preview dvc.yaml declares: a contact sheet, one column per style
    with Image.open(tmp_path / "data" / "preview.png") as sheet:
        assert sheet.width > 2 * 128 and sheet.height > 6 * 128

    val = _culturegan("validate", "--result", "reports/validation.json", cwd=tmp_path)
    assert val.returncode == 0, val.stdout + val.stderr
    assert (tmp_path / "reports" / "data_docs" / "index.html").is_file()


def test_prepare_from_an_s3_prefix_records_s3_uris(tmp_path: Path, s3_server: str):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="styles")
    local = tmp_path / "upload"
    for style in ("inkwash", "impressionist"):
        for s in range(6):
            _scene_jpeg(local / f"{style}/{s}.jpg", s, style)
    for f in sorted(local.rglob("*.jpg")):
        s3.upload_file(str(f), "styles", f"sets/v1/{f.relative_to(local).as_posix()}")
    _write_params(tmp_path, {"source": "s3://styles/sets/v1", "test_fraction": 0.3})

    prep = _culturegan("prepare", cwd=tmp_path)
    assert prep.returncode == 0, prep.stderr
    df = read_manifest(tmp_path / "data")
    assert len(df) == 12 and set(df["style"]) == {"inkwash", "impressionist"}
    assert all(src.startswith("s3://styles/sets/v1/") for src in df["source"])
    # credentials never reach outputs
    assert "testing" not in (tmp_path / "data" / "manifest.parquet").read_bytes().decode("latin-1")


def test_cli_reports_a_misspelt_key_as_one_line_with_a_hint_and_exit_code_2(tmp_path: Path):
    (tmp_path / "params.yaml").write_text("data:\n  imgae_size: 32\n")
    proc = _culturegan("prepare", cwd=tmp_path)
    assert proc.returncode == 2
    assert "error: unknown key 'data.imgae_size' in params.yaml; did you mean 'data.image_size'?" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_validate_fails_with_exit_code_1_and_a_summary(tmp_path: Path):
    src = tmp_path / "styles_src"
    for style in ("photo", "ukiyoe"):
        for s in range(4):
            _scene_jpeg(src / style / "train" / f"{s}.jpg", s, style)
        _scene_jpeg(src / style / "test" / "9.jpg", 9, style)
    _write_params(tmp_path, {"source": str(src)})
    assert _culturegan("prepare", cwd=tmp_path).returncode == 0
    proc = _culturegan("validate", cwd=tmp_path)
    assert proc.returncode == 1
    assert "has 4 images, expected at least 6" in proc.stdout
    assert "error: data validation failed" in proc.stderr


@pytest.mark.parametrize("layout", ["cyclegan"])
def test_forced_layout_that_does_not_match_is_a_clear_error(tmp_path: Path, layout: str):
    src = tmp_path / "flat"
    _scene_jpeg(src / "photo" / "1.jpg", 1, "photo")
    _write_params(tmp_path, {"source": str(src), "layout": layout})
    proc = _culturegan("prepare", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr


def test_a_source_without_an_accepted_image_exits_2_with_one_message(tmp_path: Path):
    """An empty archive and an archive of unusable images fail alike (not exit 0 for one)."""
    import io
    import tarfile

    tiny = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiny, "PNG")
    for name, members in (("empty.tar", {}), ("tiny.tar", {"photo/a.png": tiny.getvalue()})):
        with tarfile.open(tmp_path / name, "w") as tar:
            for member, data in members.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        _write_params(tmp_path, {"source": str(tmp_path / name)})
        proc = _culturegan("prepare", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.startswith(("error:", "hint:"))]
        assert "Traceback" not in proc.stderr and len(lines) == 2, proc.stderr
        assert lines[0].startswith(f"error: no image of {tmp_path / name} was accepted"), lines
        assert lines[1].startswith("hint: see ") and "rejects-of-failed-ingest.csv" in lines[1]
        assert not (tmp_path / "data" / "manifest.parquet").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train"], "Missing option '--pair'"),
        (["train", "--pair", "photo-inkwash", "--seed", "-1"], "'--seed'"),
        (["train", "--pair", "photo-inkwash", "--bogus"], "No such option: --bogus"),
        (["promote", "culturegan-photo-to-inkwash", "3"], "Missing option '--reason'"),
        (["prepare", "extra"], "unexpected extra argument"),
    ],
)
def test_cli_usage_errors_are_one_line_and_the_usage_with_exit_code_2(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from culturegan.cli import run

    monkeypatch.setattr(sys, "argv", ["culturegan", *argv])
    with pytest.raises(SystemExit) as exit_:
        run()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "╭" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 3, err
    assert lines[0].startswith("error: ") and message in lines[0], err
    assert lines[1].startswith(f"Usage: culturegan {argv[0]} [OPTIONS]"), err
    assert lines[2] == f"hint: culturegan {argv[0]} --help lists every option", err


def test_cli_without_a_command_prints_the_help_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from culturegan.cli import run

    monkeypatch.setattr(sys, "argv", ["culturegan"])
    with pytest.raises(SystemExit) as exit_:
        run()
    assert exit_.value.code == 2
    out = capsys.readouterr()
    assert "Usage: culturegan [OPTIONS] COMMAND" in out.out + out.err and "prepare" in out.out + out.err
    assert "Traceback" not in out.err and "NoArgsIsHelpError" not in out.err
