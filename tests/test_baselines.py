"""Baselines: identity, Reinhard colour transfer, histogram matching and (weights-gated) Gatys transfer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from culturegan.config import EvaluationConfig, GatysConfig
from culturegan.data.scene import make_scene
from culturegan.data.synthetic import render
from culturegan.errors import ConfigError
from culturegan.evaluation import imageops
from culturegan.evaluation.baselines import (
    GatysTransfer,
    histogram_matching,
    identity,
    load_vgg19_features,
    make_baselines,
    reinhard,
)

SIZE = 32


def scenes(style: str, seeds: range) -> np.ndarray:
    return np.stack([render(make_scene(s), style, SIZE) for s in seeds])


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return scenes("photo", range(6))


@pytest.fixture(scope="module")
def inkwash_refs() -> np.ndarray:
    return scenes("inkwash", range(100, 120))


def test_identity_returns_an_equal_copy(photo, inkwash_refs):
    out = identity(photo, inkwash_refs)
    assert np.array_equal(out, photo) and out is not photo


def test_reinhard_gives_each_output_the_typical_target_lab_mean_and_std(photo, inkwash_refs):
    out = reinhard(photo, inkwash_refs)
    assert out.dtype == np.uint8 and out.shape == photo.shape
    lab_out, lab_ref = imageops.rgb_to_lab(out), imageops.rgb_to_lab(inkwash_refs)
    want_mean = lab_ref.mean(axis=(1, 2)).mean(0)
    want_std = lab_ref.std(axis=(1, 2)).mean(0)
    np.testing.assert_allclose(
        lab_out.mean(axis=(1, 2)), np.broadcast_to(want_mean, (6, 3)), atol=1.5
    )
    # Spread: looser, since light paper pushed past L = 100 is clipped and near-grey a/b pick up
    # the uint8 rounding of the output.
    np.testing.assert_allclose(
        lab_out.std(axis=(1, 2)), np.broadcast_to(want_std, (6, 3)), rtol=0.15, atol=2.0
    )

    # Ink on tinted paper has one hue: the photo's blues and greens must mostly go.
    def ab_spread(lab: np.ndarray) -> float:
        return float(lab[..., 1:].std(axis=(1, 2)).mean())

    assert ab_spread(lab_out) < 0.5 * ab_spread(imageops.rgb_to_lab(photo))


def test_reinhard_keeps_the_source_layout(photo, inkwash_refs):
    out = reinhard(photo, inkwash_refs)
    # Lab L is an increasing function of luminance: the ranking of pixels survives the transfer.
    corr = [
        np.corrcoef(
            imageops.luminance(out[i : i + 1]).ravel(), imageops.luminance(photo[i : i + 1]).ravel()
        )[0, 1]
        for i in range(len(photo))
    ]
    assert min(corr) > 0.9


def test_histogram_matching_gives_each_channel_the_pooled_target_distribution(photo, inkwash_refs):
    out = histogram_matching(photo, inkwash_refs)
    assert out.dtype == np.uint8 and out.shape == photo.shape
    q = np.linspace(0.05, 0.95, 10)
    for c in range(3):
        ref_q = np.quantile(inkwash_refs[..., c], q)
        for i in range(len(out)):
            assert np.abs(np.quantile(out[i, ..., c], q) - ref_q).max() <= 12, (c, i)


def test_histogram_matching_gives_a_source_of_distinct_values_exactly_the_reference_histogram():
    # 64 distinct values per channel in each 8 x 8 source, 64 distinct reference values pooled
    # over four 4 x 4 references: equal cumulative shares, so the k-th smallest source value must
    # become the k-th smallest reference value, whatever the layout of either.
    rng = np.random.default_rng(7)
    sources = np.stack(
        [np.stack([rng.permutation(np.arange(0, 256, 4)) for _ in range(3)], -1) for _ in range(2)]
    ).reshape(2, 8, 8, 3).astype(np.uint8)
    ref_values = np.stack([rng.choice(256, 64, replace=False) for _ in range(3)], -1)
    refs = ref_values.reshape(4, 4, 4, 3).astype(np.uint8)
    out = histogram_matching(sources, refs)
    for i in range(2):
        for c in range(3):
            assert np.array_equal(np.sort(out[i, ..., c].ravel()), np.sort(ref_values[:, c]))
            # and value by value: a source value's rank picks the reference value
            rank = sources[i, ..., c] // 4
            assert np.array_equal(out[i, ..., c], np.sort(ref_values[:, c])[rank])


def test_histogram_matching_interpolates_between_reference_values_and_rounds():
    # Source: every value 0..255 once (cumulative share (s + 1) / 256). Reference: 0, 85, 170 and
    # 255 equally often (shares 1/4 .. 1). Interpolating the reference value at the source's share
    # gives 85 (s - 63) / 64 for s >= 63 and the lowest value, 0, below.
    src = np.repeat(np.arange(256).reshape(1, 16, 16, 1), 3, axis=-1).astype(np.uint8)
    ref = np.repeat(np.array([0, 85, 170, 255] * 4).reshape(1, 4, 4, 1), 3, axis=-1).astype(np.uint8)
    s = np.arange(256)
    want = np.rint(np.clip(85 * (s - 63) / 64, 0, None)).astype(np.uint8)  # rounded, not cut
    out = histogram_matching(src, ref)
    for c in range(3):
        assert np.array_equal(out[0, ..., c].ravel(), want)


def test_baselines_refuse_float_or_empty_inputs(photo):
    with pytest.raises(ValueError, match="uint8"):
        reinhard(photo.astype(np.float32), photo)
    with pytest.raises(ValueError, match="non-empty"):
        histogram_matching(photo, photo[:0])


def test_make_baselines_skips_gatys_without_vgg_weights_and_says_why():
    methods, skipped = make_baselines(EvaluationConfig())
    assert list(methods) == ["identity", "reinhard", "histogram"]
    assert "evaluation.vgg_weights" in skipped["gatys"]
    only, _ = make_baselines(EvaluationConfig(baselines=["reinhard"]))
    assert list(only) == ["reinhard"]


def test_missing_or_wrong_vgg_weights_are_config_errors_naming_the_key(tmp_path: Path):
    cfg = EvaluationConfig(vgg_weights=tmp_path / "absent.pth")
    with pytest.raises(ConfigError, match=r"evaluation\.vgg_weights .* does not exist"):
        make_baselines(cfg)
    torch.save({"features.0.weight": torch.zeros(2)}, tmp_path / "wrong.pth")
    with pytest.raises(
        ConfigError, match=r"evaluation\.vgg_weights .* not a torchvision vgg19 state_dict"
    ):
        load_vgg19_features(tmp_path / "wrong.pth")


@pytest.fixture(scope="module")
def random_vgg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """VGG-19 conv weights, randomly initialised: tests the code path, not the quality."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["E"], batch_norm=False)
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def test_gatys_runs_from_local_vgg_weights_and_lowers_its_style_loss(
    random_vgg, photo, inkwash_refs
):
    cfg = GatysConfig(steps=4, lr=0.05, max_refs=4, batch_size=2)
    methods, skipped = make_baselines(EvaluationConfig(vgg_weights=random_vgg, gatys=cfg), seed=0)
    assert "gatys" in methods and not skipped
    gatys = methods["gatys"]
    assert isinstance(gatys, GatysTransfer)
    src = photo[:2]
    out = gatys(src, inkwash_refs)
    assert out.dtype == np.uint8 and out.shape == src.shape
    assert not np.array_equal(out, src)
    assert np.array_equal(out, gatys(src, inkwash_refs))  # deterministic on CPU

    def style_loss(images: np.ndarray) -> float:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        r = (
            torch.from_numpy(inkwash_refs[np.linspace(0, 19, 4).round().astype(int)])
            .permute(0, 3, 1, 2)
            .float()
            / 255
        )
        with torch.no_grad():
            g_out, _ = gatys._features(x)
            g_ref, _ = gatys._features(r)
        return float(
            sum(
                ((a - b.mean(0, keepdim=True)) ** 2).mean()
                for a, b in zip(g_out, g_ref, strict=True)
            )
        )

    assert style_loss(out) < style_loss(src)
