"""params.yaml schema: pydantic models, the one place where parameters and their defaults live.

Every stage reads its own section of the same `Params` object. Unknown or misspelt keys, wrong
types and bad values are rejected before any work starts, with the key path and the closest
valid key in the message.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from culturegan.errors import ConfigError

StyleName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
SYNTHETIC_STYLES = ("photo", "inkwash", "ukiyoe", "impressionist")


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
    """Retries for HTTP(S) and S3 sources."""

    retries: int = Field(4, ge=0, le=20)
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles each retry")
    timeout_s: float = Field(60.0, gt=0)


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
    workers: int = Field(0, ge=0, description="ingest processes; 0 means one per CPU core")
    download: DownloadConfig = Field(default_factory=DownloadConfig)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)

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


class Params(_Strict):
    """The whole params.yaml."""

    seed: int = Field(0, ge=0)
    data: DataConfig = Field(default_factory=DataConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)


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
