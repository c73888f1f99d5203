"""Tests of the embedded benchmark: scene model, style renderers (and their visual traits), stage."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import sobel

from culturegan.config import SYNTHETIC_STYLES, Params, parse_params
from culturegan.data.manifest import MANIFEST_COLUMNS, read_manifest, read_rejects
from culturegan.data.scene import PROFILE_POINTS, Scene, make_scene
from culturegan.data.synthetic import prepare_synthetic, render, renderers, scene_seed
from culturegan.errors import ConfigError

SIZE = 64
N_SCENES = 8


# --- image measures for the traits each style is known by (colour, blank space, edges) ---------


def luminance(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def colourfulness(img: np.ndarray) -> float:
    """Hasler and Suesstrunk (2003) colourfulness."""
    rgb = img.astype(np.float64)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def blank_ratio(img: np.ndarray, tolerance: float = 20.0) -> float:
    """Share of pixels within `tolerance` of the commonest light colour (the bare ground)."""
    rgb = img.astype(np.float64)
    light = rgb[luminance(img) > 150]
    if light.size == 0:
        return 0.0
    q = (light // 16).astype(int)
    keys = q[:, 0] * 256 + q[:, 1] * 16 + q[:, 2]
    ground = light[keys == np.bincount(keys).argmax()].mean(0)
    return float((np.linalg.norm(rgb - ground, axis=-1) < tolerance).mean())


def dominant_colours(img: np.ndarray, share: float = 0.03) -> int:
    """Colours (4 levels per channel) that each cover at least `share` of the picture."""
    q = img // 64
    keys = (q[..., 0].astype(int) * 16 + q[..., 1] * 4 + q[..., 2]).ravel()
    return int((np.bincount(keys, minlength=64) / keys.size >= share).sum())


def edge_density(img: np.ndarray, threshold: float = 80.0) -> float:
    lum = luminance(img)
    return float((np.hypot(sobel(lum, 0), sobel(lum, 1)) > threshold).mean())


def near_black(img: np.ndarray) -> float:
    return float((luminance(img) < 40).mean())


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [make_scene(scene_seed(0, i)) for i in range(N_SCENES)]


@pytest.fixture(scope="module")
def images(scenes: list[Scene]) -> dict[str, list[np.ndarray]]:
    """Every style rendered for the same scenes, shared by the style-trait tests."""
    return {style: [render(s, style, SIZE) for s in scenes] for style in SYNTHETIC_STYLES}


def _params(seed: int = 3, workers: int = 2, **synthetic: object) -> Params:
    data = {"image_size": 32, "workers": workers, "synthetic": synthetic}
    styles = synthetic.get("styles", SYNTHETIC_STYLES)
    pairs = [f"{styles[0]}-{s}" for s in styles[1:]]  # train.pairs must name rendered styles
    return parse_params({"seed": seed, "data": data, "train": {"pairs": pairs}})


# --- scene model -----------------------------------------------------------------------------


def test_renderers_cover_exactly_the_configured_style_names() -> None:
    assert set(renderers()) == set(SYNTHETIC_STYLES)


def test_make_scene_same_seed_gives_the_same_scene() -> None:
    a, b = make_scene(1234), make_scene(1234)
    assert len(a.ridges) == len(b.ridges)
    for ra, rb in zip(a.ridges, b.ridges, strict=True):
        assert np.array_equal(ra.profile, rb.profile)
    assert np.array_equal(a.bank.profile, b.bank.profile)
    assert (a.horizon, a.trees, a.boats, a.hut, a.orb) == (
        b.horizon,
        b.trees,
        b.boats,
        b.hut,
        b.orb,
    )


def test_make_scene_different_seeds_give_different_scenes() -> None:
    a, b = make_scene(1), make_scene(2)
    assert a.horizon != b.horizon
    assert not np.array_equal(a.ridges[0].profile, b.ridges[0].profile)


def test_scene_geometry_is_a_landscape(scenes: list[Scene]) -> None:
    for s in scenes:
        assert 0.5 < s.horizon < 0.8
        assert 2 <= len(s.ridges) <= 3
        depths = [r.depth for r in s.ridges]
        assert depths == sorted(depths, reverse=True), "ridges are ordered far to near"
        for r in s.ridges:
            assert r.profile.shape == (PROFILE_POINTS,)
            assert np.all(r.profile <= s.horizon) and np.all(r.profile > 0)
        for b in s.boats:  # on open water: below the water line, not on the bank
            bank_y = np.interp(b.x, np.linspace(0, 1, PROFILE_POINTS), s.bank.profile)
            assert s.horizon < b.y < bank_y
        if s.orb is not None:  # in the sky above every ridge
            for r in s.ridges:
                ridge_y = np.interp(s.orb.x, np.linspace(0, 1, PROFILE_POINTS), r.profile)
                assert s.orb.y + s.orb.radius < ridge_y
    assert any(s.trees for s in scenes) and any(s.boats for s in scenes)
    assert any(s.hut for s in scenes) and any(s.orb for s in scenes)


# --- renderers -------------------------------------------------------------------------------


@pytest.mark.parametrize("style", SYNTHETIC_STYLES)
def test_render_same_scene_and_style_gives_identical_bytes(style: str) -> None:
    a = render(make_scene(77), style, 48)
    b = render(make_scene(77), style, 48)
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("style", SYNTHETIC_STYLES)
def test_render_different_scenes_give_different_images(style: str) -> None:
    a = render(make_scene(1), style, 48).astype(int)
    b = render(make_scene(2), style, 48).astype(int)
    assert np.abs(a - b).mean() > 5


@pytest.mark.parametrize("size", [32, 64])
def test_every_style_renders_every_scene_as_uint8_rgb(scenes: list[Scene], size: int) -> None:
    for scene in scenes:
        for style in SYNTHETIC_STYLES:
            img = render(scene, style, size)
            assert img.shape == (size, size, 3) and img.dtype == np.uint8, style
            assert luminance(img).std() > 8, f"{style} image of scene {scene.seed} is nearly flat"


def test_same_scene_differs_between_styles(images: dict[str, list[np.ndarray]]) -> None:
    for i in range(N_SCENES):
        for a in SYNTHETIC_STYLES:
            for b in SYNTHETIC_STYLES:
                if a < b:
                    diff = np.abs(images[a][i].astype(int) - images[b][i].astype(int)).mean()
                    assert diff > 10, (a, b, i)


def test_render_unknown_style_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown synthetic style 'cubism'"):
        render(make_scene(0), "cubism", 32)


# --- style traits (docs STYLES: measurable traits) --------------------------------------------


def test_goldground_has_a_gold_sky_and_a_dark_frame_in_the_top_corners(scenes, images) -> None:
    for scene, im in zip(scenes, images["goldground"], strict=True):
        sky_row = int(0.12 * SIZE)  # under the arch's apex, above every ridge
        r, g, b = im[sky_row, SIZE // 2].astype(int)
        assert r > 150 and r > b + 60 and g > b + 30, (scene.seed, (r, g, b))  # gold, not blue sky
        corner = im[1, 1].astype(int)
        assert corner.max() < 130, corner  # the pointed arch leaves the corners to the frame


def test_dotpainting_is_dots_on_a_dark_ground(images) -> None:
    for im in images["dotpainting"]:
        lum = luminance(im)
        dark = (lum < 64).mean()
        assert 0.25 < dark < 0.8, dark  # the ground shows between the dots everywhere
        assert (lum > 150).mean() > 0.1  # and the dots are bright against it


def test_inkwash_is_far_less_colourful_than_the_colour_styles(images) -> None:
    ink = max(colourfulness(im) for im in images["inkwash"])
    for style in ("photo", "ukiyoe", "impressionist"):
        least = min(colourfulness(im) for im in images[style])
        assert ink < 0.6 * least, (style, ink, least)


def test_inkwash_leaves_large_blank_areas_and_others_do_not(images) -> None:
    ink = [blank_ratio(im) for im in images["inkwash"]]
    assert min(ink) >= 0.3, ink
    assert max(ink) <= 0.9, "an ink painting still has mountains on it"
    for style in ("photo", "ukiyoe", "impressionist"):
        assert max(blank_ratio(im) for im in images[style]) < 0.3, style


def test_ukiyoe_has_more_dominant_flat_colours_than_inkwash(images) -> None:
    for uk, ink in zip(images["ukiyoe"], images["inkwash"], strict=True):
        assert dominant_colours(uk) >= 5
        assert dominant_colours(uk) > dominant_colours(ink) + 2


def test_ukiyoe_outlines_give_a_higher_edge_density_than_photo(images) -> None:
    for uk, photo in zip(images["ukiyoe"], images["photo"], strict=True):
        assert edge_density(uk) > 1.5 * edge_density(photo)


def test_impressionist_has_almost_no_black(images) -> None:
    assert max(near_black(im) for im in images["impressionist"]) < 0.002
    # The ukiyo-e key block, by contrast, is near black on purpose.
    assert np.mean([near_black(im) for im in images["ukiyoe"]]) > 0.02


@pytest.mark.parametrize("style", ["photo", "inkwash"])
def test_far_ridges_are_paler_than_near_ones(scenes, images, style: str) -> None:
    """Atmospheric perspective (photo) and ink tones fading with distance (ink wash)."""
    c = (np.arange(SIZE) + 0.5) / SIZE
    xs = np.linspace(0, 1, PROFILE_POINTS)
    for scene, img in zip(scenes, images[style], strict=True):
        masks = [
            (c[:, None] >= np.interp(c, xs, r.profile)[None, :]) & (c[:, None] < scene.horizon)
            for r in scene.ridges
        ]
        far = masks[0] & ~np.any(masks[1:], axis=0)  # the part of the farthest ridge not hidden
        near = masks[-1]
        lum = luminance(img)
        assert lum[far].mean() > lum[near].mean() + 10, (style, scene.seed)


# --- the prepare stage -----------------------------------------------------------------------


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / "styles").rglob("*") if p.is_file()}


def test_prepare_writes_a_manifest_that_matches_the_files(tmp_path: Path) -> None:
    params = _params(train_scenes=5, test_scenes=3, preview_scenes=2)
    result = prepare_synthetic(params, tmp_path)
    assert result["images"] == len(SYNTHETIC_STYLES) * 8 and result["styles"] == list(SYNTHETIC_STYLES)

    df = read_manifest(tmp_path)
    assert list(df.columns) == MANIFEST_COLUMNS
    assert set(df["path"]) == _files(tmp_path), "the folder holds exactly the manifest's files"
    for row in df.itertuples():
        data = (tmp_path / row.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256
        assert row.path == f"styles/{row.style}/{row.split}/{row.scene}.png"
        assert row.source == f"synthetic:seed=3:scene={int(row.scene[1:])}"
        with Image.open(tmp_path / row.path) as img:
            assert (img.format, img.mode, img.size) == ("PNG", "RGB", (32, 32))
        assert (row.width, row.height, row.mode) == (32, 32, "RGB")
        assert len(row.phash) == 16 and row.intensity_std > 2

    # Every scene is in every style, and no scene is in both splits.
    per_scene = df.groupby("scene")["style"].apply(set)
    assert all(styles == set(SYNTHETIC_STYLES) for styles in per_scene)
    train = set(df.loc[df.split == "train", "scene"])
    test = set(df.loc[df.split == "test", "scene"])
    assert len(train) == 5 and len(test) == 3 and not train & test

    assert read_rejects(tmp_path).empty
    with Image.open(result["preview"]) as preview:
        assert preview.width > 4 * 128 and preview.height > 2 * 128


def test_prepare_removes_stale_files_from_a_bigger_earlier_run(tmp_path: Path) -> None:
    prepare_synthetic(_params(train_scenes=5, test_scenes=3, preview_scenes=1), tmp_path)
    before = set(read_manifest(tmp_path)["path"])
    (tmp_path / "styles/photo/train/.s00001.png.abc.tmp").write_bytes(b"left by a killed run")
    smaller = _params(styles=["photo", "ukiyoe"], train_scenes=3, test_scenes=2, preview_scenes=1)
    result = prepare_synthetic(smaller, tmp_path)

    df = read_manifest(tmp_path)
    assert len(df) == result["images"] == 2 * 5
    assert set(df["path"]) == _files(tmp_path)
    assert not (tmp_path / "styles/inkwash").exists(), "folders of dropped styles are removed"
    assert result["removed_stale"] == len(before - set(df["path"])) + 1  # + the temp file


def test_prepare_gives_the_same_bytes_with_one_or_two_workers(tmp_path: Path) -> None:
    one = prepare_synthetic(_params(train_scenes=3, test_scenes=2, workers=1), tmp_path / "a")
    two = prepare_synthetic(_params(train_scenes=3, test_scenes=2, workers=2), tmp_path / "b")
    a, b = read_manifest(Path(one["manifest"]).parent), read_manifest(Path(two["manifest"]).parent)
    assert a.equals(b)


def test_prepare_seed_changes_every_image_but_keeps_names(tmp_path: Path) -> None:
    a = prepare_synthetic(_params(train_scenes=2, test_scenes=1, workers=1), tmp_path / "a")
    b = prepare_synthetic(_params(train_scenes=2, test_scenes=1, workers=1, seed=4), tmp_path / "b")
    da, db = read_manifest(Path(a["manifest"]).parent), read_manifest(Path(b["manifest"]).parent)
    assert list(da["path"]) == list(db["path"])
    assert not set(da["sha256"]) & set(db["sha256"])


def test_worker_count_follows_the_cpu_affinity_not_the_machine_core_count(monkeypatch):
    """data.workers 0 means one worker per CPU this process may use (a container's limit),
    for rendering and ingest alike; os.cpu_count() only where there is no affinity mask."""
    import os

    from culturegan import cpus
    from culturegan.data.ingest_workers import pool_size

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert cpus.usable_cpus() == 1 and pool_size(0) == 1 and pool_size(5) == 5
    monkeypatch.delattr(os, "sched_getaffinity")
    assert cpus.usable_cpus() == 64
