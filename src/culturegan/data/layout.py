"""Where each file of a source goes: the source's layout, and every file's style and split.

A source is a folder per style (`<style>/train`, `<style>/test`, or flat images split by content
hash) or the CycleGAN layout (`trainA/ trainB/ testA/ testB/`); files in neither are refused.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from culturegan.config import Params, StyleName
from culturegan.errors import ConfigError, IngestError

SPLIT_ORDER = {"train": 0, "test": 1}
CYCLEGAN_DIRS = {
    "trainA": ("A", "train"),
    "trainB": ("B", "train"),
    "testA": ("A", "test"),
    "testB": ("B", "test"),
}
# OS litter that archives and file managers add; counted, never treated as data.
SYSTEM_NAMES = {"__macosx", ".ds_store", "thumbs.db", "desktop.ini"}

_STYLE_NAME = TypeAdapter(StyleName)


def is_system_name(name: str) -> bool:
    """Hidden files/dirs (incl. macOS `._` resource forks) and OS litter such as __MACOSX."""
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


def _valid_style(name: str) -> bool:
    try:
        _STYLE_NAME.validate_python(name)
    except ValidationError:
        return False
    return True


def _suggest_style(name: str) -> str:
    s = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    s = re.sub(r"^[^a-z]+", "", s)[:32]
    return s or "style"


@dataclass
class Scan:
    """A source's files (sorted) and the number of hidden or system files skipped."""

    files: list[Path]
    ignored: int


def scan_source(top: Path, skip: set[Path]) -> Scan:
    """All visible regular-looking files under `top` (sorted), and a count of system files."""
    files: list[Path] = []
    ignored = 0
    seen: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        here = Path(dirpath)
        real = here.resolve()
        if real in seen or real in skip:  # symlink loops; our own outputs inside the source
            dirnames[:] = []
            continue
        seen.add(real)
        keep = []
        for name in sorted(dirnames):
            if is_system_name(name):
                ignored += sum(len(f) for _, _, f in os.walk(here / name))
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            if is_system_name(name):
                ignored += 1
            else:
                files.append(here / name)
    return Scan(files, ignored)


def _visible_entries(d: Path) -> list[os.DirEntry[str]]:
    with os.scandir(d) as it:
        return sorted((e for e in it if not is_system_name(e.name)), key=lambda e: e.name)


def _descend(top: Path) -> Path:
    """Skip wrapper folders (ukiyoe2photo/ inside an archive) down to the layout root.

    A lone folder is a wrapper if it holds a CycleGAN layout (README files beside it allowed) or
    folders only, none named train/test: a single style folder (flat images, or train/ and
    test/ inside) is a layout root of its own.
    """
    while True:
        entries = _visible_entries(top)
        if len(entries) != 1 or not entries[0].is_dir():
            return top
        child = Path(entries[0].path)
        inner = _visible_entries(child)
        cyclegan = {e.name for e in inner if e.is_dir()} & {"trainA", "trainB"}
        folders_only = inner and all(e.is_dir() and e.name not in SPLIT_ORDER for e in inner)
        if not (cyclegan or folders_only):
            return top
        top = child


def _source_stem(source: str) -> str:
    tail = source.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"\.(zip|tar|tgz|tar\.gz|tar\.bz2|tar\.xz)$", "", tail, flags=re.IGNORECASE)


def _cyclegan_names(
    style_names: dict[str, str], candidates: Iterable[str], layout_root: Path
) -> dict[str, str]:
    if style_names:
        keys = set(style_names)
        if keys != {"A", "B"}:
            raise ConfigError(
                f"data.style_names has keys {sorted(keys)} but {layout_root} is a CycleGAN layout "
                "(trainA/trainB): it needs exactly the keys A and B",
                hint="e.g. style_names: {A: ukiyoe, B: photo}",
            )
        names = dict(style_names)
    else:
        names = {}
        for cand in candidates:
            m = re.fullmatch(r"([A-Za-z][A-Za-z0-9_]*)2([A-Za-z][A-Za-z0-9_]*)", cand)
            if m and _valid_style(m[1].lower()) and _valid_style(m[2].lower()):
                names = {"A": m[1].lower(), "B": m[2].lower()}
                break
        if not names:
            raise IngestError(
                f"cannot tell the style names of the CycleGAN domains A and B in {layout_root}: "
                "the folder is not named like 'ukiyoe2photo'",
                hint="set data.style_names in params.yaml, e.g. {A: ukiyoe, B: photo}",
            )
    if names["A"] == names["B"]:
        raise ConfigError(
            f"data.style_names maps A and B to the same style {names['A']!r}", hint="use two names"
        )
    return names


@dataclass
class Plan:
    """Which style and split each file of a source goes to."""

    layout: str
    tasks: list[tuple[Path, str, str]]  # (file, style, split or "auto")
    outside: list[Path]  # files in no style/split folder
    splits: set[tuple[str, str]]  # every (style, split) the source defines, even if empty


def plan_tasks(files: list[Path], top: Path, params: Params) -> Plan:
    cfg = params.data
    layout_root = _descend(top)
    entries = _visible_entries(layout_root)
    dirs = {e.name for e in entries if e.is_dir()}
    layout = cfg.layout
    if layout == "auto":
        layout = "cyclegan" if dirs & {"trainA", "trainB"} else "per_style"

    if layout == "cyclegan":
        if not {"trainA", "trainB"} <= dirs:
            raise IngestError(
                f"{layout_root} is not a CycleGAN layout: it needs trainA/ and trainB/ "
                f"(found {sorted(dirs) or 'no folders'})",
                hint="set data.layout: per_style for a folder per style, or check data.source",
            )
        names = _cyclegan_names(
            cfg.style_names, [layout_root.name, _source_stem(cfg.source)], layout_root
        )
        folders = {d: (names[dom], split) for d, (dom, split) in CYCLEGAN_DIRS.items() if d in dirs}
        splits = set(folders.values())
        tasks, outside = [], []
        for f in files:
            parts = f.relative_to(layout_root).parts
            target = folders.get(parts[0]) if len(parts) > 1 else None
            if target is None:
                outside.append(f)
            else:
                tasks.append((f, target[0], target[1]))
        return Plan(layout, tasks, outside, splits)

    mapping = dict(cfg.style_names)
    unknown_keys = sorted(set(mapping) - dirs)
    if unknown_keys:
        raise ConfigError(
            f"data.style_names renames folder(s) {unknown_keys} that are not in {layout_root} "
            f"(folders: {sorted(dirs) or 'none'})",
            hint="use the folder names of the source as keys of data.style_names",
        )
    style_of: dict[str, str] = {}
    bad = []
    for d in sorted(dirs):
        style = mapping.get(d, d)
        if not _valid_style(style):
            bad.append(d)
        style_of[d] = style
    if bad:
        example = ", ".join(f"{b!r}: {_suggest_style(b)}" for b in bad[:3])
        raise IngestError(
            f"folder name(s) {bad} in {layout_root} are not valid style names "
            "(lowercase letters, digits and _, starting with a letter, at most 32 characters)",
            hint=f"rename the folders or map them in data.style_names, e.g. {{{example}}}",
        )
    clash = [s for s, n in Counter(style_of.values()).items() if n > 1]
    if clash:
        raise ConfigError(
            f"data.style_names maps several folders of {layout_root} to the same style(s) {clash}",
            hint="give every folder its own style name",
        )
    split_dirs = {d: {s for s in SPLIT_ORDER if (layout_root / d / s).is_dir()} for d in dirs}
    splits = set()
    for d, present in split_dirs.items():
        splits |= {(style_of[d], s) for s in (present or SPLIT_ORDER)}
    tasks, outside = [], []
    for f in files:
        parts = f.relative_to(layout_root).parts
        if len(parts) < 2:
            outside.append(f)
            continue
        d = parts[0]
        if not split_dirs[d]:
            tasks.append((f, style_of[d], "auto"))
        elif len(parts) > 2 and parts[1] in split_dirs[d]:
            tasks.append((f, style_of[d], parts[1]))
        else:
            outside.append(f)
    return Plan(layout, tasks, outside, splits)


def split_by_hash(sha256: str, test_fraction: float) -> str:
    """The split of a file in a flat style folder: a fixed function of its content hash."""
    return "test" if int(sha256[:8], 16) / 2**32 < test_fraction else "train"
