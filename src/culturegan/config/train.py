"""The `train` section: one GAN per culture pair, its objective, networks, schedule and speed
knobs, and the size rules its networks impose (`size_problem`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from culturegan.config.base import (
    GENERATOR_STRIDE,
    StrictModel,
    generator_side,
    no_repeats,
    patch_output_size,
)
from culturegan.config.pair import Pair


class GeneratorConfig(StrictModel):
    """ResNet generator (Johnson et al. 2016, as in CycleGAN/CUT): 2 down, residual blocks, 2 up."""

    ngf: int = Field(16, ge=1, le=512, description="filters of the first conv layer (reference: 64)")
    n_blocks: int = Field(6, ge=0, le=32, description="residual blocks at 1/4 resolution (reference: 9)")
    norm: Literal["instance", "batch", "none"] = "instance"
    decoder_norm: Literal["same", "instance", "batch", "none"] = Field(
        "same",
        description="normalisation of the two upsampling layers; same: as norm. batch with"
        " instance norm elsewhere: paler skies into ukiyoe, lower KID gain (docs/quality.md)",
    )
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
    antialias: bool = Field(
        False,
        description="downsample by a stride-1 conv, its activation and a [1, 2, 1] low-pass before"
        " subsampling (Zhang 2019; the CUT paper code's default) instead of a stride-2 conv",
    )


class DiscriminatorConfig(StrictModel):
    """PatchGAN discriminator (Isola et al. 2017): one real/fake score per overlapping patch."""

    ndf: int = Field(32, ge=1, le=512, description="filters of the first conv layer (reference: 64)")
    n_layers: int = Field(3, ge=1, le=6, description="stride-2 conv layers (3: 70x70 receptive field)")
    norm: Literal["instance", "batch", "none"] = "instance"
    antialias: bool = Field(
        False,
        description="each stride-2 conv as a stride-1 conv, its activation and a [1, 2, 1]"
        " low-pass before subsampling (Zhang 2019; the CUT paper code's default)",
    )
    lr_scale: float = Field(
        1.0,
        gt=0,
        le=100,
        description="the discriminators' learning rate as a multiple of train.lr (two time-scale"
        " updates, Heusel et al. 2017); 1: the same rate as the generators (the papers')",
    )
    r1_gamma: float = Field(
        0.0,
        ge=0,
        description="R1 penalty (Mescheder et al. 2018): gamma/2 times the squared norm of D's gradient"
        " at real images, added to D's loss; 0: off (the reference code has none)",
    )
    r1_every: int = Field(
        1,
        ge=1,
        le=64,
        description="lazy R1 (Karras et al. 2020, StyleGAN2): the penalty only on every k-th step,"
        " weighted k times, so it costs about 1/k as much; 1: every step",
    )


class CycleGANConfig(StrictModel):
    """CycleGAN objective (Zhu et al. 2017): LSGAN + cycle consistency + identity, history pool."""

    lambda_cycle: float = Field(10.0, ge=0, description="weight of the cycle-consistency L1 loss")
    lambda_identity: float = Field(
        0.5, ge=0, description="identity L1 weight, as a fraction of lambda_cycle (paper code's convention)"
    )
    source_cycle_scale: float = Field(
        1.0,
        ge=0,
        description="weight of the source -> target -> source cycle, as a fraction of lambda_cycle"
        " (the reference code's lambda_A / lambda_B); the target's cycle and the identity terms keep"
        " lambda_cycle. 1: the paper's balance",
    )
    identity_every: int = Field(
        1,
        ge=1,
        le=64,
        description="lazy identity loss (as lazy R1): the identity terms only on every k-th step,"
        " weighted k times, so they cost about 1/k as much; 1: every step (the paper's)",
    )
    pool_size: int = Field(50, ge=0, description="history of generated images shown to D; 0 = none")


class CUTConfig(StrictModel):
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


class TrainConfig(StrictModel):
    """GAN training: one model per culture pair, objective, networks, schedule and speed knobs."""

    pairs: list[Pair] = Field(
        default_factory=lambda: [Pair("photo", t) for t in ("inkwash", "ukiyoe", "impressionist")],
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
    precision: Literal["auto", "fp32", "bf16", "bf16-full", "fp16"] = Field(
        "auto",
        description="autocast dtype; auto: bf16 on Ampere+ CUDA and on CPUs with native bf16; "
        "bf16-full: the networks themselves in bf16 (no autocast casts), fp32 master weights in "
        "Adam, the weight average and checkpoints",
    )
    channels_last: bool = Field(
        False,
        description="NHWC memory format for networks and images (faster CPU steps; on a GPU it did not pay at batch 4: "
        "docs/benchmarks.md)",
    )
    compile: bool = Field(False, description="torch.compile the networks (slow start, faster steps)")
    concurrent_runs: int = Field(
        0,
        ge=0,
        le=256,
        description="(pair, seed) trainings the train stage runs at once on a CPU, each in its own "
        "process with its share of the cores; 0: auto (all of them, up to two per core); 1: one "
        "after the other, each with every core",
    )
    checkpoint_every: int = Field(60, ge=1, description="steps between atomic checkpoints")
    log_every: int = Field(20, ge=1, description="steps between logged losses")
    sample_every: int = Field(120, ge=1, description="steps between sample grids")
    sample_count: int = Field(4, ge=1, le=32, description="source images in each sample grid")

    @field_validator("pairs")
    @classmethod
    def _pairs_unique(cls, pairs: list[Pair]) -> list[Pair]:
        return no_repeats("pairs", pairs)

    @field_validator("crop_size")
    @classmethod
    def _crop_size(cls, size: int | None) -> int | None:
        return None if size is None else generator_side("crop_size", size)

    @field_validator("seeds")
    @classmethod
    def _seeds_unique(cls, seeds: list[int]) -> list[int]:
        return no_repeats("seeds", seeds)

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
