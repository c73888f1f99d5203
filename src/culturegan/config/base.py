"""What every params section shares: the strict, frozen base model, the generator's size rule and
the rule that a list of names or seeds does not repeat."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T", bound=Hashable)


def no_repeats(name: str, values: list[T]) -> list[T]:
    """`values` if no item appears twice; else a ValueError naming the list."""
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat")
    return values

# ResnetGenerator halves an image twice and doubles it back: other sides come out another size.
GENERATOR_STRIDE = 4


def generator_side(name: str, side: int) -> int:
    """`side` if the generator gives back images of that side; else a ValueError naming `name`."""
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


class StrictModel(BaseModel):
    """Base of every section: unknown keys are errors and a loaded section never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
