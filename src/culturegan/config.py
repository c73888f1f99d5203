"""params.yaml schema: pydantic models, the one place where parameters and their defaults live.

Every stage reads its own section of the same `Params` object. Unknown or misspelt keys, wrong
types and bad values are rejected before any work starts, with the key path and the closest
valid key in the message.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from culturegan.errors import ConfigError

STYLE_PATTERN = r"[a-z][a-z0-9_]{0,31}"
StyleName = Annotated[str, Field(pattern=f"^{STYLE_PATTERN}$")]
SYNTHETIC_STYLES = ("photo", "inkwash", "ukiyoe", "impressionist", "goldground", "dotpainting")


def split_pair(pair: str) -> tuple[str, str]:
    """'<source>-<target>' -> (source, target), or ValueError; a hyphen is never in a style name."""
    parts = pair.split("-")
    if len(parts) != 2 or not all(re.fullmatch(STYLE_PATTERN, p) for p in parts):
        raise ValueError(f"{pair!r} is not '<source>-<target>' with two style names, e.g. 'photo-inkwash'")
    if parts[0] == parts[1]:
        raise ValueError(f"{pair!r} transfers a style to itself")
    return parts[0], parts[1]


def parse_pair(pair: str) -> tuple[str, str]:
    """`split_pair` for stage arguments (CLI --pair, KFP): a bad pair is a ConfigError."""
    try:
        return split_pair(pair)
    except ValueError as err:
        raise ConfigError(f"bad culture pair: {err}", hint="use a pair of train.pairs in params.yaml") from None


# ResnetGenerator halves an image twice and doubles it back: other sides come out another size.
GENERATOR_STRIDE = 4


def _generator_side(name: str, side: int) -> int:
    if side % GENERATOR_STRIDE:
        raise ValueError(
            f"{name} {side} is not a multiple of {GENERATOR_STRIDE}: the generator downsamples twice"
            " and upsamples back, so the output would not match the input; use e.g. 64, 128 or 256"
        )
    return side


def patch_output_size(image_size: int, n_layers: int) -> int:
    """Side of the PatchGAN score map for square inputs; < 1 means the image is too small."""
    side = image_size
    for _ in range(n_layers):
        side = side // 2  # k4 s2 p1
    return side - 2  # two k4 s1 p1 convs


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticConfig(_Strict):
    """The embedded procedural benchmark: the same random scenes rendered in every style."""

    styles: list[StyleName] = Field(default_factory=lambda: list(SYNTHETIC_STYLES), min_length=2)
    train_scenes: int = Field(240, ge=1, description="scenes in the train split (each style)")
    test_scenes: int = Field(60, ge=1, description="scenes in the test split (each style)")
    preview_scenes: int = Field(6, ge=1, le=32, description="rows in the preview grid")

    @field_validator("styles")
    @classmethod
    def _known_styles(cls, styles: list[str]) -> list[str]:
        unknown = [s for s in styles if s not in SYNTHETIC_STYLES]
        if unknown:
            raise ValueError(f"unknown synthetic style(s) {unknown}; available: {list(SYNTHETIC_STYLES)}")
        if len(set(styles)) != len(styles):
            raise ValueError("styles must not repeat")
        return styles


class DownloadConfig(_Strict):
    """Retries, timeouts and size limits for HTTP(S) and S3 sources."""

    retries: int = Field(4, ge=0, le=20)
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles each retry")
    timeout_s: float = Field(60.0, gt=0)
    max_archive_bytes: int = Field(
        20_000_000_000, ge=1, description="refuse archives (or downloads) larger than this once uncompressed"
    )


class DataConfig(_Strict):
    """Where the style images come from and how they are normalised."""

    root: Path = Path("data")
    cache_dir: Path = Field(
        Path(".staging"), description="downloads, extracted archives and the ingest journal (not versioned)"
    )
    source: str = Field(
        "synthetic",
        description="'synthetic', a local folder, an http(s) URL of a zip/tar archive, or s3://bucket/prefix",
    )
    layout: Literal["auto", "cyclegan", "per_style"] = "auto"
    style_names: dict[str, StyleName] = Field(
        default_factory=dict,
        description="rename source domains to style names, e.g. {A: ukiyoe, B: photo} for a CycleGAN layout",
    )
    image_size: int = Field(64, ge=16, le=1024, description="normalised images are square, this many pixels")
    min_source_size: int = Field(32, ge=1, description="reject sources whose shorter side is smaller")
    max_pixels: int = Field(40_000_000, ge=1, description="reject larger sources (decompression bombs)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="test share for sources without a split")
    near_duplicate_bits: int = Field(
        4, ge=0, le=32, description="pHash Hamming distance at or below which two images are near duplicates"
    )
    workers: int = Field(0, ge=0, description="ingest and rendering processes; 0 means one per CPU core")
    download: DownloadConfig = Field(default_factory=DownloadConfig)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, size: int) -> int:
        return _generator_side("image_size", size)

    @field_validator("source")
    @classmethod
    def _source_kind(cls, source: str) -> str:
        if not source.strip():
            raise ValueError("must not be empty: use 'synthetic', a folder, an http(s) URL or s3://bucket/prefix")
        if "://" in source and not source.startswith(("http://", "https://", "s3://", "file://")):
            raise ValueError(f"unsupported URI scheme in {source!r}: use http(s)://, s3:// or a local path")
        return source

    @property
    def is_synthetic(self) -> bool:
        return self.source == "synthetic"


class ValidationConfig(_Strict):
    """Thresholds of the Great Expectations gate over the manifest."""

    min_train_per_style: int = Field(50, ge=1)
    min_test_per_style: int = Field(10, ge=1)
    min_size: int = Field(16, ge=1, description="smallest allowed width/height of a normalised image")
    max_size: int = Field(1024, ge=1, description="largest allowed width/height of a normalised image")
    modes: list[str] = Field(default_factory=lambda: ["RGB"])
    min_intensity_std: float = Field(2.0, ge=0, description="images with a flatter luminance are blank")
    max_class_imbalance: float = Field(3.0, ge=1, description="largest / smallest style count in a split")
    docs_dir: Path = Path("reports/data_docs")

    @model_validator(mode="after")
    def _size_range(self) -> ValidationConfig:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) is larger than max_size ({self.max_size})")
        return self


class TrackingConfig(_Strict):
    """MLflow tracking: where runs go. MLFLOW_TRACKING_URI in the environment overrides tracking_uri."""

    tracking_uri: str | None = Field(
        None,
        description="None: env MLFLOW_TRACKING_URI if set, else sqlite:///mlflow.db; e.g. http://mlflow:5000",
    )
    experiment: str = Field("culturegan", min_length=1, max_length=500)
    artifact_location: str | None = Field(
        "mlartifacts",
        description="artifact root given to a NEW experiment: a local folder (local stores only) or s3://...;"
        " None: the store's default (a tracking server's --artifacts-destination)",
    )
    log_system_metrics: bool = Field(True, description="log CPU/memory/disk/GPU use to each training run")
    system_metrics_interval_s: float = Field(10.0, gt=0, le=3600, description="system metrics sampling period")

    @field_validator("tracking_uri", "artifact_location")
    @classmethod
    def _no_credentials(cls, uri: str | None) -> str | None:
        if uri is not None and not uri.strip():
            raise ValueError("must not be empty: leave it out (null) for the default")
        if uri is not None and re.search(r"://[^/@\s]+@", uri):
            raise ValueError(
                "must not contain credentials: set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or"
                " the AWS variables in the environment instead"
            )
        return uri


class GeneratorConfig(_Strict):
    """ResNet generator (Johnson et al. 2016, as in CycleGAN/CUT): 2 down, residual blocks, 2 up."""

    ngf: int = Field(16, ge=1, le=512, description="filters of the first conv layer (reference: 64)")
    n_blocks: int = Field(6, ge=0, le=32, description="residual blocks at 1/4 resolution (reference: 9)")
    norm: Literal["instance", "batch", "none"] = "instance"
    upsample: Literal["resize", "transposed"] = Field(
        "resize",
        description="resize: nearest 2x then a 3x3 conv (no checkerboard, Odena et al. 2016);"
        " transposed: the paper code's stride-2 transposed conv",
    )
    residual: bool = Field(
        False,
        description="predict a change to the input, zero at initialisation: the generator starts"
        " as the identity and keeps the content from step 0",
    )


class DiscriminatorConfig(_Strict):
    """PatchGAN discriminator (Isola et al. 2017): one real/fake score per overlapping patch."""

    ndf: int = Field(32, ge=1, le=512, description="filters of the first conv layer (reference: 64)")
    n_layers: int = Field(3, ge=1, le=6, description="stride-2 conv layers (3: 70x70 receptive field)")
    norm: Literal["instance", "batch", "none"] = "instance"


class CycleGANConfig(_Strict):
    """CycleGAN objective (Zhu et al. 2017): LSGAN + cycle consistency + identity, history pool."""

    lambda_cycle: float = Field(10.0, ge=0, description="weight of the cycle-consistency L1 loss")
    lambda_identity: float = Field(
        0.5, ge=0, description="identity L1 weight, as a fraction of lambda_cycle (paper code's convention)"
    )
    pool_size: int = Field(50, ge=0, description="history of generated images shown to D; 0 = none")


class CUTConfig(_Strict):
    """CUT / FastCUT objective (Park et al. 2020): LSGAN + PatchNCE over generator features."""

    lambda_gan: float = Field(1.0, ge=0)
    lambda_nce: float | None = Field(None, ge=0, description="PatchNCE weight; null: 1 for cut, 10 for fastcut")
    nce_idt: bool | None = Field(
        None, description="identity PatchNCE on target images; null: true for cut, false for fastcut"
    )
    nce_layers: list[int] = Field(
        default_factory=lambda: [0, 4, 8, 12, 16],
        min_length=1,
        description="indices into the generator's layer list whose outputs feed PatchNCE",
    )
    num_patches: int = Field(256, ge=1, le=4096, description="patches sampled per layer and image")
    nce_t: float = Field(0.07, gt=0, description="softmax temperature of PatchNCE")
    head_dim: int = Field(256, ge=1, description="output size of the 2-layer MLP projection head")
    flip_equivariance: bool = Field(False, description="randomly flip the input and unflip features (FastCUT)")

    @field_validator("nce_layers")
    @classmethod
    def _sorted_unique(cls, layers: list[int]) -> list[int]:
        if any(i < 0 for i in layers) or sorted(set(layers)) != layers:
            raise ValueError("must be increasing, non-negative and without repeats, e.g. [0, 4, 8, 12, 16]")
        return layers


class TrainConfig(_Strict):
    """GAN training: one model per culture pair, objective, networks, schedule and speed knobs."""

    pairs: list[str] = Field(
        default_factory=lambda: ["photo-inkwash", "photo-ukiyoe", "photo-impressionist"],
        min_length=1,
        description="'<source>-<target>' style pairs, one model each",
    )
    seeds: list[Annotated[int, Field(ge=0, strict=True)]] = Field(
        default_factory=lambda: [0],
        min_length=1,
        description="training seeds per pair; >= 3 for the seed-level statistics of the analysis",
    )
    objective: Literal["cyclegan", "cut", "fastcut"] = Field(
        "cyclegan", description="cyclegan converges fastest in a small step budget; fastcut steps are 2.5x cheaper"
    )
    steps: int = Field(480, ge=1, description="optimisation steps per pair (each on one batch)")
    decay_start: float = Field(
        0.5, ge=0, le=1, description="fraction of steps at constant lr, then linear decay to 0"
    )
    batch_size: int = Field(4, ge=1, le=1024, description="global batch (split across DDP ranks)")
    lr: float = Field(2e-4, gt=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    flip: bool = Field(True, description="random horizontal flip of training images")
    crop_size: int | None = Field(
        None,
        ge=16,
        le=1024,
        description="train on random square crops of this side from images stored at data.image_size"
        " (CycleGAN's load_size/crop_size); null: whole images. Evaluation scores whole images, or their tiles with evaluation.tile_size.",
    )
    ema: float = Field(
        0.999, ge=0, lt=1, description="decay of the generators' weight average used for the outputs; 0: off"
    )
    augment: list[Literal["translation", "cutout", "color"]] = Field(
        default_factory=list,
        description="DiffAugment policies applied to every discriminator input, real and fake",
    )
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = Field(default_factory=DiscriminatorConfig)
    cyclegan: CycleGANConfig = Field(default_factory=CycleGANConfig)
    cut: CUTConfig = Field(default_factory=CUTConfig)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda if available")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast dtype; auto: bf16 on Ampere+ CUDA and on CPUs with native bf16"
    )
    channels_last: bool = Field(False, description="NHWC memory format (helps on CUDA tensor cores)")
    compile: bool = Field(False, description="torch.compile the networks (slow start, faster steps)")
    checkpoint_every: int = Field(60, ge=1, description="steps between atomic checkpoints")
    log_every: int = Field(20, ge=1, description="steps between logged losses")
    sample_every: int = Field(120, ge=1, description="steps between sample grids")
    sample_count: int = Field(4, ge=1, le=32, description="source images in each sample grid")

    @field_validator("pairs")
    @classmethod
    def _pair_names(cls, pairs: list[str]) -> list[str]:
        for pair in pairs:
            split_pair(pair)
        if len(set(pairs)) != len(pairs):
            raise ValueError("pairs must not repeat")
        return pairs

    @field_validator("crop_size")
    @classmethod
    def _crop_size(cls, size: int | None) -> int | None:
        return None if size is None else _generator_side("crop_size", size)

    @field_validator("seeds")
    @classmethod
    def _seeds_unique(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must not repeat")
        return seeds

    @model_validator(mode="after")
    def _nce_layers_exist(self) -> TrainConfig:
        # ResnetGenerator's flat layer list: stem 4, 2 x 3 down, n_blocks, 2 x 3 up, head 3.
        n_layers = 19 + self.generator.n_blocks
        if self.objective != "cyclegan" and self.cut.nce_layers[-1] >= n_layers:
            raise ValueError(
                f"cut.nce_layers {self.cut.nce_layers} index past the generator's {n_layers} layers "
                f"(generator.n_blocks={self.generator.n_blocks}); use indices below {n_layers}"
            )
        return self

    @property
    def lambda_nce(self) -> float:
        if self.cut.lambda_nce is not None:
            return self.cut.lambda_nce
        return 10.0 if self.objective == "fastcut" else 1.0

    @property
    def nce_idt(self) -> bool:
        if self.cut.nce_idt is not None:
            return self.cut.nce_idt
        return self.objective == "cut"


class ClassifierConfig(_Strict):
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


class GatysConfig(_Strict):
    """Gatys et al. (2016) optimisation-based transfer; runs only when evaluation.vgg_weights is set."""

    steps: int = Field(40, ge=1, le=5000, description="Adam steps on the output image")
    lr: float = Field(0.03, gt=0, description="Adam step size on images scaled to [0, 1]")
    content_weight: float = Field(1.0, ge=0)
    style_weight: float = Field(1e4, ge=0)
    max_refs: int = Field(16, ge=1, le=1024, description="target TRAIN images whose mean Gram matrices are the style")
    batch_size: int = Field(16, ge=1, le=1024)


class CultureConfig(_Strict):
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


class EvaluationConfig(_Strict):
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
    gatys: GatysConfig = Field(default_factory=GatysConfig)
    culture: CultureConfig = Field(default_factory=CultureConfig)

    @field_validator("baselines")
    @classmethod
    def _unique_baselines(cls, baselines: list[str]) -> list[str]:
        if len(set(baselines)) != len(baselines):
            raise ValueError("baselines must not repeat")
        return baselines


QualityMeasure = Literal[
    "kid_gain", "kid_gain_floor", "deception", "deception_vs_ceiling", "content_edge_ssim",
    "gt_ssim", "gt_ssim_coarse", "gt_psnr", "gt_hist_hellinger",
]


class AnalysisConfig(_Strict):
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


# Metrics of evaluation/metrics.json and which way is better; `registry.direction: auto` uses this.
_HIGHER_IS_BETTER = re.compile(
    r"^(?:kid_[a-z0-9]+_relative_gain|gt_ssim|gt_ssim_coarse|gt_psnr|content_ssim|content_edge_ssim"
    r"|style_accuracy|target_probability)$"
)
_LOWER_IS_BETTER = re.compile(r"^(?:(?:kid|fid)_[a-z0-9]+|gt_hist_hellinger)$")


class RegistryConfig(_Strict):
    """Model registry: one registered model per direction, promoted to `champion` by a metric gate."""

    model_prefix: str = Field(
        "culturegan",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="registered models are named <model_prefix>-<source>-to-<target>",
    )
    metric: str = Field(
        "kid_classifier_relative_gain",
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="the GAN's metric in the evaluate stage's metrics.json that decides promotion",
    )
    direction: Literal["auto", "higher", "lower"] = Field(
        "auto", description="which metric values are better; auto: known from the metric's name"
    )
    min_improvement: float = Field(
        0.01, ge=0, description="a candidate must beat the champion by more than this (metric units)"
    )
    max_side: int = Field(
        1024, ge=8, le=16384, description="the served model refuses images with a longer side (400)"
    )
    max_images: int = Field(
        4,
        ge=1,
        le=4096,
        description="images per request the served model accepts; with max_side it bounds the request"
        " body `culturegan serve` reads (413 above): 4 images of 1024 px as JSON are about 75 MB",
    )
    batch_size: int = Field(8, ge=1, le=1024, description="images per forward pass inside the served model")

    @model_validator(mode="after")
    def _known_direction(self) -> RegistryConfig:
        known = (
            "higher" if _HIGHER_IS_BETTER.match(self.metric)
            else "lower" if _LOWER_IS_BETTER.match(self.metric)
            else None
        )
        if self.direction == "auto" and known is None:
            raise ValueError(
                f"the direction of metric {self.metric!r} is unknown: set registry.direction to higher"
                " or lower, or use a metric of metrics.json such as kid_classifier_relative_gain or gt_ssim"
            )
        if known is not None and self.direction not in ("auto", known):
            raise ValueError(
                f"{self.metric} is better when {known}, but registry.direction is {self.direction!r}"
            )
        return self

    @property
    def higher_is_better(self) -> bool:
        if self.direction != "auto":
            return self.direction == "higher"
        return bool(_HIGHER_IS_BETTER.match(self.metric))


# Kubernetes quantities in the forms kfp's set_cpu_*/set_memory_* accept.
_K8S_CPU = r"^([0-9]*\.)?[0-9]+m?$"
_K8S_MEMORY = r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$"


class StepResources(_Strict):
    """CPU and memory of one pipeline step's container (Kubernetes quantities, e.g. '500m', '8Gi')."""

    cpu_request: str = Field("1", pattern=_K8S_CPU, description="CPUs reserved for the step")
    cpu_limit: str = Field("2", pattern=_K8S_CPU, description="CPUs the step may use at most")
    memory_request: str = Field("2Gi", pattern=_K8S_MEMORY, description="memory reserved for the step")
    memory_limit: str = Field("4Gi", pattern=_K8S_MEMORY, description="memory above which the step is killed")


class PipelineConfig(_Strict):
    """The Kubeflow pipeline (`culturegan pipeline compile|submit`): image, resources, retries.

    Applied when the pipeline is compiled; `kfp.local` (`culturegan pipeline run-local`) ignores
    all of it but the step order.
    """

    image: str = Field(
        "culturegan:0.1.0",
        # a tag (repo:tag) or, to pin the exact build, a digest (repo@sha256:<64 hex>)
        pattern=r"^[A-Za-z0-9][^\s@]*(@sha256:[0-9a-f]{64})?$",
        description="image every step runs in (infra/docker, pushed to a registry the cluster can pull from); "
        "repo:tag or repo@sha256:<digest>",
    )
    name: str = Field(
        "culturegan", pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,127}$", description="pipeline name in KFP"
    )
    steps: StepResources = Field(default_factory=StepResources, description="every step but train")
    train: StepResources = Field(
        default_factory=lambda: StepResources(
            cpu_request="4", cpu_limit="8", memory_request="8Gi", memory_limit="16Gi"
        ),
        description="each train step",
    )
    accelerator_type: str = Field(
        "nvidia.com/gpu", min_length=1, description="Kubernetes resource name of the GPU a train step requests"
    )
    gpus: int = Field(
        1, ge=0, le=1,
        description="GPUs per train step (one training process; multi-GPU DDP runs as a PyTorchJob); 0: CPU",
    )
    retries: int = Field(2, ge=0, le=10, description="retries of a failed train step (e.g. a preempted node)")
    retry_backoff_s: int = Field(60, ge=0, le=3600, description="wait before the first retry; doubles each retry")
    parallelism: int = Field(0, ge=0, le=64, description="pairs trained at the same time; 0: all at once")
    cache: bool = Field(
        True, description="reuse the outputs of unchanged steps (prepare, validate, classifier, culture, evaluate)"
    )

    @model_validator(mode="after")
    def _requests_within_limits(self) -> PipelineConfig:
        for section in ("steps", "train"):
            res: StepResources = getattr(self, section)
            if _k8s_quantity(res.cpu_request) > _k8s_quantity(res.cpu_limit):
                raise ValueError(f"{section}.cpu_request {res.cpu_request} exceeds {section}.cpu_limit {res.cpu_limit}")
            if _k8s_quantity(res.memory_request) > _k8s_quantity(res.memory_limit):
                raise ValueError(
                    f"{section}.memory_request {res.memory_request} exceeds {section}.memory_limit {res.memory_limit}"
                )
        return self


_QUANTITY_SUFFIX = {
    "m": 1e-3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def _k8s_quantity(text: str) -> float:
    number = re.match(r"^[0-9.]+", text)
    assert number is not None  # the field patterns guarantee a leading number
    return float(number.group()) * _QUANTITY_SUFFIX.get(text[number.end():], 1.0)


class Params(_Strict):
    """The whole params.yaml."""

    seed: int = Field(0, ge=0)
    data: DataConfig = Field(default_factory=DataConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)

    @model_validator(mode="after")
    def _across_sections(self) -> Params:
        return _check_across_sections(self)


def size_problem(train: TrainConfig, image_size: int) -> str | None:
    """Why the generator or discriminator cannot train on these sizes, or None."""
    for key, side in (("data.image_size", image_size), ("train.crop_size", train.crop_size)):
        if side is not None and side % GENERATOR_STRIDE:
            return f"{key} {side} is not a multiple of {GENERATOR_STRIDE}, as the generator's 2 down/upsamplings need"
    if train.crop_size is not None and train.crop_size > image_size:
        return (
            f"train.crop_size {train.crop_size} is larger than data.image_size {image_size}:"
            " use a crop no larger than the stored images, or null for whole images"
        )
    side = train.crop_size or image_size
    if patch_output_size(side, train.discriminator.n_layers) < 1:
        return (
            f"train.discriminator.n_layers {train.discriminator.n_layers} is too deep for {side}px"
            " training images: use fewer layers or larger images"
        )
    return None


def unknown_pair_styles(pairs: list[str], styles: list[str]) -> tuple[list[str], list[str]]:
    """The pairs naming a style outside `styles`, and those styles (in order of appearance)."""
    bad, missing = [], []
    for pair in pairs:
        absent = [s for s in split_pair(pair) if s not in styles]
        if absent:
            bad.append(pair)
            missing += [s for s in absent if s not in missing]
    return bad, missing


def _check_across_sections(params: Params) -> Params:
    problem = size_problem(params.train, params.data.image_size)
    if problem:
        raise ValueError(problem)
    tile = params.evaluation.tile_size
    if tile is not None and tile > params.data.image_size:
        raise ValueError(
            f"evaluation.tile_size ({tile}) is larger than data.image_size ({params.data.image_size})"
        )
    if params.data.is_synthetic:  # the styles are known now; a real source's come with its manifest
        styles = params.data.synthetic.styles
        bad, missing = unknown_pair_styles(params.train.pairs, styles)
        if bad:
            raise ValueError(
                f"train.pairs {bad} name style(s) {missing} that data.synthetic.styles {styles} does"
                " not render: add the style(s) there or use pairs of those styles"
            )
    return params


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (sub)model that `loc` points into, for 'did you mean' hints."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = field.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "<root>"
        if e["type"] == "extra_forbidden":
            valid = _fields_at(Params, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            parent = ".".join(str(p) for p in loc[:-1])
            hint = f"did you mean '{parent + '.' if parent else ''}{close[0]}'?" if close else (
                f"valid keys here: {', '.join(valid)}"
            )
            lines.append(f"unknown key '{key}' in {source}; {hint}")
        elif not loc:  # a rule across sections: the message names its keys; the input is everything
            lines.append(f"bad value in {source}: {e['msg'].removeprefix('Value error, ')}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"bad value for '{key}' in {source}: {msg} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_params(raw: Any, source: str = "params") -> Params:
    """Validate an already-loaded mapping (e.g. from YAML or a KFP parameter)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a mapping of keys to values, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(
            format_validation_error(err, source), hint="see params.yaml in the repository for every key"
        ) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; every problem is a ConfigError naming the file and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} not found", hint="run from the repository root or pass --params") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    return parse_params(raw, str(path))


def dump_params(params: Params) -> dict[str, Any]:
    """Plain JSON-able dict of the effective parameters (for logging and KFP)."""
    return params.model_dump(mode="json")
