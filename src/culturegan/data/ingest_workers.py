"""The ingest stage's per-file work: each source file's result, in a pool of worker processes.

A result is a dict: accepted (with its manifest fields; the PNG written to the staging folder
unless an identical one is already in place) or rejected (with a reason). Each new result is
journalled as soon as it is known, so a rerun decodes only files it has not seen.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile

from culturegan.codehash import installed_source_hash
from culturegan.cpus import usable_cpus
from culturegan.data.journal import compact_journal, journal_line, read_journal
from culturegan.data.layout import split_by_hash
from culturegan.data.manifest import Reason, intensity_std, phash
from culturegan.data.normalise import (
    Normalisation,
    Rejected,
    decode_normalised,
    decode_tiles,
    encode_png,
)
from culturegan.errors import IngestError
from culturegan.fileio import atomic_write_bytes

# The package's source that shapes a file's result (its PNG's bytes, manifest fields, split or
# reason) besides the bytes and WorkerOpts: a journal entry or a staged PNG of other code is not
# reused (tests/test_ingest.py checks that each of these is imported on the per-file path).
INGEST_CODE = ("data/normalise.py", "data/ingest_workers.py", "data/manifest.py", "data/layout.py")


def ingest_code_hash() -> str:
    """The hash of this installed package's INGEST_CODE (codehash.source_hash)."""
    return installed_source_hash(INGEST_CODE)


@dataclass(frozen=True)
class WorkerOpts(Normalisation):
    """Everything a worker needs: the normalisation, where PNGs go, and the auto split."""

    root: Path
    staging: Path  # new or changed PNGs wait here until the run succeeds (see ingest.staging_dir)
    test_fraction: float
    min_tile_std: float  # with load_size: tiles with a flatter luminance are dropped (blank)


_OPTS: WorkerOpts | None = None


def _init_worker(opts: WorkerOpts) -> None:
    global _OPTS
    _OPTS = opts
    Image.MAX_IMAGE_PIXELS = opts.max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail, not load grey


def _output_rel(style: str, split: str, sha: str, tile: str = "") -> str:
    return f"styles/{style}/{split}/{sha[:16]}{'-' + tile if tile else ''}.png"


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
        return _rejected(res, reason, detail)

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
        res["split"] = split_by_hash(sha, opts.test_fraction)
    hit = known.get(sha) if known else None
    if hit is not None:
        missing = hit["status"] == "ok" and not all(_png_exists(opts, p) for p in result_paths(hit))
        return {**res, **hit, "reused": True, "png_missing": missing}
    if not data:
        return reject(Reason.EMPTY, "zero bytes")
    if opts.load_size is not None:
        return _process_tiles(data, res, opts)
    try:
        img = decode_normalised(data, opts)
    except Rejected as rej:
        return reject(rej.reason, rej.detail)
    rel = _write_png(img, opts, _output_rel(style, res["split"], sha))
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


def _process_tiles(data: bytes, res: dict[str, Any], opts: WorkerOpts) -> dict[str, Any]:
    """data.load_size: the source's tiles, each its own PNG; blank ones are dropped and named.
    `phash` and `intensity_std` are the whole resized picture's (dedupe compares sources)."""
    try:
        whole, tiles = decode_tiles(data, opts)
    except Rejected as rej:
        return _rejected(res, rej.reason, rej.detail)
    kept, blank = [], []
    for name, tile in tiles:
        std = intensity_std(tile)
        if std < opts.min_tile_std:
            detail = (
                f"tile {name}: luminance std {std:.2f} below validation.min_intensity_std="
                f"{opts.min_tile_std} (blank; the source's other tiles are kept)"
            )
            blank.append({"tile": name, "intensity_std": std, "detail": detail})
            continue
        rel = _write_png(tile, opts, _output_rel(res["style"], res["split"], res["sha256"], name))
        kept.append({"tile": name, "path": rel, "phash": phash(tile), "intensity_std": std})
    if not kept:
        return _rejected(
            res,
            Reason.BLANK,
            f"all {len(tiles)} tile(s) of {opts.image_size} px have a luminance std below "
            f"validation.min_intensity_std={opts.min_tile_std}",
        )
    return {
        **res,
        "status": "ok",
        "path": kept[0]["path"],
        "width": opts.image_size,
        "height": opts.image_size,
        "mode": whole.mode,
        "phash": phash(whole),
        "intensity_std": intensity_std(whole),
        "tiles": kept,
        "blank_tiles": blank,
    }


def _rejected(res: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
    """A source file's result as a reject with a manifest.Reason and its detail."""
    return {**res, "status": "reject", "reason": reason, "detail": detail}


def _write_png(img: Image.Image, opts: WorkerOpts, rel: str) -> str:
    """Stage `img` as the PNG `rel` unless an identical one is already in place; returns `rel`."""
    png = encode_png(img)
    target = opts.root / rel
    # An identical file is left alone so reruns do not touch mtimes (DVC, make-style tools);
    # anything else is staged and only moved into styles/ once the whole run has succeeded.
    if not (target.is_file() and target.read_bytes() == png):
        atomic_write_bytes(opts.staging / rel, png)
    return rel


def result_paths(res: dict[str, Any]) -> list[str]:
    """The PNGs an accepted result stands for: its tiles', or its one image's."""
    return [t["path"] for t in res["tiles"]] if "tiles" in res else [res["path"]]


def _png_exists(opts: WorkerOpts, rel: str) -> bool:
    return (opts.root / rel).is_file() or (opts.staging / rel).is_file()


def pool_size(workers: int) -> int:
    return workers or usable_cpus()


def _run(tasks: list[tuple[Any, ...]], opts: WorkerOpts, workers: int) -> Iterator[dict[str, Any]]:
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


def _set_globals(opts: WorkerOpts | None, max_pixels: int | None, load_truncated: bool) -> None:
    global _OPTS
    _OPTS = opts
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = load_truncated


def _task_key(style: str, split_hint: str, opts: WorkerOpts, code: str) -> str:
    """What a cached result depends on besides the bytes (`code`: ingest_code_hash()); a change
    means decode again."""
    parts = [
        code,
        style,
        split_hint,
        opts.image_size,
        opts.min_source_size,
        opts.max_pixels,
    ]
    if opts.load_size is not None:  # appended only when set: untiled results keep their keys
        parts += ["tiles", opts.load_size, opts.min_tile_std]
    if split_hint == "auto":
        parts.append(opts.test_fraction)
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]


def process_all(
    tasks: list[tuple[str, str, str, str]], opts: WorkerOpts, workers: int, journal_path: Path
) -> list[dict[str, Any]]:
    """Per-file results sorted by origin; each new one is journalled the moment it is known."""
    from tqdm import tqdm

    known = read_journal(journal_path)
    code = ingest_code_hash()
    keys = {t[1]: _task_key(t[2], t[3], opts, code) for t in tasks}
    jobs = [(*t, known.get((t[1], keys[t[1]]))) for t in tasks]
    results = []
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    with open(journal_path, "a", encoding="utf-8") as journal:
        progress = tqdm(
            _run(jobs, opts, workers), total=len(jobs), desc="ingest", unit="img", disable=None
        )
        for res in progress:
            if res["sha256"] and not res.get("reused"):
                journal.write(journal_line(keys[res["origin"]], res, code) + "\n")
                journal.flush()
            results.append(res)
    compact_journal(journal_path, code)
    return sorted(results, key=lambda r: r["origin"])


def write_missing_pngs(
    accepted: list[dict[str, Any]],
    dropped: dict[int, tuple[str, str]],
    tasks: list[tuple[str, str, str, str]],
    opts: WorkerOpts,
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
        if got["status"] != "ok" or result_paths(got) != result_paths(accepted[i]):
            raise IngestError(
                f"{accepted[i]['origin']} decoded differently than its record in {journal_path}",
                hint=f"delete {journal_path} and run ingest again",
            )
