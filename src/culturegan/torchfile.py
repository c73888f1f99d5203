"""Deterministic, atomic `torch.save`: the same object gives the same bytes, and a kill during the
write leaves the previous file intact.

Its own module, apart from the training checkpoints, so that a stage which only saves tensors (the
style classifier) does not import the generator's code, and DVC does not rerun it when that code
changes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from culturegan.fileio import atomic_write_bytes


def torch_bytes(obj: Any) -> bytes:
    """`torch.save` output that depends on `obj` only: saved to a path, the zip's records are
    named after the file (a random temp name here), so the same weights gave new bytes and DVC
    saw a new output on every run."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_torch_file(path: Path, obj: Any) -> None:
    """`torch.save(obj, path)`, atomic and deterministic (see torch_bytes)."""
    atomic_write_bytes(path, torch_bytes(obj))
