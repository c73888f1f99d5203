"""Style names and the culture pair: the one type for '<source>-<target>', parsed once where it comes in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

from culturegan.errors import ConfigError

STYLE_PATTERN = r"[a-z][a-z0-9_]{0,31}"
StyleName = Annotated[str, Field(pattern=f"^{STYLE_PATTERN}$")]
SYNTHETIC_STYLES = ("photo", "inkwash", "ukiyoe", "impressionist", "goldground", "dotpainting")


def _pair_error(text: str) -> ValueError:
    return ValueError(f"{text!r} is not '<source>-<target>' with two style names, e.g. 'photo-inkwash'")


@dataclass(frozen=True, slots=True)
class Pair:
    """A directed culture pair: a model turns images of style `source` into style `target`.

    Text enters as '<source>-<target>' (a hyphen is never in a style name) and is parsed once where
    it comes in: `Pair.parse` for a stage argument (CLI --pair, a KFP step's pair), pydantic for
    params.yaml's train.pairs. `str(pair)` gives the text back, as it appears in paths
    (runs/gan/<pair>/seed<k>), MLflow tags and run names, metrics.json and KFP parameters.
    """

    source: str
    target: str

    def __post_init__(self) -> None:
        styles = (self.source, self.target)
        if not all(isinstance(s, str) and re.fullmatch(STYLE_PATTERN, s) for s in styles):
            raise _pair_error(f"{self.source}-{self.target}")
        if self.source == self.target:
            raise ValueError(f"{str(self)!r} transfers a style to itself")

    def __str__(self) -> str:
        return f"{self.source}-{self.target}"

    def reversed(self) -> Pair:
        """The opposite direction, target -> source (CycleGAN's second generator)."""
        return Pair(self.target, self.source)

    @classmethod
    def parse(cls, text: str) -> Pair:
        """'<source>-<target>' as given to a stage (CLI --pair, KFP): a bad pair is a ConfigError."""
        try:
            return cls._from_text(text)
        except ValueError as err:
            raise ConfigError(f"bad culture pair: {err}", hint="use a pair of train.pairs in params.yaml") from None

    @classmethod
    def _from_text(cls, text: str) -> Pair:
        parts = text.split("-")
        if len(parts) != 2:
            raise _pair_error(text)
        return cls(*parts)

    @classmethod
    def _validate(cls, value: Any) -> Pair:
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):  # a ValueError: pydantic reports it with the key, not a TypeError
            raise ValueError("a culture pair is the text '<source>-<target>', e.g. 'photo-inkwash'")  # noqa: TRY004
        return cls._from_text(value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source_type: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        # In params: validated from its text, dumped as its text (params.yaml's own form).
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
            json_schema_input_schema=core_schema.str_schema(),
        )
