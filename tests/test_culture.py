"""Cultural distance views between styles: shape, symmetry, and directions the style sheet predicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from culturegan.config import Params
from culturegan.data.synthetic import prepare_synthetic
from culturegan.evaluation.classifier import train_style_classifier
from culturegan.evaluation.culture import (
    VIEWS,
    combine,
    culture_distance,
    plot_heatmaps,
    write_culture,
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Path, Path]:
    """4 styles x (20 train + 16 test) scenes at 48 px, and a quickly trained classifier."""
    root = tmp_path_factory.mktemp("culture")
    params = Params.model_validate(
        {
            "data": {
                "image_size": 48,
                "workers": 1,
                "synthetic": {"styles": ["photo", "inkwash", "ukiyoe", "impressionist"], "train_scenes": 20, "test_scenes": 16},
            },
            "evaluation": {
                "classifier": {"epochs": 4, "batch_size": 16, "input_size": 48, "width": 8}
            },
        }
    )
    prepare_synthetic(params, root / "data")
    clf = train_style_classifier(params, root / "data", root / "clf")["classifier"]
    return params, root / "data", Path(clf)


@pytest.fixture(scope="module")
def result(bench) -> dict:
    params, data, clf = bench
    return culture_distance(params, data, clf)


def _m(result: dict, view: str) -> tuple[list[str], np.ndarray]:
    v = result["combined"] if view == "combined" else result["views"][view]
    return v["styles"], np.array(v["matrix"])


def test_every_view_is_a_symmetric_nonnegative_matrix_with_zero_diagonal(result):
    assert result["styles"] == ["impressionist", "inkwash", "photo", "ukiyoe"]
    assert set(result["views"]) == set(VIEWS)
    assert result["n_images"] == dict.fromkeys(result["styles"], 16)  # TEST split only
    for view in [*VIEWS, "combined"]:
        styles, m = _m(result, view)
        assert styles == result["styles"] and m.shape == (4, 4), view
        np.testing.assert_allclose(m, m.T, err_msg=view)
        assert (np.diag(m) == 0).all() and (m >= 0).all(), view
        assert (m[~np.eye(4, dtype=bool)] > 0).all(), view


def test_combined_distance_averages_views_normalised_by_their_mean_off_diagonal(result):
    _, combined = _m(result, "combined")
    off = ~np.eye(4, dtype=bool)
    assert combined[off].mean() == pytest.approx(1.0)
    recomputed, scales = combine({v: np.array(result["views"][v]["matrix"]) for v in VIEWS})
    np.testing.assert_allclose(recomputed, combined)
    assert scales == {v: pytest.approx(result["views"][v]["scale"]) for v in VIEWS}
    # An all-zero view (e.g. two styles with equal edge density) cannot be normalised: left out.
    eye = np.ones((2, 2)) - np.eye(2)
    m, _ = combine({"a": 3 * eye, "b": np.zeros((2, 2))})
    np.testing.assert_allclose(m, eye)


def test_colour_view_puts_photo_nearer_impressionist_than_inkwash(result):
    styles, m = _m(result, "colour")
    i = styles.index
    assert m[i("photo"), i("impressionist")] < m[i("photo"), i("inkwash")]
    _, palette = _m(result, "palette")
    assert palette[i("photo"), i("impressionist")] < palette[i("photo"), i("inkwash")]


def test_scalar_views_follow_the_style_sheet(result):
    # STYLES.md: ink wash leaves the most blank paper; ukiyo-e has the densest outlines.
    blank, edges = result["scalars"]["blank_space"], result["scalars"]["edge_density"]
    assert max(blank, key=blank.get) == "inkwash" and blank["inkwash"] > 0.25
    assert max(edges, key=edges.get) == "ukiyoe"
    styles, m = _m(result, "blank_space")
    i = styles.index
    assert m[i("inkwash"), i("photo")] == pytest.approx(abs(blank["inkwash"] - blank["photo"]))


def test_without_a_classifier_the_classifier_view_is_left_out(bench):
    params, data, _ = bench
    result = culture_distance(params, data, None)
    assert "classifier_frechet" not in result["views"]
    assert "classifier_frechet" not in result["combined"]["views"]


def test_culture_stage_writes_json_and_a_heatmap_png(tmp_path: Path, bench, result):
    params, data, clf = bench
    out = write_culture(params, data, clf, tmp_path)
    written = json.loads(Path(out["json"]).read_text())
    np.testing.assert_allclose(
        written["views"]["colour"]["matrix"], result["views"]["colour"]["matrix"]
    )
    png = plot_heatmaps(result, tmp_path / "again.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 600 and im.height > 300
