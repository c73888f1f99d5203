"""The `data` and `validation` sections: where the style images come from, how they are
normalised, and the thresholds of the data validation gate."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from culturegan.config.base import StrictModel, generator_side, no_repeats
from culturegan.config.pair import SYNTHETIC_STYLES, StyleName


class SyntheticConfig(StrictModel):
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
        return no_repeats("styles", styles)


class DownloadConfig(StrictModel):
    """Retries, timeouts and size limits for HTTP(S) and S3 sources."""

    retries: int = Field(4, ge=0, le=20)
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles each retry")
    timeout_s: float = Field(60.0, gt=0)
    max_archive_bytes: int = Field(
        20_000_000_000, ge=1, description="refuse archives (or downloads) larger than this once uncompressed"
    )


class DataConfig(StrictModel):
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
    load_size: int | None = Field(
        None,
        ge=16,
        le=8192,
        description="null: each source becomes its centre square at image_size; a side: the source's shorter"
        " side is resized to this and the whole picture cut into non-overlapping image_size tiles, all of a"
        " source in one split (few large paintings give many images)",
    )
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
        return generator_side("image_size", size)

    @field_validator("source")
    @classmethod
    def _source_kind(cls, source: str) -> str:
        if not source.strip():
            raise ValueError("must not be empty: use 'synthetic', a folder, an http(s) URL or s3://bucket/prefix")
        if "://" in source and not source.startswith(("http://", "https://", "s3://", "file://")):
            raise ValueError(f"unsupported URI scheme in {source!r}: use http(s)://, s3:// or a local path")
        return source

    @model_validator(mode="after")
    def _load_size(self) -> DataConfig:
        if self.load_size is not None and self.load_size < self.image_size:
            raise ValueError(
                f"load_size ({self.load_size}) is smaller than image_size ({self.image_size}): a source"
                " resized to it holds no whole tile; use a load_size >= image_size, or null for centre squares"
            )
        return self

    @property
    def is_synthetic(self) -> bool:
        return self.source == "synthetic"


class ValidationConfig(StrictModel):
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
