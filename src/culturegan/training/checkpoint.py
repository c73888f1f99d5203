"""Crash-safe checkpoints: atomic writes, weights_only loads, and a clear error for any bad file.

Everything is stored as tensors and plain containers (RNG states included), so `torch.load(...,
weights_only=True)` reads it back without unpickling arbitrary objects.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from culturegan.config import GeneratorConfig
from culturegan.errors import CheckpointError
from culturegan.models.networks import ResnetGenerator
from culturegan.torchfile import save_torch_file

FORMAT = 1
_RESTART_HINT = "delete it, or pass --no-resume (resume=False) to start this pair from scratch"


def rng_state(extra: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Global torch/CUDA/numpy/python RNG states plus `extra` named torch.Generator states."""
    mt_name, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": mt_name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": version,
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": gauss,
        },
        **extra,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["name"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a kill during the write leaves the previous checkpoint intact."""
    save_torch_file(path, {"format": FORMAT, **state})


def _first_line(err: BaseException, limit: int = 200) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:limit]}" if lines else type(err).__name__


def _describe(value: Any) -> str:
    return (
        repr(value)
        if not isinstance(value, dict)
        else "{" + ", ".join(f"{k}: {v!r}" for k, v in value.items()) + "}"
    )


def load_checkpoint(
    path: Path, expected_run: dict[str, Any], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Read a training checkpoint and check it belongs to this run (pair, objective, networks...).

    Any unreadable, truncated or foreign file raises CheckpointError naming the file; a checkpoint
    is never silently ignored.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for damaged files
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({_first_line(err)})",
            hint=_RESTART_HINT,
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a culturegan training checkpoint (format {FORMAT})", hint=_RESTART_HINT
        )
    missing = [k for k in ("run", "step", *required) if k not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {missing}: it is incomplete", hint=_RESTART_HINT
        )
    found = state["run"]
    diffs = [
        f"{key}: {_describe(found.get(key))} in the file, {_describe(value)} now"
        for key, value in expected_run.items()
        if found.get(key) != value
    ]
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} was written for a different run ({'; '.join(diffs)})",
            hint=_RESTART_HINT,
        )
    return state


def load_state(module: Any, state: Any, path: Path, what: str) -> None:
    """`module.load_state_dict(state)`, with shape or key mismatches as a CheckpointError."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint {path} does not fit {what} ({_first_line(err, 300)})", hint=_RESTART_HINT
        ) from None


def save_generator(path: Path, generator: nn.Module, meta: dict[str, Any]) -> None:
    """A self-describing generator file: weights plus the config that rebuilds the network."""
    cfg = generator.cfg
    assert isinstance(cfg, GeneratorConfig)
    state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    save_torch_file(
        path,
        {
            "format": FORMAT,
            "kind": "ResnetGenerator",
            "config": cfg.model_dump(),
            "state_dict": state,
            **meta,
        },
    )


def read_generator_file(path: Path) -> dict[str, Any]:
    """The raw generator file (config, weights, pair, image size...)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(
            f"generator file {path} not found", hint="run the train stage first"
        ) from None
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(
            f"generator file {path} cannot be read ({type(err).__name__})",
            hint="re-run the train stage",
        ) from None
    if (
        not isinstance(data, dict)
        or data.get("kind") != "ResnetGenerator"
        or "state_dict" not in data
    ):
        raise CheckpointError(
            f"{path} is not a culturegan generator file", hint="re-run the train stage"
        )
    return data


def load_generator(path: Path, device: torch.device | str = "cpu") -> ResnetGenerator:
    """Rebuild a trained generator (eval mode) from `generator.pt`, for evaluation and serving."""
    path = Path(path)
    data = read_generator_file(path)
    try:
        net = ResnetGenerator(GeneratorConfig.model_validate(data["config"]))
    except ValueError as err:
        raise CheckpointError(
            f"{path} holds a bad generator config: {err}", hint="re-run the train stage"
        ) from None
    load_state(net, data["state_dict"], path, "the generator it describes")
    return net.to(device).eval()
