"""A fingerprint of part of this package's source, for caches that must not outlive their code.

The trainer's checkpoints and ingest's per-file journal both key their entries on it: an entry
written by other code is not reused, however the code changed (no version number to remember
to bump).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def source_hash(package: Path, rels: Iterable[str]) -> str:
    """sha256 (16 hex digits) of the Python source under `rels` (folders, searched recursively,
    or single files; relative to `package`): the path and bytes of every .py file, in sorted order."""
    h = hashlib.sha256()
    for rel in rels:
        path = package / rel
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.cache
def installed_source_hash(rels: tuple[str, ...]) -> str:
    """`source_hash` of this installed package, once per process and `rels`."""
    return source_hash(PACKAGE, rels)
