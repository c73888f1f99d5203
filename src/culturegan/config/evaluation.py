"""The `evaluation` and `analysis` sections: per-pair metrics, baselines, the style classifier,
the cultural distance views, and the statistics of quality vs cultural distance."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from culturegan.config.base import StrictModel, no_repeats
from culturegan.config.measures import PRIMARY_CHOICES


class ClassifierConfig(StrictModel):
    """Style classifier trained in the pipeline; its penultimate layer is the FID/KID feature space."""

    input_size: int = Field(64, ge=16, le=512, description="images are resized to this square size first")
    width: int = Field(24, ge=4, le=256, description="channels of the first conv layer (doubled twice)")
    feature_dim: int = Field(128, ge=8, le=2048, description="size of the penultimate (feature) layer")
    epochs: int = Field(8, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=4096)
    lr: float = Field(3e-3, gt=0, description="peak learning rate of the one-cycle schedule (AdamW)")
    weight_decay: float = Field(1e-4, ge=0)
    max_shift: int = Field(4, ge=0, le=64, description="random translation in pixels (reflect padding)")
    colour_augment: float = Field(
        0.5,
        ge=0,
        le=1,
        description="probability that a training image takes the per-channel colour histogram of another"
        " random training image (any style): colour alone then cannot decide the style",
    )
    damage_augment: float = Field(
        0.0,
        ge=0,
        le=1,
        description="probability that a training image is blurred or given noise, keeping its style label:"
        " damage then does not read as a move towards another style (real art: params/realart.yaml)",
    )
    ensemble: int = Field(
        1,
        ge=1,
        le=8,
        description="classifiers trained with seeds seed, seed+1, ...: the feature space concatenates their"
        " features and the style probabilities are their mean, so one training run's quirks weigh less"
        " (few images: a single run's space decides real-art verdicts, docs/quality.md)",
    )


class GatysConfig(StrictModel):
    """Gatys et al. (2016) optimisation-based transfer; runs only when evaluation.vgg_weights is set."""

    steps: int = Field(40, ge=1, le=5000, description="Adam steps on the output image")
    lr: float = Field(0.03, gt=0, description="Adam step size on images scaled to [0, 1]")
    content_weight: float = Field(1.0, ge=0)
    style_weight: float = Field(1e4, ge=0)
    max_refs: int = Field(16, ge=1, le=1024, description="target TRAIN images whose mean Gram matrices are the style")
    batch_size: int = Field(16, ge=1, le=1024)


class CultureConfig(StrictModel):
    """Hand-made views of the cultural distance between styles (no downloaded weights)."""

    palette_bins: int = Field(8, ge=2, le=32, description="bins per RGB channel of the palette histogram")
    edge_threshold: float = Field(
        0.25, gt=0, description="Sobel magnitude of luminance (in [0, 1]) above which a pixel is an edge"
    )
    blank_detail_std: float = Field(
        0.02, gt=0, le=1, description="local luminance std (5x5, in [0, 1]) below which a pixel has no detail"
    )
    blank_tone_margin: float = Field(
        0.08, ge=0, le=1, description="luminance distance from the paper tone (90th percentile) still counted as paper"
    )


class TextureConfig(StrictModel):
    """The training-free texture feature space (metrics.TextureFeatures): Gram statistics of a
    fixed random filter bank on each image's standardised luminance; blind to colour by design."""

    filters: int = Field(32, ge=2, le=128, description="random filters per scale")
    kernel_size: int = Field(5, ge=2, le=31, description="side of each random filter in pixels")
    scales: list[int] = Field(
        default_factory=lambda: [1, 2, 4],
        min_length=1,
        description="area-average factors the filters run at (scales smaller than a filter are skipped)",
    )
    seed: int = Field(0, ge=0, description="draws the filters; fixed, so every run scores in one space")

    @field_validator("scales")
    @classmethod
    def _scales(cls, scales: list[int]) -> list[int]:
        if any(s < 1 for s in scales):
            raise ValueError(f"scales must be >= 1, got {scales}")
        return no_repeats("scales", scales)


class EvaluationConfig(StrictModel):
    """Per-pair evaluation: metrics on the test split, baselines on the same images, cultural distance."""

    baselines: list[Literal["identity", "reinhard", "histogram", "gatys"]] = Field(
        default_factory=lambda: ["identity", "reinhard", "histogram", "gatys"],
        description="baselines run beside the GAN; gatys is skipped unless vgg_weights is set",
    )
    kid_subsets: int = Field(100, ge=1, le=10000, description="random subsets averaged by KID")
    kid_subset_size: int = Field(100, ge=2, description="KID subset size (capped at the smaller set)")
    hist_bins: int = Field(8, ge=2, le=64, description="bins per RGB channel of the colour histogram distance")
    batch_size: int = Field(32, ge=1, le=4096, description="images per forward pass of the GAN and extractors")
    grid_rows: int = Field(6, ge=1, le=64, description="test scenes shown in grid.png")
    tile_size: int | None = Field(
        None,
        ge=16,
        description="score on the fixed non-overlapping tiles of this side of every test image (and"
        " train the style classifier on them); null: whole images. Every method still translates"
        " whole images; few large paintings give many tiles (params/realart.yaml)",
    )
    inception_weights: Path | None = Field(
        None,
        description="local torchvision inception_v3 state_dict: adds the Inception feature space; never downloaded",
    )
    vgg_weights: Path | None = Field(
        None, description="local torchvision vgg19 state_dict: enables the Gatys baseline; never downloaded"
    )
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    texture: TextureConfig | None = Field(
        default_factory=TextureConfig,
        description="the training-free texture feature space scored beside the classifier's; null: off",
    )
    gatys: GatysConfig = Field(default_factory=GatysConfig)
    culture: CultureConfig = Field(default_factory=CultureConfig)

    @field_validator("baselines")
    @classmethod
    def _unique_baselines(cls, baselines: list[str]) -> list[str]:
        return no_repeats("baselines", baselines)


QualityMeasure = Literal[PRIMARY_CHOICES]  # type: ignore[valid-type]  # names from config/measures.py


class AnalysisConfig(StrictModel):
    """Quality vs cultural distance across directed pairs: the statistics and the report."""

    primary_metric: QualityMeasure = Field(
        "kid_gain",
        description="the GAN quality measure of the one pre-specified test (vs the combined distance)",
    )
    bootstrap_samples: int = Field(
        2000, ge=100, le=100_000, description="bootstrap resamples (pairs, then seeds within pairs)"
    )
    ci_level: float = Field(0.95, gt=0.5, lt=1.0, description="coverage of bootstrap intervals")
    alpha: float = Field(0.05, gt=0.0, lt=0.5, description="level at which a p-value is called distinguishable from chance")
    permutation_samples: int = Field(
        10_000, ge=100, le=1_000_000,
        description="random style relabellings when there are more than 7 styles (up to 7: all k!)",
    )
