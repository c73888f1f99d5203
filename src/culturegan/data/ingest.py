"""The ingest stage: a folder, archive or bucket of style images -> styles/*.png + manifest.

Every source file ends up in the manifest, in rejects.csv, or counted as an ignored system file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import shutil
import stat
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError
from pydantic import TypeAdapter, ValidationError

from culturegan.config import Params, StyleName
from culturegan.data.manifest import (
    ManifestRow,
    Reason,
    RejectRow,
    intensity_std,
    manifest_frame,
    phash,
    phash_ints,
    write_manifest,
    write_rejects,
)
from culturegan.errors import ConfigError, IngestError
from culturegan.fileio import atomic_path, atomic_write_bytes

log = logging.getLogger(__name__)

JOURNAL_NAME = "ingest-journal.jsonl"
FAILED_REJECTS_NAME = "rejects-of-failed-ingest.csv"  # in data.cache_dir: root stays untouched
# Bump when normalisation changes so journal entries from older code are not reused.
NORMALISE_VERSION = 1
SPLIT_ORDER = {"train": 0, "test": 1}
CYCLEGAN_DIRS = {
    "trainA": ("A", "train"),
    "trainB": ("B", "train"),
    "testA": ("A", "test"),
    "testB": ("B", "test"),
}
# OS litter that archives and file managers add; counted, never treated as data.
SYSTEM_NAMES = {"__macosx", ".ds_store", "thumbs.db", "desktop.ini"}
# Formats Pillow decodes by itself: no plugin here shells out (EPS would run Ghostscript).
WANTED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "PPM", "TGA", "AVIF")
PNG_COMPRESS_LEVEL = 1  # 64 px PNGs: ~1.7x faster to encode than the default 6, ~12% larger
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


# ---------------------------------------------------------------------------------------------
# Scanning and layout


@dataclass
class _Scan:
    files: list[Path]
    ignored: int


def _scan(top: Path, skip: set[Path]) -> _Scan:
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
    return _Scan(files, ignored)


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
class _Plan:
    layout: str
    tasks: list[tuple[Path, str, str]]  # (file, style, split or "auto")
    outside: list[Path]  # files in no style/split folder
    splits: set[tuple[str, str]]  # every (style, split) the source defines, even if empty


def _plan(files: list[Path], top: Path, params: Params) -> _Plan:
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
        return _Plan(layout, tasks, outside, splits)

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
    return _Plan(layout, tasks, outside, splits)


# ---------------------------------------------------------------------------------------------
# Per-file work (runs in worker processes)


@dataclass(frozen=True)
class _Opts:
    root: Path
    staging: Path  # new or changed PNGs wait here until the run succeeds (see _staging_dir)
    image_size: int
    min_source_size: int
    max_pixels: int
    test_fraction: float
    formats: tuple[str, ...]


_OPTS: _Opts | None = None


def _init_worker(opts: _Opts) -> None:
    global _OPTS
    _OPTS = opts
    Image.MAX_IMAGE_PIXELS = opts.max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail, not load grey


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _decode_error(err: BaseException, max_pixels: int) -> _Rejected:
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        # PIL's own text names its limit, which for the error is twice data.max_pixels.
        m = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{m[1]} pixels" if m else "the image"
        return _Rejected(Reason.TOO_LARGE, f"{size} is more than data.max_pixels={max_pixels}")
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, EOFError) or "truncated" in str(err).lower():
        return _Rejected(Reason.TRUNCATED, text)
    return _Rejected(Reason.CORRUPT, text)


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB whatever the source mode; transparent pixels become white, 16-bit is scaled down."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("L", "RGB") and "transparency" in img.info:
        img = img.convert("RGBA")
    elif img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "F" and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        elif arr.max(initial=0) > 255:
            arr = arr / 257.0  # 16-bit samples
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))  # 2-D uint8: L
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    return img.convert("RGB")


def _oriented(img: Image.Image) -> Image.Image:
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to lose the picture
        return img
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(img)
    return img


def decode_normalised(data: bytes, opts: _Opts) -> Image.Image:
    """Decode `data` and return the square RGB image of `opts.image_size`, or raise _Rejected."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=opts.formats)
        except UnidentifiedImageError:
            raise _Rejected(Reason.NOT_IMAGE, "not a recognised image format") from None
        except Exception as err:  # noqa: BLE001 - any header failure is this file's problem only
            raise _decode_error(err, opts.max_pixels) from None
        w, h = img.size
        if w * h > opts.max_pixels:
            raise _Rejected(
                Reason.TOO_LARGE, f"{w}x{h} is more than data.max_pixels={opts.max_pixels}"
            )
        if min(w, h) < opts.min_source_size:
            raise _Rejected(
                Reason.TOO_SMALL,
                f"{w}x{h}: shorter side below data.min_source_size={opts.min_source_size}",
            )
        if img.format in ("JPEG", "MPO"):
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale; it keeps the shorter side >= image_size.
            img.draft("RGB", (opts.image_size, opts.image_size))
        try:
            img.load()
        except Exception as err:  # noqa: BLE001
            raise _decode_error(err, opts.max_pixels) from None
    try:
        img = _to_rgb(_oriented(img))
    except Exception as err:  # noqa: BLE001
        raise _decode_error(err, opts.max_pixels) from None
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    size = opts.image_size
    if (w, h) != (size, size):
        img = img.resize(
            (size, size),
            Image.Resampling.LANCZOS,
            box=(left, top, left + side, top + side),
            reducing_gap=3.0,
        )
    return img


def _output_rel(style: str, split: str, sha: str) -> str:
    return f"styles/{style}/{split}/{sha[:16]}.png"


def _process(task: tuple[str, str, str, str, dict[str, dict[str, Any]] | None]) -> dict[str, Any]:
    """One source file -> a result dict (accepted with manifest fields, or rejected with a reason).

    `known` holds this file's earlier results by sha256 (from the journal): a hit skips decoding.
    """
    path, origin, style, split_hint, known = task
    opts = _OPTS
    assert opts is not None, "_init_worker was not called"
    res: dict[str, Any] = {"origin": origin, "style": style, "sha256": ""}
    res["split"] = "" if split_hint == "auto" else split_hint

    def reject(reason: str, detail: str) -> dict[str, Any]:
        return {**res, "status": "reject", "reason": reason, "detail": detail}

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read forever
            return reject(Reason.NOT_IMAGE, "not a regular file")
        # No encoding of max_pixels pixels is this large: refuse before reading it into memory.
        if st.st_size > opts.max_pixels * 8 + (1 << 20):
            return reject(
                Reason.TOO_LARGE,
                f"{st.st_size} bytes: more than data.max_pixels={opts.max_pixels} allows",
            )
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as err:
        return reject(Reason.CORRUPT, f"unreadable: {err}")
    sha = res["sha256"] = hashlib.sha256(data).hexdigest()
    if split_hint == "auto":
        res["split"] = "test" if int(sha[:8], 16) / 2**32 < opts.test_fraction else "train"
    hit = known.get(sha) if known else None
    if hit is not None:
        missing = hit["status"] == "ok" and not _png_exists(opts, hit["path"])
        return {**res, **hit, "reused": True, "png_missing": missing}
    if not data:
        return reject(Reason.EMPTY, "zero bytes")
    try:
        img = decode_normalised(data, opts)
    except _Rejected as rej:
        return reject(rej.reason, rej.detail)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    png = buf.getvalue()
    rel = _output_rel(style, res["split"], sha)
    target = opts.root / rel
    # An identical file is left alone so reruns do not touch mtimes (DVC, make-style tools);
    # anything else is staged and only moved into styles/ once the whole run has succeeded.
    if not (target.is_file() and target.read_bytes() == png):
        atomic_write_bytes(opts.staging / rel, png)
    return {
        **res,
        "status": "ok",
        "path": rel,
        "width": img.width,
        "height": img.height,
        "mode": img.mode,
        "phash": phash(img),
        "intensity_std": intensity_std(img),
    }


def _png_exists(opts: _Opts, rel: str) -> bool:
    return (opts.root / rel).is_file() or (opts.staging / rel).is_file()


def _staging_dir(cache_dir: Path, root: Path, image_size: int) -> Path:
    """Where a run's new PNGs wait for the swap into `root`: kept after a crash so that the next
    run reuses them; keyed by what a PNG's bytes depend on beyond its path (which holds the
    source's sha256, style and split), so a staged file is never taken for another size's."""
    key = json.dumps([str(root.resolve()), image_size, NORMALISE_VERSION])
    return cache_dir / "ingest-staging" / hashlib.sha1(key.encode()).hexdigest()[:16]


def _swap_in(staging: Path, root: Path, rels: Iterable[str]) -> None:
    """Move the staged PNGs of `rels` (those not already identical in `root`) into `root`."""
    for rel in rels:
        staged = staging / rel
        if staged.is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(staged, root / rel)  # a rename on one file system


def _pool_size(workers: int) -> int:
    if workers:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _run(tasks: list[tuple[Any, ...]], opts: _Opts, workers: int) -> Iterator[dict[str, Any]]:
    """Results of `_process` over `tasks`, in completion order (in-process for one worker)."""
    if not tasks:
        return
    if workers <= 1 or len(tasks) < 4:
        saved = (_OPTS, Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
        _init_worker(opts)
        try:
            for task in tasks:
                yield _process(task)
        finally:
            _set_globals(*saved)
        return
    workers = min(workers, len(tasks))
    # Big enough chunks to amortise IPC, small enough that both cores stay busy to the end.
    chunksize = max(1, min(32, len(tasks) // (workers * 8)))
    # fork: workers start in milliseconds with everything imported; spawn/forkserver would
    # re-import numpy/PIL/pandas in every worker (about a second each on this machine).
    fork = "fork" in multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if fork else None)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(opts,)) as pool:
        yield from pool.imap_unordered(_process, tasks, chunksize=chunksize)


def _set_globals(opts: _Opts | None, max_pixels: int | None, load_truncated: bool) -> None:
    global _OPTS
    _OPTS = opts
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = load_truncated


# ---------------------------------------------------------------------------------------------
# Journal


def _task_key(style: str, split_hint: str, opts: _Opts) -> str:
    """What a cached result depends on besides the bytes; a change means decode again."""
    parts = [
        NORMALISE_VERSION,
        style,
        split_hint,
        opts.image_size,
        opts.min_source_size,
        opts.max_pixels,
    ]
    if split_hint == "auto":
        parts.append(opts.test_fraction)
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]


_RESULT_FIELDS = (
    "status",
    "split",
    "reason",
    "detail",
    "path",
    "width",
    "height",
    "mode",
    "phash",
    "intensity_std",
)


def _read_journal(path: Path) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """(origin, task key) -> sha256 -> result; a line cut short by a kill is skipped."""
    known: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    if not path.is_file():
        return known
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
                known[(entry["origin"], entry["key"])][entry["sha256"]] = entry["result"]
            except (ValueError, KeyError, TypeError):
                continue
    return known


def _journal_line(key: str, res: dict[str, Any]) -> str:
    result = {k: res[k] for k in _RESULT_FIELDS if k in res}
    return json.dumps(
        {"origin": res["origin"], "sha256": res["sha256"], "key": key, "result": result},
        sort_keys=True,
    )


def _compact_journal(path: Path) -> None:
    """Keep one line per (origin, key, sha256) so reruns do not grow the journal without bound."""
    lines = path.read_text(encoding="utf-8").splitlines()
    latest: dict[tuple[str, str, str], str] = {}
    for line in lines:
        try:
            e = json.loads(line)
            latest[(e["origin"], e["key"], e["sha256"])] = line
        except (ValueError, KeyError, TypeError):
            continue
    if len(latest) != len(lines):
        with atomic_path(path) as tmp:
            tmp.write_text("".join(v + "\n" for v in latest.values()), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Dedupe


def _sort_key(r: dict[str, Any]) -> tuple[int, str]:
    return SPLIT_ORDER[r["split"]], r["origin"]


def dedupe(accepted: list[dict[str, Any]], max_bits: int) -> dict[int, tuple[str, str]]:
    """Indices into `accepted` to reject -> (reason, detail).

    An image under two styles (the same sha256, or a pHash distance <= max_bits) has an
    ambiguous label: every copy of it is refused, in every style. Then exact copies, then near
    copies within a style: the first by (train before test, origin) is kept; a copy in the other
    split of the same style is a train/test leak.
    """
    rejected = _ambiguous(accepted, max_bits)
    by_sha: dict[str, list[int]] = defaultdict(list)
    for i in sorted(range(len(accepted)), key=lambda i: _sort_key(accepted[i])):
        if i not in rejected:
            by_sha[accepted[i]["sha256"]].append(i)
    for group in by_sha.values():
        kept = accepted[group[0]]
        for i in group[1:]:
            r = accepted[i]
            leak = r["style"] == kept["style"] and r["split"] != kept["split"]
            reason = Reason.LEAK if leak else Reason.DUPLICATE
            rejected[i] = (
                reason,
                f"same bytes as {kept['origin']} ({kept['style']}/{kept['split']})",
            )

    by_style: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(accepted):
        if i not in rejected:
            by_style[r["style"]].append(i)
    for idx in by_style.values():
        idx.sort(key=lambda i: _sort_key(accepted[i]))
        hashes = phash_ints(accepted[i]["phash"] for i in idx)
        neighbours = _near_pairs(hashes, max_bits)
        gone = np.zeros(len(idx), dtype=bool)
        for pos in sorted(neighbours):
            cands = [(j, d) for j, d in neighbours[pos] if not gone[j]]
            if not cands:
                continue
            r = accepted[idx[pos]]
            cross = [(j, d) for j, d in cands if accepted[idx[j]]["split"] != r["split"]]
            j, d = min(cross or cands, key=lambda jd: (jd[1], jd[0]))
            kept = accepted[idx[j]]
            gone[pos] = True
            reason = Reason.LEAK if cross else Reason.NEAR_DUPLICATE
            rejected[idx[pos]] = (
                reason,
                f"pHash distance {d} to {kept['origin']} ({kept['style']}/{kept['split']})",
            )
    return rejected


def _ambiguous(accepted: list[dict[str, Any]], max_bits: int) -> dict[int, tuple[str, str]]:
    """Every image with a copy or near copy in another style -> (AMBIGUOUS, the closest one)."""
    order = sorted(range(len(accepted)), key=lambda i: _sort_key(accepted[i]))
    closest: dict[int, tuple[int, int]] = {}  # i -> (distance, position in `order` of the match)

    def note(a: int, b: int, d: int) -> None:
        i, j = order[a], order[b]
        if accepted[i]["style"] != accepted[j]["style"]:
            closest[i] = min(closest.get(i, (d, b)), (d, b))
            closest[j] = min(closest.get(j, (d, a)), (d, a))

    hashes = phash_ints(accepted[i]["phash"] for i in order)
    for a, pairs in _near_pairs(hashes, max_bits).items():
        for b, d in pairs:
            note(a, b, d)
    # The same bytes always decode to the same pHash, but say so when it is the same file.
    out = {}
    for i, (d, b) in closest.items():
        other = accepted[order[b]]
        where = f"{other['origin']} ({other['style']}/{other['split']})"
        same = other["sha256"] == accepted[i]["sha256"]
        detail = f"same bytes as {where}" if same else f"pHash distance {d} to {where}"
        out[i] = (Reason.AMBIGUOUS, f"{detail} in another style")
    return out


def _near_pairs(hashes: np.ndarray, max_bits: int) -> dict[int, list[tuple[int, int]]]:
    """For each position i: the earlier positions j < i within `max_bits`, with the distance."""
    n = len(hashes)
    out: dict[int, list[tuple[int, int]]] = defaultdict(list)
    if n < 2:
        return out
    rows = max(1, (1 << 22) // n)  # a (rows, n) block of XORs stays within 32 MB
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        # Only the columns before each row: the lower triangle, half the work of all pairs.
        dist = np.bitwise_count(hashes[start:stop, None] ^ hashes[None, :stop])
        close = dist <= max_bits
        close[:, start:stop] &= np.tri(stop - start, k=-1, dtype=bool)
        for bi, j in zip(*np.nonzero(close), strict=True):
            out[start + int(bi)].append((int(j), int(dist[bi, j])))
    return out


# ---------------------------------------------------------------------------------------------
# The stage


def _check_paths(source_root: Path, root: Path) -> None:
    src, out = source_root.resolve(), root.resolve()
    styles = out / "styles"
    if src == out or src == styles or styles in src.parents:
        raise IngestError(
            f"data.source {source_root} is the data root {root} or inside its styles/ folder: "
            "ingest would read its own outputs and clean up the source",
            hint="keep the raw images outside data.root/styles, e.g. in raw/ or data/raw/",
        )


def ingest(params: Params, root: Path) -> dict[str, Any]:
    """Fetch `params.data.source`, normalise every image into `root/styles/<style>/<split>/`.

    Writes `root/manifest.parquet` and `root/rejects.csv`; returns counts and throughput.
    Resumable: per-file results are journalled in `data.cache_dir`, so a rerun (or a run after a
    kill) decodes only files it has not seen, and leaves unchanged outputs untouched.

    All or nothing: new PNGs are staged in `data.cache_dir` and the outputs in `root` are replaced
    only once the run has succeeded; a failed run (nothing accepted) leaves them as they were and
    writes its rejects to `data.cache_dir` instead.
    """
    from culturegan.data.sources import fetch_source  # network clients load only when ingesting

    t0 = time.perf_counter()
    cfg = params.data
    if cfg.is_synthetic:
        raise ConfigError(
            "data.source is 'synthetic': there is nothing to ingest",
            hint="run `culturegan prepare`, or set data.source to a folder, "
            "an http(s) archive URL or s3://bucket/prefix",
        )
    root = Path(root)
    cache_dir = Path(cfg.cache_dir)
    fetched = fetch_source(cfg.source, cache_dir, cfg.download, cfg.max_pixels)
    _check_paths(fetched.root, root)
    scan = _scan(fetched.root, skip={(root / "styles").resolve(), cache_dir.resolve()})
    plan = _plan(scan.files, fetched.root, params) if scan.files else _Plan("none", [], [], set())
    opts = _Opts(
        root=root,
        staging=_staging_dir(cache_dir, root, cfg.image_size),
        image_size=cfg.image_size,
        min_source_size=cfg.min_source_size,
        max_pixels=cfg.max_pixels,
        test_fraction=cfg.test_fraction,
        formats=tuple(f for f in WANTED_FORMATS if f in _registered_formats()),
    )
    tasks = [(str(path), fetched.origin(path), style, split) for path, style, split in plan.tasks]
    results = _process_all(tasks, opts, _pool_size(cfg.workers), cache_dir / JOURNAL_NAME)
    accepted = [r for r in results if r["status"] == "ok"]
    dropped = dedupe(accepted, cfg.near_duplicate_bits)
    _write_missing_pngs(
        accepted, dropped, tasks, opts, _pool_size(cfg.workers), cache_dir / JOURNAL_NAME
    )

    manifest_rows = [_manifest_row(r) for i, r in enumerate(accepted) if i not in dropped]
    rejects = _reject_rows(fetched, plan, results, accepted, dropped)
    failed_rejects = cache_dir / FAILED_REJECTS_NAME
    if not manifest_rows:
        # One rule for every source, decided before anything in `root` changes.
        write_rejects(rejects, cache_dir, failed_rejects.name)
        shutil.rmtree(opts.staging, ignore_errors=True)
        raise _nothing_accepted(cfg.source, scan, rejects, root, failed_rejects)
    _swap_in(opts.staging, root, (r.path for r in manifest_rows))
    write_manifest(manifest_frame(manifest_rows), root)
    write_rejects(rejects, root)
    removed = _remove_stale(root / "styles", {r.path for r in manifest_rows})
    shutil.rmtree(opts.staging, ignore_errors=True)
    failed_rejects.unlink(missing_ok=True)

    by_style: dict[str, dict[str, int]] = defaultdict(dict)
    for style, split in sorted(plan.splits, key=lambda ss: (ss[0], SPLIT_ORDER[ss[1]])):
        by_style[style][split] = 0
    for r in manifest_rows:
        by_style[r.style][r.split] = by_style[r.style].get(r.split, 0) + 1
    seconds = time.perf_counter() - t0
    summary = {
        "accepted": len(manifest_rows),
        "rejected": len(rejects),
        "ignored": scan.ignored,
        "layout": plan.layout,
        "by_style": dict(sorted(by_style.items())),
        "reasons": dict(sorted(Counter(r.reason for r in rejects).items())),
        "reused": sum(1 for r in results if r.get("reused")),
        "stale_removed": removed,
        "seconds": round(seconds, 3),
        "images_per_s": round(len(tasks) / seconds, 1) if seconds > 0 else 0.0,
    }
    log.info(
        "ingest: %d accepted, %d rejected, %d ignored in %.1f s",
        summary["accepted"],
        summary["rejected"],
        summary["ignored"],
        seconds,
    )
    return summary


def _nothing_accepted(
    source: str, scan: _Scan, rejects: list[RejectRow], root: Path, failed_rejects: Path
) -> IngestError:
    from culturegan.data.source_base import redact_url

    ignored = f", {scan.ignored} hidden/system file(s) ignored" if scan.ignored else ""
    hint = f"see {failed_rejects} for every file and why it was refused"
    if not scan.files:
        hint += "; data.source should hold a folder per style, or trainA/ trainB/ testA/ testB/"
    return IngestError(
        f"no image of {redact_url(source)} was accepted ({len(scan.files)} file(s) found, "
        f"{len(rejects)} refused{ignored}); {root} keeps its previous outputs",
        hint=hint,
    )


def _process_all(
    tasks: list[tuple[str, str, str, str]], opts: _Opts, workers: int, journal_path: Path
) -> list[dict[str, Any]]:
    """Per-file results sorted by origin; each new one is journalled the moment it is known."""
    from tqdm import tqdm

    known = _read_journal(journal_path)
    keys = {t[1]: _task_key(t[2], t[3], opts) for t in tasks}
    jobs = [(*t, known.get((t[1], keys[t[1]]))) for t in tasks]
    results = []
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    with open(journal_path, "a", encoding="utf-8") as journal:
        progress = tqdm(
            _run(jobs, opts, workers), total=len(jobs), desc="ingest", unit="img", disable=None
        )
        for res in progress:
            if res["sha256"] and not res.get("reused"):
                journal.write(_journal_line(keys[res["origin"]], res) + "\n")
                journal.flush()
            results.append(res)
    _compact_journal(journal_path)
    return sorted(results, key=lambda r: r["origin"])


def _write_missing_pngs(
    accepted: list[dict[str, Any]],
    dropped: dict[int, tuple[str, str]],
    tasks: list[tuple[str, str, str, str]],
    opts: _Opts,
    workers: int,
    journal_path: Path,
) -> None:
    """Decode the journal hits whose PNG is gone (a new data.root, or a copy that dedupe dropped
    last time and keeps now): only the ones that survived dedupe, so copies are never decoded."""
    redo = [i for i, r in enumerate(accepted) if r.get("png_missing") and i not in dropped]
    if not redo:
        return
    task_of = {t[1]: t for t in tasks}
    fresh = {
        r["origin"]: r
        for r in _run([(*task_of[accepted[i]["origin"]], None) for i in redo], opts, workers)
    }
    for i in redo:
        got = fresh[accepted[i]["origin"]]
        if got["status"] != "ok" or got["path"] != accepted[i]["path"]:
            raise IngestError(
                f"{accepted[i]['origin']} decoded differently than its record in {journal_path}",
                hint=f"delete {journal_path} and run ingest again",
            )


def _manifest_row(r: dict[str, Any]) -> ManifestRow:
    return ManifestRow(
        path=r["path"],
        style=r["style"],
        split=r["split"],
        scene="",
        sha256=r["sha256"],
        source=r["origin"],
        width=r["width"],
        height=r["height"],
        mode=r["mode"],
        phash=r["phash"],
        intensity_std=float(r["intensity_std"]),
    )


def _reject_rows(
    fetched: Any,
    plan: _Plan,
    results: list[dict[str, Any]],
    accepted: list[dict[str, Any]],
    dropped: dict[int, tuple[str, str]],
) -> list[RejectRow]:
    rows = list(fetched.rejects)
    rows += [
        RejectRow(r["origin"], r["reason"], r["detail"], r["style"], r["split"])
        for r in results
        if r["status"] == "reject"
    ]
    rows += [
        RejectRow(accepted[i]["origin"], reason, detail, accepted[i]["style"], accepted[i]["split"])
        for i, (reason, detail) in dropped.items()
    ]
    outside = f"outside the style/split folders of the {plan.layout} layout"
    rows += [RejectRow(fetched.origin(p), Reason.UNKNOWN_STYLE, outside) for p in plan.outside]
    return sorted(rows, key=lambda r: (r.source, r.reason, r.detail, r.style, r.split))


def _registered_formats() -> set[str]:
    Image.init()
    return set(Image.OPEN)


def _remove_stale(styles: Path, keep: set[str]) -> int:
    """Delete PNGs (and temp files left by a kill) under styles/ that the manifest does not list."""
    if not styles.is_dir():
        return 0
    removed = 0
    base = styles.parent
    for dirpath, _, filenames in os.walk(styles, topdown=False):
        here = Path(dirpath)
        for name in filenames:
            p = here / name
            stale_png = name.endswith(".png") and p.relative_to(base).as_posix() not in keep
            if stale_png or (name.startswith(".") and name.endswith(".tmp")):
                p.unlink()
                removed += 1
        if here != styles and not any(here.iterdir()):
            here.rmdir()
    return removed
