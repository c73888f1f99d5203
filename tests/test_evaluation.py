"""Evaluation metrics, the style classifier and the evaluate stage, on a tiny synthetic benchmark."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import tiny
import torch
from PIL import Image

from culturegan.config import EvaluationConfig, GeneratorConfig, Pair, Params
from culturegan.data.scene import make_scene
from culturegan.data.synthetic import prepare_synthetic, render
from culturegan.errors import CheckpointError, ConfigError, SourceError
from culturegan.evaluation import imageops, metrics
from culturegan.evaluation.baselines import histogram_matching, identity, reinhard
from culturegan.evaluation.classifier import (
    StyleClassifier,
    load_classifier,
    train_style_classifier,
)
from culturegan.evaluation.evaluate import evaluate_pair, module_translator

SIZE = tiny.SIZE


def tiny_params(**evaluation) -> Params:
    """The shared tiny config (tests/tiny.py) on a larger benchmark, 4 styles x (30 + 12) scenes,
    with the schema's evaluation section (a classifier that learns the styles) but for the values
    below; each keyword replaces its evaluation key, as a section of params.yaml would."""
    defaults = EvaluationConfig().model_dump(mode="json")
    section = {
        **defaults,
        "classifier": {
            **defaults["classifier"],
            "epochs": 12,
            "batch_size": 16,
            "input_size": SIZE,
        },
        "kid_subsets": 20,
        "grid_rows": 3,
    }
    for key, value in evaluation.items():
        section[key] = {**defaults[key], **value} if isinstance(value, dict) else value
    styles = ["photo", "inkwash", "ukiyoe", "impressionist"]
    return tiny.tiny_params(
        {
            "data": {"synthetic": {"styles": styles, "train_scenes": 30, "test_scenes": 12}},
            "evaluation": section,
        }
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Path, Path, dict]:
    """4 styles x (30 train + 12 test) scenes at 32 px, and a style classifier trained on them."""
    root = tmp_path_factory.mktemp("bench")
    params = tiny_params()
    prepare_synthetic(params, root / "data")
    result = train_style_classifier(params, root / "data", root / "clf")
    return params, root / "data", Path(result["classifier"]), result


def scenes(style: str, seeds: range, size: int = SIZE) -> np.ndarray:
    return np.stack([render(make_scene(s), style, size) for s in seeds])


# --- KID / FID -------------------------------------------------------------------------------


def test_kid_and_fid_of_a_set_against_itself_are_zero_and_below_another_style(bench):
    clf_path = bench[2]
    clf = load_classifier(clf_path)
    photo = clf.features(scenes("photo", range(40)))
    photo_again = clf.features(scenes("photo", range(40)))
    inkwash = clf.features(scenes("inkwash", range(40)))
    self_kid, _ = metrics.kid(photo, photo_again, subsets=10, seed=0)
    other_kid, _ = metrics.kid(photo, inkwash, subsets=10, seed=0)
    # Against itself the unbiased estimate is only O(1/n) from 0 (the cross term keeps k(x, x)).
    assert abs(self_kid) < 0.02 * other_kid
    assert abs(metrics.fid(photo, photo_again)) < 1e-6 * metrics.fid(photo, inkwash)
    assert other_kid > 0 and metrics.fid(photo, inkwash) > 0


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_a_shifted_one():
    rng = np.random.default_rng(0)
    same, shifted = [], []
    for _ in range(30):
        a, b = rng.normal(size=(40, 16)), rng.normal(size=(40, 16))
        c = rng.normal(loc=0.5, size=(40, 16))
        same.append(metrics.kid(a, b, subsets=1)[0])
        shifted.append(metrics.kid(a, c, subsets=1)[0])
    same, shifted = np.array(same), np.array(shifted)
    # Unbiased: the mean over repetitions is within sampling error of 0 (a V-statistic would be
    # positive by about 2 E[k(x,x)] / n), and some single estimates are negative.
    assert abs(same.mean()) < 3 * same.std() / np.sqrt(len(same))
    assert (same < 0).any()
    assert shifted.mean() > 10 * same.std()


def test_kid_std_over_subsets_is_positive_when_subsets_are_smaller_than_the_sets():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 8)), rng.normal(loc=0.3, size=(200, 8))
    mean, std = metrics.kid(a, b, subsets=20, subset_size=50, seed=3)
    assert std > 0
    assert (mean, std) == metrics.kid(a, b, subsets=20, subset_size=50, seed=3)  # seeded


def test_fid_matches_the_closed_form_for_gaussians_and_stays_finite_when_singular():
    rng = np.random.default_rng(2)
    d = 4
    a = rng.normal(size=(20000, d))
    b = rng.normal(loc=1.0, scale=2.0, size=(20000, d))
    # ||mu||^2 + tr(I + 4I - 2 * 2I) = d + d
    assert metrics.fid(a, b) == pytest.approx(2 * d, rel=0.05)
    few = metrics.fid(rng.normal(size=(10, 32)), rng.normal(size=(10, 32)))  # covariances of rank 9
    assert np.isfinite(few) and few > 0


class _ColourFeatures(torch.nn.Module):
    """A fixed feature extractor shared by both implementations in the torchmetrics cross-checks:
    uint8 (N, 3, H, W) -> float64 (N, 16), tanh of a seeded projection of the 2 x 2 mean colours."""

    num_features = 16  # torchmetrics' FID reads this instead of running a dummy image

    def __init__(self) -> None:
        super().__init__()
        proj = torch.randn(12, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        self.register_buffer("proj", proj)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(images.double() / 255.0, 2).flatten(1)
        return torch.tanh(3.0 * pooled @ self.proj)


@pytest.fixture(scope="module")
def torchmetrics_sets() -> tuple[_ColourFeatures, torch.Tensor, torch.Tensor]:
    """60 photo and 60 ukiyoe renderings as uint8 (N, 3, H, W) tensors, and the extractor."""

    def nchw(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    return _ColourFeatures(), nchw(scenes("photo", range(60))), nchw(scenes("ukiyoe", range(60)))


def _features(net: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return net(images).numpy()


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_from_whole_kernel_matrices_equals_kid_from_each_subsets_own(monkeypatch):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(70, 40)), rng.normal(0.3, 1.0, size=(50, 40))
    cached = metrics.kid(x, y, subsets=20, subset_size=30, seed=1)
    monkeypatch.setattr(metrics, "KID_KERNEL_CACHE_MAX", 0)
    per_subset = metrics.kid(x, y, subsets=20, subset_size=30, seed=1)
    np.testing.assert_allclose(cached, per_subset, rtol=1e-12, atol=1e-15)
    assert cached[1] > 0  # the subsets differ


def test_kid_agrees_with_torchmetrics(torchmetrics_sets):
    kid_module = pytest.importorskip("torchmetrics.image.kid")
    net, fake, real = torchmetrics_sets
    x, y = _features(net, fake), _features(net, real)

    def theirs(subsets: int, subset_size: int) -> tuple[float, float]:
        # Same kernel as metrics.kid: (a.b / D + 1)^3 (torchmetrics' degree 3, gamma 1/D, coef 1).
        metric = kid_module.KernelInceptionDistance(
            feature=net, subsets=subsets, subset_size=subset_size, degree=3, gamma=None, coef=1.0
        )
        metric.update(real, real=True)
        metric.update(fake, real=False)
        mean, std = metric.compute()
        return float(mean), float(std)

    # Subsets of the whole set: both are the one unbiased MMD^2 of the two sets, to rounding.
    ours = metrics.kid(x, y, subsets=3, subset_size=60)
    whole = theirs(3, 60)
    assert ours[1] < 1e-9 * abs(ours[0]) and whole[1] < 1e-9 * abs(whole[0])
    assert ours[0] == pytest.approx(whole[0], rel=1e-9)
    # Random subsets of 20: the two draw different subsets, so each mean is the MMD^2 expected
    # over subsets plus a sampling error of std / sqrt(subsets); allow 5 sigma of the difference.
    torch.manual_seed(0)
    n = 400
    ours = metrics.kid(x, y, subsets=n, subset_size=20, seed=0)
    sampled = theirs(n, 20)
    sigma = np.hypot(ours[1], sampled[1]) / np.sqrt(n)
    assert abs(ours[0] - sampled[0]) < 5 * sigma, (ours, sampled, sigma)
    assert ours[1] == pytest.approx(sampled[1], rel=0.25)
    assert abs(ours[0] - whole[0]) < 5 * ours[1] / np.sqrt(n)  # both estimate one expectation


def test_fid_agrees_with_torchmetrics(torchmetrics_sets):
    fid_module = pytest.importorskip("torchmetrics.image.fid")
    net, fake, real = torchmetrics_sets
    metric = fid_module.FrechetInceptionDistance(feature=net)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    ours = metrics.fid(_features(net, fake), _features(net, real))
    assert ours > 0.1
    assert ours == pytest.approx(float(metric.compute()), rel=1e-6)


def test_relative_gain_is_share_of_source_target_kid_closed_and_none_without_a_gap():
    assert metrics.relative_gain(2.0, 8.0) == pytest.approx(0.75)
    assert metrics.relative_gain(8.0, 8.0) == 0.0
    assert metrics.relative_gain(1.0, 0.0) is None
    assert metrics.relative_gain(1.0, -0.01) is None


def test_real_floor_splits_the_target_set_in_two_halves():
    feats = np.random.default_rng(3).normal(size=(61, 8))
    floor = metrics.real_floor(feats, subsets=5)
    assert floor["n_per_half"] == 30
    assert abs(floor["kid"]) < 0.5 and floor["fid"] > 0


def test_style_accuracy_is_share_of_argmax_on_target():
    proba = np.array([[0.6, 0.4], [0.2, 0.8], [0.1, 0.9], [0.5, 0.5]])
    assert metrics.style_accuracy(proba, 1) == 0.5


# --- image operations and content / ground-truth metrics --------------------------------------


def _ssim_by_definition(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """SSIM of one (H, W) pair written out from Wang et al. (2004), window by window: 11 x 11
    gaussian weights (sigma 1.5, radius 5), population moments, the mean over every pixel whose
    window lies inside the image (so no border handling enters)."""
    r = 5
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / 1.5) ** 2)
    w = np.outer(g, g) / g.sum() ** 2
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(r, x.shape[0] - r):
        for j in range(r, x.shape[1] - r):
            a, b = x[i - r : i + r + 1, j - r : j + r + 1], y[i - r : i + r + 1, j - r : j + r + 1]
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb = (w * a * a).sum() - ma**2, (w * b * b).sum() - mb**2
            cov = (w * a * b).sum() - ma * mb
            values.append(
                (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
            )
    return float(np.mean(values))


def test_ssim_matches_its_definition_written_out_window_by_window():
    rng = np.random.default_rng(4)
    x = rng.random((2, 16, 23))
    y = np.clip(x + rng.normal(scale=0.2, size=x.shape), 0, 1)
    want = [_ssim_by_definition(x[i], y[i], 1.0) for i in range(2)]
    np.testing.assert_allclose(imageops.ssim(x, y), want, rtol=1e-9)
    # data_range scales the constants: the same images in [0, 255] score the same.
    np.testing.assert_allclose(imageops.ssim(255 * x, 255 * y, data_range=255.0), want, rtol=1e-9)
    assert imageops.ssim(x, x) == pytest.approx([1.0, 1.0], abs=1e-12)


def test_ssim_of_flat_images_is_the_luminance_term_and_ssim_rgb_is_the_channel_mean():
    # Flat images have no variance: SSIM = (2 a b + c1) / (a^2 + b^2 + c1) at every pixel.
    a, b, c1 = 0.25, 0.75, 0.01**2
    flat = imageops.ssim(np.full((1, 12, 12), a), np.full((1, 12, 12), b))
    assert flat[0] == pytest.approx((2 * a * b + c1) / (a**2 + b**2 + c1), rel=1e-12)
    x, y = scenes("photo", range(3)), scenes("ukiyoe", range(3))
    unit_x, unit_y = imageops.to_unit(x), imageops.to_unit(y)
    per_channel = [imageops.ssim(unit_x[..., c], unit_y[..., c]) for c in range(3)]
    np.testing.assert_allclose(imageops.ssim_rgb(x, y), np.mean(per_channel, axis=0), rtol=1e-12)
    assert imageops.ssim_rgb(x, x) == pytest.approx([1.0] * 3)


def test_batched_ssim_equals_scikit_image_image_by_image(monkeypatch):
    # imageops computes a whole batch at once; scikit-image's structural_similarity of each
    # image (and channel) is the reference it must reproduce, on square, odd and 128 px images.
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(11)
    kwargs = {"data_range": 1.0, "gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    for shape in [(4, 64, 64), (3, 23, 17), (2, 128, 128)]:
        x = rng.random(shape)
        y = np.clip(x + rng.normal(scale=0.2, size=shape), 0, 1)
        want = [structural_similarity(a, b, **kwargs) for a, b in zip(x, y, strict=True)]
        np.testing.assert_array_equal(imageops.ssim(x, y), want)
        xu = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        yu = np.clip(xu.astype(int) + rng.integers(-40, 40, xu.shape), 0, 255).astype(np.uint8)
        want = [
            structural_similarity(a, b, channel_axis=-1, **kwargs)
            for a, b in zip(imageops.to_unit(xu), imageops.to_unit(yu), strict=True)
        ]
        np.testing.assert_array_equal(imageops.ssim_rgb(xu, yu), want)
    # large batches go through in chunks of images, with the same scores as one chunk
    x = rng.random((5, 20, 20))
    y = np.clip(x + rng.normal(scale=0.2, size=x.shape), 0, 1)
    whole = imageops.ssim(x, y)
    monkeypatch.setattr(imageops, "SSIM_CHUNK_VALUES", 2 * 20 * 20)
    np.testing.assert_array_equal(imageops.ssim(x, y), whole)
    assert imageops.ssim(x[:0], y[:0]).shape == (0,)


def test_ssim_refuses_images_smaller_than_its_window_or_of_two_shapes():
    assert imageops.ssim_window() == 11
    small = np.zeros((2, 10, 12, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="smaller than the 11-pixel SSIM window"):
        imageops.ssim_rgb(small, small)
    with pytest.raises(ValueError, match="smaller than the 11-pixel SSIM window"):
        imageops.ssim(np.zeros((1, 12, 10)), np.zeros((1, 12, 10)))
    with pytest.raises(ValueError, match="one shape"):
        imageops.ssim(np.zeros((1, 12, 12)), np.zeros((2, 12, 12)))


def test_lab_of_the_srgb_primaries_white_and_black_are_the_published_values():
    rgb = np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    # CIE Lab (D65, 2 degree) of sRGB white, black and the primaries, as tabulated to 2 decimals
    # (e.g. by the EasyRGB and Bruce Lindbloom calculators).
    published = np.array(
        [
            [100.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
            [53.24, 80.09, 67.20],
            [87.73, -86.18, 83.18],
            [32.30, 79.19, -107.86],
        ]
    )
    np.testing.assert_allclose(imageops.rgb_to_lab(rgb), published, atol=0.01)
    np.testing.assert_array_equal(imageops.lab_to_rgb(published), rgb)
    assert imageops.rgb_to_lab(scenes("ukiyoe", range(2))).shape == (2, SIZE, SIZE, 3)


def test_lab_round_trip_and_out_of_gamut_lab_is_clipped_silently():
    rgb = np.random.default_rng(6).integers(0, 256, size=(4, 50, 50, 3), dtype=np.uint8)
    assert np.abs(imageops.lab_to_rgb(imageops.rgb_to_lab(rgb)).astype(int) - rgb).max() <= 1
    beyond = np.array([[150.0, 0.0, 0.0], [-10.0, 0.0, 0.0], [50.0, 0.0, 300.0]])  # the last: Z < 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # skimage warns of negative Z on each call: kept quiet
        out = imageops.lab_to_rgb(beyond)
    assert out.dtype == np.uint8
    assert out[0].tolist() == [255, 255, 255] and out[1].tolist() == [0, 0, 0]
    assert out[2, 0] > out[2, 2] and out[2, 1] > out[2, 2]  # very yellow stays yellow


@pytest.mark.parametrize("target", ["inkwash", "ukiyoe", "impressionist"])
def test_shuffled_outputs_lose_content_preservation_against_outputs_of_the_same_scene(target):
    src = scenes("photo", range(12))
    truth = scenes(target, range(12))  # a perfect transfer: same scene, other style
    recoloured = reinhard(src, scenes(target, range(100, 120)))
    for out, keys in (
        (truth, ["content_edge_ssim"]),
        (recoloured, ["content_ssim", "content_edge_ssim"]),
    ):
        right = metrics.content_preservation(src, out)
        wrong = metrics.content_preservation(src, np.roll(out, 1, axis=0))  # another scene's output
        for key in keys:
            assert right[key] > 1.5 * wrong[key], (key, right, wrong)
    same = metrics.content_preservation(src, src)
    assert same["content_ssim"] == pytest.approx(1.0) and same[
        "content_edge_ssim"
    ] == pytest.approx(1.0)


@pytest.mark.parametrize("target", ["inkwash", "ukiyoe", "impressionist"])
def test_true_target_rendering_beats_identity_reinhard_and_histogram_on_ground_truth_metrics(
    target,
):
    src = scenes("photo", range(10))
    truth = scenes(target, range(10))
    refs = scenes(target, range(100, 130))  # other scenes: the style, not the answers
    # The truth after a small degradation, so the comparison is not against an exact copy.
    noise = np.random.default_rng(5).normal(scale=6.0, size=truth.shape)
    near_truth = np.clip(truth + noise, 0, 255).astype(np.uint8)
    ours = metrics.ground_truth_metrics(near_truth, truth)
    for baseline in (identity, reinhard, histogram_matching):
        theirs = metrics.ground_truth_metrics(baseline(src, refs), truth)
        assert ours["gt_ssim"] > theirs["gt_ssim"], baseline.__name__
        assert ours["gt_ssim_coarse"] > theirs["gt_ssim_coarse"], baseline.__name__
        assert ours["gt_psnr"] > theirs["gt_psnr"], baseline.__name__
        assert ours["gt_hist_hellinger"] < theirs["gt_hist_hellinger"], baseline.__name__
    # The true rendering of ANOTHER scene has the right style but the wrong content: it must lose.
    shuffled = metrics.ground_truth_metrics(np.roll(truth, 1, axis=0), truth)
    assert ours["gt_ssim"] > shuffled["gt_ssim"] and ours["gt_psnr"] > shuffled["gt_psnr"]
    assert ours["gt_ssim_coarse"] > shuffled["gt_ssim_coarse"]


def test_half_scale_ssim_tells_a_perfect_impressionist_painter_from_a_colour_transfer():
    """Impressionist strokes fall at random: the truth re-drawn with another stroke draw (a
    perfect painter who knows the scene) ties with Reinhard's colour transfer on full-scale SSIM,
    but wins clearly at half scale, where the layout and colour areas are compared."""
    import zlib

    from culturegan.data.styles import impressionist

    seeds = range(20)
    truth = scenes("impressionist", seeds, 64)
    redrawn = np.stack(
        [
            impressionist.render(
                make_scene(s), 64, np.random.default_rng([s, zlib.crc32(b"redraw")])
            )
            for s in seeds
        ]
    )
    colour = reinhard(scenes("photo", seeds, 64), scenes("impressionist", range(100, 140), 64))
    painter = metrics.ground_truth_metrics(redrawn, truth)
    transfer = metrics.ground_truth_metrics(colour, truth)
    assert abs(painter["gt_ssim"] - transfer["gt_ssim"]) < 0.05  # full scale cannot tell
    assert painter["gt_ssim_coarse"] > transfer["gt_ssim_coarse"] + 0.08
    assert painter["gt_ssim_coarse"] > painter["gt_ssim"] + 0.15


def test_downsample_averages_blocks_and_cuts_the_remainder():
    img = np.arange(2 * 5 * 4 * 3, dtype=np.uint8).reshape(2, 5, 4, 3)
    half = imageops.downsample(img, 2)
    assert half.shape == (2, 2, 2, 3) and half.dtype == np.uint8
    expect = np.round(img[:, :4].reshape(2, 2, 2, 2, 2, 3).astype(float).mean(axis=(2, 4)))
    assert np.array_equal(half, expect.astype(np.uint8))
    with pytest.raises(ValueError, match="cannot shrink"):
        imageops.downsample(img, 8)


def test_exact_copy_scores_perfect_and_finite_psnr():
    img = scenes("photo", range(3))
    gt = metrics.ground_truth_metrics(img, img)
    assert gt["gt_ssim_coarse"] == pytest.approx(1.0)
    assert gt["gt_ssim"] == pytest.approx(1.0) and gt["gt_hist_hellinger"] == pytest.approx(
        0.0, abs=1e-7
    )
    assert np.isfinite(gt["gt_psnr"]) and gt["gt_psnr"] >= 99


# --- style classifier ---------------------------------------------------------------------------


def test_classifier_separates_the_synthetic_styles_and_writes_its_report(bench):
    _, _, clf_path, result = bench
    report = json.loads((clf_path.parent / "classifier.json").read_text())
    assert report["styles"] == ["impressionist", "inkwash", "photo", "ukiyoe"]
    assert report["test_accuracy"] >= 0.9
    assert min(report["test_accuracy_per_style"].values()) >= 0.75
    confusion = np.array(report["confusion"]["matrix"])
    assert confusion.shape == (4, 4) and confusion.sum() == 4 * 12
    assert result["test_accuracy"] == report["test_accuracy"]


def test_classifier_checkpoint_loads_with_weights_only_and_gives_features_and_probabilities(bench):
    _, _, clf_path, _ = bench
    ckpt = torch.load(clf_path, map_location="cpu", weights_only=True)
    assert ckpt["styles"] == ["impressionist", "inkwash", "photo", "ukiyoe"]
    assert ckpt["config"]["feature_dim"] == 128
    clf = load_classifier(clf_path)
    imgs = scenes("inkwash", range(5))
    assert clf.features(imgs).shape == (5, 128)
    proba = clf.predict_proba(imgs)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    # Other image sizes are resized to the classifier's input size.
    assert clf.features(scenes("inkwash", range(2), size=48)).shape == (2, 128)


def test_classifier_training_is_reproducible_with_the_same_seed(tmp_path: Path, bench):
    _, data, _, _ = bench
    params = tiny_params(classifier={"epochs": 1, "input_size": SIZE, "width": 8})
    a = train_style_classifier(params, data, tmp_path / "a")
    b = train_style_classifier(params, data, tmp_path / "b")
    sa = torch.load(a["classifier"], weights_only=True)["state_dict"]
    sb = torch.load(b["classifier"], weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_an_ensemble_of_seeds_concatenates_features_and_averages_probabilities(
    tmp_path: Path, bench
):
    """evaluation.classifier.ensemble: members trained with seeds seed, seed+1, ...; member 0 is
    the single classifier of the same params, bit for bit."""
    _, data, _, _ = bench
    cfg = {"epochs": 1, "input_size": SIZE, "width": 8, "feature_dim": 16}
    single = train_style_classifier(tiny_params(classifier=cfg), data, tmp_path / "one")
    pair = train_style_classifier(
        tiny_params(classifier={**cfg, "ensemble": 2}), data, tmp_path / "two"
    )
    one = torch.load(single["classifier"], weights_only=True)
    two = torch.load(pair["classifier"], weights_only=True)
    assert "state_dicts" not in one and len(two["state_dicts"]) == 2
    assert all(
        torch.equal(one["state_dict"][k], two["state_dicts"][0][k]) for k in one["state_dict"]
    )
    assert not torch.equal(
        two["state_dicts"][0]["head.weight"], two["state_dicts"][1]["head.weight"]
    )

    ens, first = (
        load_classifier(Path(pair["classifier"])),
        load_classifier(Path(single["classifier"])),
    )
    imgs = scenes("ukiyoe", range(6))
    feats = ens.features(imgs)
    assert feats.shape == (6, 32)
    np.testing.assert_allclose(feats[:, :16], first.features(imgs), rtol=1e-6)
    second = StyleClassifier(ens.nets[1:], ens.styles, ens.input_size)
    np.testing.assert_allclose(
        ens.predict_proba(imgs),
        (first.predict_proba(imgs) + second.predict_proba(imgs)) / 2,
        rtol=1e-6,
    )
    report = json.loads((tmp_path / "two" / "classifier.json").read_text())
    assert report["ensemble_seeds"] == [0, 1] and len(report["test_accuracy_members"]) == 2


def test_an_ensemble_scores_each_members_relative_gain_in_its_own_space(tmp_path: Path, bench):
    """With an ensemble, metrics.json also holds each member's relative KID gain of every method
    and control: member 0's equals the gain measured with the single classifier of the same seed."""
    params, data, _, _ = bench
    cfg = {"epochs": 2, "input_size": SIZE, "width": 8, "feature_dim": 16}
    single = train_style_classifier(tiny_params(classifier=cfg), data, tmp_path / "one")
    pair = train_style_classifier(
        tiny_params(classifier={**cfg, "ensemble": 2}), data, tmp_path / "two"
    )
    gan = module_translator(_blur_generator())
    evaluate_pair(
        params,
        Pair("photo", "inkwash"),
        data,
        None,
        Path(single["classifier"]),
        tmp_path / "e1",
        gan,
    )
    evaluate_pair(
        params, Pair("photo", "inkwash"), data, None, Path(pair["classifier"]), tmp_path / "e2", gan
    )
    one = json.loads((tmp_path / "e1" / "metrics.json").read_text())
    two = json.loads((tmp_path / "e2" / "metrics.json").read_text())
    assert "classifier_members" not in one
    members = two["classifier_members"]
    assert members["seeds"] == [0, 1] and members["measure"] == "kid_classifier_relative_gain"
    assert list(members["methods"]) == list(two["methods"]) and list(members["controls"]) == list(
        two["controls"]
    )
    for block in ("methods", "controls"):
        for name, gains in members[block].items():
            assert len(gains) == 2 and all(np.isfinite(gains)), (block, name)
            assert gains[0] == pytest.approx(
                one[block][name]["kid_classifier_relative_gain"], abs=1e-9
            )
    assert members["methods"]["identity"] == pytest.approx([0.0, 0.0])
    assert members["methods"]["gan"][0] != pytest.approx(members["methods"]["gan"][1])


def test_missing_or_corrupt_classifier_is_a_checkpoint_error(tmp_path: Path):
    with pytest.raises(CheckpointError, match="not found") as missing:
        load_classifier(tmp_path / "absent.pt")
    # the hint's command must be one the CLI has (it once named `culturegan train-classifier`)
    from typer.main import get_command

    from culturegan.cli import app

    named = re.findall(r"`culturegan ([\w-]+)", missing.value.hint)
    assert named and set(named) <= set(get_command(app).commands), named
    bad = tmp_path / "classifier.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable style classifier"):
        load_classifier(bad)


# --- Inception (optional, local weights only) ---------------------------------------------------


def test_missing_inception_weights_is_a_config_error_naming_the_key(tmp_path: Path, bench):
    params, data, clf_path, _ = bench
    params = tiny_params(inception_weights=str(tmp_path / "nope.pth"))
    with pytest.raises(ConfigError, match=r"evaluation\.inception_weights"):
        evaluate_pair(params, Pair("photo", "inkwash"), data, None, clf_path, tmp_path / "out")
    with pytest.raises(ConfigError, match=r"evaluation\.inception_weights"):
        metrics.InceptionFeatures(tmp_path / "nope.pth")


# --- the training-free texture space ----------------------------------------------------------


def test_texture_features_are_fixed_by_their_seed_and_blind_to_brightness_and_contrast():
    photo = scenes("photo", range(6), 64)
    space = metrics.TextureFeatures(seed=0)
    feats = space(photo)
    assert feats.shape == (6, 3 * 32 * 33 // 2) and feats.dtype == np.float64
    np.testing.assert_array_equal(feats, metrics.TextureFeatures(seed=0)(photo))
    assert not np.allclose(feats, metrics.TextureFeatures(seed=1)(photo))
    # Less contrast and more brightness leave only uint8 rounding behind (about 2 % of the blur's
    # change here); blurring by 1.5 px (the evaluate stage's damage control) changes the texture.
    dimmer = np.rint(photo.astype(np.float64) * 0.8 + 30.0).astype(np.uint8)
    from scipy import ndimage

    blurred = np.rint(ndimage.gaussian_filter(photo.astype(np.float64), (0, 1.5, 1.5, 0))).astype(np.uint8)
    tone_change = np.abs(space(dimmer) - feats).mean()
    blur_change = np.abs(space(blurred) - feats).mean()
    assert tone_change < 0.05 * blur_change


def test_texture_features_skip_scales_smaller_than_a_filter_and_name_the_key_when_none_fit():
    space = metrics.TextureFeatures(filters=4, kernel_size=5, scales=(1, 2, 4))
    assert space.usable_scales(16, 16) == [1, 2]
    assert space(scenes("photo", range(2), 16)).shape == (2, 2 * 10)
    with pytest.raises(ValueError, match="evaluation.texture"):
        space(np.zeros((1, 4, 4, 3), np.uint8))


def test_texture_space_ranks_the_truth_above_every_control_and_sees_styles_apart():
    """The validity test of RESEARCH.md (trap 7) in the texture space, on 40 scenes a style: the
    true renderings score nearer the target than the truth with noise, blurred, a colour-only
    transfer or the source; and a colour transfer closes little of the gap, by construction."""
    from scipy import ndimage

    space = metrics.TextureFeatures()
    args = {"subsets": 20, "subset_size": 40, "seed": 0}
    for target in ("ukiyoe", "inkwash"):
        src, truth = scenes("photo", range(40), 64), scenes(target, range(40), 64)
        refs = space(scenes(target, range(100, 140), 64))
        gap = metrics.kid(space(src), refs, **args)[0]
        noisy = np.clip(truth + np.random.default_rng(0).normal(0, 25.5, truth.shape), 0, 255)
        controls = {
            "truth_noise": np.rint(noisy).astype(np.uint8),
            "truth_blur": np.rint(
                ndimage.gaussian_filter(truth.astype(float), (0, 1.5, 1.5, 0))
            ).astype(np.uint8),
            "colour_transfer": reinhard(src, scenes(target, range(100, 140), 64)),
            "source": src,
        }
        gain = {
            name: metrics.relative_gain(metrics.kid(space(x), refs, **args)[0], gap)
            for name, x in {"truth": truth, **controls}.items()
        }
        assert gain["truth"] > 0.9, (target, gain)
        assert all(gain["truth"] > gain[name] for name in controls), (target, gain)
        assert abs(gain["colour_transfer"]) < 0.5, (target, gain)


def test_evaluation_without_the_texture_space_scores_in_the_classifier_space_alone(bench, tmp_path: Path):
    params, data, clf_path, _ = bench
    params = params.model_copy(
        update={"evaluation": params.evaluation.model_copy(update={"texture": None})}
    )
    out = tmp_path / "ev"
    evaluate_pair(params, Pair("photo", "inkwash"), data, None, clf_path, out)
    m = json.loads((out / "metrics.json").read_text())
    assert m["feature_spaces"] == ["classifier"]
    assert not any("texture" in k for k in m["methods"]["reinhard"])


def test_inception_features_come_from_a_local_state_dict(tmp_path: Path):
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(
        net.state_dict(), tmp_path / "inception.pth"
    )  # with AuxLogits, as torchvision ships it
    feats = metrics.InceptionFeatures(tmp_path / "inception.pth")(scenes("photo", range(2)))
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(ConfigError, match="not a torchvision inception_v3 state_dict"):
        metrics.InceptionFeatures(tmp_path / "wrong.pth")


# --- the evaluate stage --------------------------------------------------------------------------


def _blur_generator() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")
    return net


def test_evaluate_pair_scores_every_method_on_the_same_images_and_names_the_feature_space(
    tmp_path: Path, bench
):
    params, data, clf_path, _ = bench
    out = tmp_path / "photo-inkwash"
    result = evaluate_pair(
        params,
        Pair("photo", "inkwash"),
        data,
        None,
        clf_path,
        out,
        translate=module_translator(_blur_generator()),
    )
    assert result["ground_truth"] is True
    m = json.loads((out / "metrics.json").read_text())
    assert (m["pair"], m["source"], m["target"], m["seed"]) == (
        "photo-inkwash",
        "photo",
        "inkwash",
        0,
    )
    assert m["n_images"] == {
        "source_test": 12,
        "target_test": 12,
        "target_train_refs": 30,
        "ground_truth_pairs": 12,
    }
    assert list(m["methods"]) == ["gan", "identity", "reinhard", "histogram"]
    assert "gatys" in m["skipped"] and "vgg_weights" in m["skipped"]["gatys"]
    for name, rec in m["methods"].items():
        for key in (
            "kid_classifier",
            "kid_classifier_std",
            "fid_classifier",
            "kid_classifier_relative_gain",
            "style_accuracy",
            "content_ssim",
            "content_edge_ssim",
            "gt_ssim",
            "gt_ssim_coarse",
            "gt_psnr",
            "gt_hist_hellinger",
        ):
            assert np.isfinite(rec[key]), (name, key)
        # The training-free texture space reports KID and its gain, no FID (1 584 dimensions).
        assert np.isfinite([rec["kid_texture"], rec["kid_texture_relative_gain"]]).all(), name
        spaces = {k for k in rec if k.startswith(("kid", "fid"))}
        assert spaces == {
            "kid_classifier",
            "kid_classifier_std",
            "fid_classifier",
            "kid_classifier_relative_gain",
            "kid_texture",
            "kid_texture_std",
            "kid_texture_relative_gain",
        }, name
    assert m["feature_spaces"] == ["classifier", "texture"]
    assert "fid_texture" not in m["reference"]["source_vs_target"]
    assert m["reference"]["target_real"]["kid_texture_floor"] < m["reference"]["source_vs_target"]["kid_texture"]
    identity_rec = m["methods"]["identity"]
    assert identity_rec["kid_classifier"] == pytest.approx(
        m["reference"]["source_vs_target"]["kid_classifier"]
    )
    assert identity_rec["kid_classifier_relative_gain"] == pytest.approx(0.0)
    assert identity_rec["content_ssim"] == pytest.approx(1.0)
    # KID moves with real style: the true renderings are far nearer the target than the sources.
    # (A colour-only transfer no longer is: the classifier is trained not to be fooled by colour.)
    assert m["controls"]["truth"]["kid_classifier"] < identity_rec["kid_classifier"] / 2
    # Real target images are the ceiling of the deception rate and the floor of KID.
    assert (
        m["reference"]["target_real"]["style_accuracy"]
        >= m["methods"]["identity"]["style_accuracy"]
    )
    assert m["reference"]["target_real"]["kid_classifier_floor"] < identity_rec["kid_classifier"]
    grid = Image.open(out / "grid.png")
    assert grid.width > 5 * SIZE and grid.height > 3 * SIZE  # 3 rows; source, 4 methods, truth
    # metric validity: the truth and its controls, scored by every metric, on the aligned scenes
    assert list(m["controls"]) == [
        "truth",
        "truth_noise",
        "truth_blur",
        "colour_transfer",
        "source",
    ]
    truth = m["controls"]["truth"]
    assert truth["gt_ssim"] == pytest.approx(1.0) and truth["n_images"] == 12
    for control in ("truth_noise", "truth_blur", "colour_transfer", "source"):
        assert m["controls"][control]["gt_ssim"] < 0.95
        assert (
            m["controls"][control]["kid_classifier_relative_gain"]
            < truth["kid_classifier_relative_gain"]
        )
    assert m["controls"]["source"]["content_edge_ssim"] == pytest.approx(1.0)


def test_evaluate_pair_gives_baselines_only_train_images_of_the_target_as_references(
    tmp_path: Path, bench, monkeypatch
):
    params, data, clf_path, _ = bench
    seen = []

    def recording(sources: np.ndarray, refs: np.ndarray) -> np.ndarray:
        seen.append(refs.copy())
        return sources.copy()

    import culturegan.evaluation.evaluate as ev

    monkeypatch.setattr(ev, "make_baselines", lambda cfg, seed: ({"recording": recording}, {}))
    evaluate_pair(params, Pair("photo", "ukiyoe"), data, None, clf_path, tmp_path / "o")
    train = np.stack(
        [np.asarray(Image.open(p)) for p in sorted((data / "styles/ukiyoe/train").glob("*.png"))]
    )
    test = np.stack(
        [np.asarray(Image.open(p)) for p in sorted((data / "styles/ukiyoe/test").glob("*.png"))]
    )
    assert len(seen) == 1 and np.array_equal(seen[0], train)
    assert not any((seen[0] == t).all(axis=(1, 2, 3)).any() for t in test)


def test_evaluate_pair_loads_the_trained_generator_file(tmp_path: Path, bench):
    from culturegan.models.networks import ResnetGenerator
    from culturegan.training.checkpoint import save_generator

    params, data, clf_path, _ = bench
    torch.manual_seed(0)
    save_generator(
        tmp_path / "model" / "generator.pt", ResnetGenerator(GeneratorConfig(ngf=4, n_blocks=1)), {}
    )
    result = evaluate_pair(
        params, Pair("photo", "impressionist"), data, tmp_path / "model", clf_path, tmp_path / "o"
    )
    assert result["methods"][0] == "gan"
    with pytest.raises(CheckpointError, match="generator_reverse.pt not found"):
        evaluate_pair(
            params,
            Pair("impressionist", "photo"),
            data,
            tmp_path / "model",
            clf_path,
            tmp_path / "o2",
            generator_file="generator_reverse.pt",
        )


def test_evaluate_pair_rejects_styles_the_data_does_not_hold(tmp_path: Path, bench):
    # A malformed pair never gets here: it is refused where it is parsed (tests/test_pair.py).
    params, data, clf_path, _ = bench
    with pytest.raises(SourceError, match="no test images of style .cubism."):
        evaluate_pair(params, Pair("photo", "cubism"), data, None, clf_path, tmp_path)


def test_classifier_with_fewer_than_two_styles_is_a_data_error(tmp_path: Path):
    import pandas as pd

    from culturegan.config import parse_params
    from culturegan.errors import ValidationFailed
    from culturegan.evaluation.classifier import train_style_classifier

    params = parse_params(
        {
            "data": {
                "image_size": 32,
                "synthetic": {"styles": ["photo", "inkwash"], "train_scenes": 2, "test_scenes": 1},
            },
            "train": {"pairs": ["photo-inkwash"]},
        }
    )
    prepare_synthetic(params, tmp_path / "data")
    for png in (tmp_path / "data" / "styles" / "inkwash").rglob("*.png"):
        png.unlink()
    manifest = pd.read_parquet(tmp_path / "data" / "manifest.parquet")
    manifest[manifest["style"] == "photo"].to_parquet(tmp_path / "data" / "manifest.parquet")
    with pytest.raises(ValidationFailed, match="at least two styles"):
        train_style_classifier(params, tmp_path / "data", tmp_path / "clf")


def test_high_frequency_share_flags_a_checkerboard_and_not_a_smooth_gradient():
    from culturegan.evaluation import imageops

    size = 32
    smooth = np.broadcast_to(
        (127.5 + 100 * np.cos(np.arange(size) * 2 * np.pi / size))[None, :, None], (size, size, 3)
    )
    checker = (np.indices((size, size)).sum(axis=0) % 2 * 255)[..., None].repeat(3, axis=2)
    images = np.stack([smooth, checker]).astype(np.uint8)
    share = imageops.high_frequency_share(images)
    assert share[0] < 0.01 and share[1] > 0.99
    ratio = metrics.high_frequency(images[1:], float(share[0]))["hf_ratio"]
    assert ratio > 100


def test_histogram_swap_keeps_each_pixels_rank_and_takes_another_images_values():
    from culturegan.evaluation.classifier import _swap_histograms

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8)
    out = _swap_histograms(x, 1.0, gen)
    for img, new in zip(x, out, strict=True):
        # same ordering of pixels within each channel (texture and edges kept) ...
        assert torch.equal(img.reshape(3, -1).argsort(-1), new.reshape(3, -1).argsort(-1))
        # ... with the sorted values of some image of the batch (its colour statistics)
        assert any(
            torch.equal(new.reshape(3, -1).sort(-1).values, other.reshape(3, -1).sort(-1).values)
            for other in x
        )
    assert torch.equal(_swap_histograms(x, 0.0, gen), x)


def test_colour_only_transfer_loses_to_the_truth_in_the_classifier_space(tmp_path: Path, bench):
    """Trap 7: a classifier that learnt colour would let a colour transfer pass for the style."""
    params, data, clf_path, _ = bench
    out = tmp_path / "photo-ukiyoe"
    evaluate_pair(params, Pair("photo", "ukiyoe"), data, None, clf_path, out)
    controls = json.loads((out / "metrics.json").read_text())["controls"]
    truth, colour = controls["truth"], controls["colour_transfer"]
    assert colour["kid_classifier_relative_gain"] < truth["kid_classifier_relative_gain"] - 0.3
    assert colour["style_accuracy"] < truth["style_accuracy"]


# --- scoring on fixed tiles (evaluation.tile_size) ------------------------------------------


def test_tiles_cut_each_image_into_its_non_overlapping_squares_in_order():
    images = np.arange(2 * 6 * 4 * 3, dtype=np.int32).reshape(2, 6, 4, 3)
    t = imageops.tiles(images, 2)
    assert t.shape == (2 * 3 * 2, 2, 2, 3)  # 6x4 -> 3 rows of 2 tiles each
    np.testing.assert_array_equal(t[0], images[0, 0:2, 0:2])
    np.testing.assert_array_equal(t[1], images[0, 0:2, 2:4])
    np.testing.assert_array_equal(t[2], images[0, 2:4, 0:2])
    np.testing.assert_array_equal(t[6], images[1, 0:2, 0:2])
    assert imageops.tiles(images, 4).shape == (2, 4, 4, 3)  # the remainder rows are cut off
    assert imageops.tiles(images, None) is images  # no tile size: the whole images are the units
    with pytest.raises(ValueError, match="larger than"):
        imageops.tiles(images, 8)


def test_tile_size_larger_than_the_images_is_refused_when_params_load():
    with pytest.raises(
        ConfigError, match="evaluation.tile_size"
    ):  # parse_params, as load_params does
        tiny_params(tile_size=64)


def test_tiled_evaluation_scores_every_tile_and_keeps_whole_images_in_the_grid(
    tmp_path: Path, bench
):
    _, data, _, _ = bench
    params = tiny_params(tile_size=16)
    clf = train_style_classifier(params, data, tmp_path / "clf")
    report = json.loads(Path(clf["report"]).read_text())
    assert report["tile_size"] == 16 and report["n_train"]["photo"] == 30 * 4
    assert report["test_accuracy"] > 0.5  # 4 styles: chance is 0.25
    seen: list[tuple[int, ...]] = []

    def spy(images: np.ndarray) -> np.ndarray:
        seen.append(images.shape)
        return images.copy()

    out = tmp_path / "photo-inkwash"
    evaluate_pair(
        params, Pair("photo", "inkwash"), data, None, Path(clf["classifier"]), out, translate=spy
    )
    m = json.loads((out / "metrics.json").read_text())
    assert seen == [(12, SIZE, SIZE, 3)]  # the GAN translated whole images
    assert m["tile_size"] == 16
    assert m["n_scored"] == {"source_test": 48, "target_test": 48, "target_train_refs": 120}
    assert m["methods"]["gan"]["n_images"] == 48 and m["controls"]["truth"]["n_images"] == 48
    assert m["methods"]["gan"]["gt_ssim"] == pytest.approx(m["methods"]["identity"]["gt_ssim"])
    assert m["controls"]["truth"]["gt_ssim"] == pytest.approx(1.0)
    grid = Image.open(out / "grid.png")
    assert grid.height > 3 * SIZE  # whole 32 px images, not 16 px tiles


def test_without_a_truth_the_damaged_source_is_scored_as_a_control(tmp_path: Path, bench):
    """Real data (no shared scenes): noise and blur of the source are scored like the methods,
    so a reader can see whether the quality metric rewards damage as if it were a transfer."""
    import shutil

    from culturegan.data.manifest import read_manifest, write_manifest

    params, data, clf_path, _ = bench
    real = tmp_path / "data"
    shutil.copytree(data, real)
    df = read_manifest(real)
    df["scene"] = ""  # what ingest writes for a real source
    write_manifest(df, real)
    out = tmp_path / "eval"
    result = evaluate_pair(
        params,
        Pair("photo", "inkwash"),
        real,
        None,
        clf_path,
        out,
        translate=module_translator(_blur_generator()),
    )
    assert result["ground_truth"] is False
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["controls"]) == ["source_noise", "source_blur"]
    noise, blur = m["controls"]["source_noise"], m["controls"]["source_blur"]
    assert noise["n_images"] == blur["n_images"] == 12
    assert "gt_ssim" not in noise
    assert noise["content_ssim"] < 0.9 and blur["content_ssim"] < 0.99
    # damage is not a transfer into ink wash: far below the true renderings' gain on this data
    assert (
        noise["kid_classifier_relative_gain"] < 0.5 and blur["kid_classifier_relative_gain"] < 0.5
    )


def test_damage_augment_blurs_or_noises_a_share_of_images_and_zero_changes_nothing():
    from culturegan.evaluation.classifier import _damage

    x = torch.from_numpy(scenes("ukiyoe", range(8))).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    gen = torch.Generator().manual_seed(0)
    assert _damage(x, 0.0, gen) is x
    state = gen.get_state()
    assert torch.equal(
        gen.get_state(), state
    )  # p = 0 draws nothing: the default classifier is unchanged
    out = _damage(x, 1.0, gen)
    assert out.shape == x.shape and out.min() >= -1.0 and out.max() <= 1.0
    hf_in = imageops.high_frequency_share(
        ((x + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    )
    hf_out = imageops.high_frequency_share(
        ((out + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    )
    smoother, noisier = hf_out < hf_in * 0.8, hf_out > hf_in * 1.2
    assert (smoother | noisier).all()  # every image is damaged one way or the other
    assert smoother.any() and noisier.any()
    half = _damage(x, 0.5, torch.Generator().manual_seed(1))
    same = [torch.equal(half[i], x[i]) for i in range(len(x))]
    assert 0 < sum(same) < len(x)
