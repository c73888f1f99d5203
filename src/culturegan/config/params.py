"""The whole params.yaml: `Params`, the rules across its sections, and loading, validating and
dumping it, with errors that name the key and the closest valid one."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from culturegan.config.base import StrictModel
from culturegan.config.data import DataConfig, ValidationConfig
from culturegan.config.evaluation import AnalysisConfig, EvaluationConfig
from culturegan.config.operations import PipelineConfig, RegistryConfig, TrackingConfig
from culturegan.config.pair import Pair
from culturegan.config.train import TrainConfig, size_problem
from culturegan.errors import ConfigError


class Params(StrictModel):
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


def unknown_pair_styles(pairs: list[Pair], styles: list[str]) -> tuple[list[Pair], list[str]]:
    """The pairs naming a style outside `styles`, and those styles (in order of appearance)."""
    bad: list[Pair] = []
    missing: list[str] = []
    for pair in pairs:
        absent = [s for s in (pair.source, pair.target) if s not in styles]
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
                f"train.pairs {[str(p) for p in bad]} name style(s) {missing} that data.synthetic.styles"
                f" {styles} does not render: add the style(s) there or use pairs of those styles"
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
