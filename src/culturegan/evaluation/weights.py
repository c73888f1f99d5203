"""Local torchvision weights: the one loader behind Inception-v3 (metrics) and VGG-19 (Gatys).

Weights are never downloaded: params name a local state_dict file, and a missing or wrong file is a
ConfigError naming the params key.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from culturegan.errors import ConfigError

if TYPE_CHECKING:  # torch is imported lazily, by the caller's network and the loader
    import torch

Net = TypeVar("Net", bound="torch.nn.Module")


def require_local_weights(weights: Path | str, key: str, hint: str) -> Path:
    """The local weights file named by params `key`; weights are never downloaded."""
    weights = Path(weights)
    if not weights.is_file():
        raise ConfigError(f"{key} = {str(weights)!r} does not exist", hint=hint)
    return weights


def load_local_weights(
    build: Callable[[], Net],
    weights: Path | str,
    key: str,
    model: str,
    missing_hint: str,
    wrong_hint: str,
    select: Callable[[dict[str, Any]], dict[str, Any]] = dict,
) -> Net:
    """`build()` with the torchvision `model` state_dict in the local file named by params `key`.

    A checkpoint that wraps the tensors in {"state_dict": ...} is unwrapped; `select` picks and
    renames the tensors the built network has. Any failure to load means: not the expected file.
    """
    import torch

    weights = require_local_weights(weights, key, missing_hint)
    net = build()
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        net.load_state_dict(select(state))
    except Exception as err:  # noqa: BLE001 (any failure to load means: not the expected file)
        raise ConfigError(
            f"{key} = {str(weights)!r} is not a torchvision {model} state_dict: {err}",
            hint=wrong_hint,
        ) from None
    return net
