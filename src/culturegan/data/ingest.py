"""The ingest stage: a folder, archive or bucket of style images -> styles/*.png + manifest.

Every source file ends up in the manifest, in rejects.csv, or counted as an ignored system file.
The steps live in their own modules: fetching (sources), where each file goes (layout), decoding
and normalising one image (normalise) in worker processes with a journal (ingest_workers,
journal), and duplicates (dedupe); this module runs them and swaps the outputs in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from culturegan.config import Params
from culturegan.data.dedupe import dedupe
from culturegan.data.ingest_workers import (
    WorkerOpts,
    ingest_code_hash,
    pool_size,
    process_all,
    write_missing_pngs,
)
from culturegan.data.journal import JOURNAL_NAME
from culturegan.data.layout import SPLIT_ORDER, Plan, Scan, plan_tasks, scan_source
from culturegan.data.manifest import (
    ManifestRow,
    Reason,
    RejectRow,
    manifest_frame,
    write_manifest,
    write_rejects,
)
from culturegan.data.normalise import decodable_formats
from culturegan.errors import ConfigError, IngestError
from culturegan.fileio import atomic_write_text

log = logging.getLogger(__name__)

FAILED_REJECTS_NAME = "rejects-of-failed-ingest.csv"  # in data.cache_dir: root stays untouched


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
    scan = scan_source(fetched.root, skip={(root / "styles").resolve(), cache_dir.resolve()})
    plan = (
        plan_tasks(scan.files, fetched.root, params) if scan.files else Plan("none", [], [], set())
    )
    staging = _staging_dir(cache_dir, root, cfg.image_size, cfg.load_size)
    _mark_staging(staging, root)
    opts = WorkerOpts(
        root=root,
        staging=staging,
        image_size=cfg.image_size,
        min_source_size=cfg.min_source_size,
        max_pixels=cfg.max_pixels,
        test_fraction=cfg.test_fraction,
        formats=decodable_formats(),
        load_size=cfg.load_size,
        min_tile_std=params.validation.min_intensity_std,
    )
    tasks = [(str(path), fetched.origin(path), style, split) for path, style, split in plan.tasks]
    results = process_all(tasks, opts, pool_size(cfg.workers), cache_dir / JOURNAL_NAME)
    accepted = [r for r in results if r["status"] == "ok"]
    dropped = dedupe(accepted, cfg.near_duplicate_bits)
    write_missing_pngs(
        accepted, dropped, tasks, opts, pool_size(cfg.workers), cache_dir / JOURNAL_NAME
    )

    manifest_rows = [row for i, r in enumerate(accepted) if i not in dropped for row in _manifest_rows(r)]
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
    _remove_superseded_staging(opts.staging.parent, root)
    failed_rejects.unlink(missing_ok=True)

    by_style: dict[str, dict[str, int]] = defaultdict(dict)
    for style, split in sorted(plan.splits, key=lambda ss: (ss[0], SPLIT_ORDER[ss[1]])):
        by_style[style][split] = 0
    for r in manifest_rows:
        by_style[r.style][r.split] = by_style[r.style].get(r.split, 0) + 1
    seconds = time.perf_counter() - t0
    summary = {
        "accepted": len(manifest_rows),
        "sources_accepted": len(accepted) - len(dropped),
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
    source: str, scan: Scan, rejects: list[RejectRow], root: Path, failed_rejects: Path
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


def _manifest_rows(r: dict[str, Any]) -> list[ManifestRow]:
    """An accepted source's rows: one, or one per kept tile (data.load_size)."""
    images = r.get("tiles") or [{**r, "tile": ""}]
    return [
        ManifestRow(
            path=t["path"],
            style=r["style"],
            split=r["split"],
            scene="",
            sha256=r["sha256"],
            source=r["origin"],
            width=r["width"],
            height=r["height"],
            mode=r["mode"],
            phash=t["phash"],
            intensity_std=float(t["intensity_std"]),
            tile=t["tile"],
        )
        for t in images
    ]


def _reject_rows(
    fetched: Any,
    plan: Plan,
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
    rows += [
        RejectRow(
            r["origin"],
            Reason.BLANK,
            t["detail"],
            r["style"],
            r["split"],
        )
        for i, r in enumerate(accepted)
        if i not in dropped
        for t in r.get("blank_tiles", ())
    ]
    outside = f"outside the style/split folders of the {plan.layout} layout"
    rows += [RejectRow(fetched.origin(p), Reason.UNKNOWN_STYLE, outside) for p in plan.outside]
    return sorted(rows, key=lambda r: (r.source, r.reason, r.detail, r.style, r.split))


# ---------------------------------------------------------------------------------------------
# Staging: new PNGs wait outside root until the run has succeeded


def _staging_dir(cache_dir: Path, root: Path, image_size: int, load_size: int | None) -> Path:
    """Where a run's new PNGs wait for the swap into `root`: kept after a crash so that the next
    run reuses them; keyed by what a PNG's bytes depend on beyond its path (which holds the
    source's sha256, style and split), so a staged file is never taken for another size's."""
    parts: list[Any] = [str(root.resolve()), image_size, ingest_code_hash()]
    if load_size is not None:  # appended only when set: untiled runs keep their staging folder
        parts.append(load_size)
    key = json.dumps(parts)
    return cache_dir / "ingest-staging" / hashlib.sha1(key.encode()).hexdigest()[:16]


STAGING_MARK = "staging-of.json"  # in a staging folder: the data root its PNGs are for


def _mark_staging(staging: Path, root: Path) -> None:
    """Record which data root a staging folder serves (its name is a hash that cannot be read
    back), so that a later successful run into that root can remove it (below)."""
    mark = staging / STAGING_MARK
    if not mark.is_file():
        atomic_write_text(mark, json.dumps({"root": str(root.resolve())}))


def _remove_superseded_staging(staging_parent: Path, root: Path) -> list[Path]:
    """Delete the staging folders that crashed runs into `root` left under another key (other
    ingest code, data.image_size or data.load_size): `root` now holds a complete newer run, and
    nothing else would ever remove them. At worst a later run with that old key decodes those
    files again. Folders of other data roots, and unmarked ones (written before the mark
    existed), are left alone. Returns the folders removed."""
    removed = []
    for folder in sorted(staging_parent.iterdir()) if staging_parent.is_dir() else []:
        try:
            owner = json.loads((folder / STAGING_MARK).read_text())["root"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if owner == str(root.resolve()):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        log.info("removed %d staging folder(s) of earlier crashed runs into %s", len(removed), root)
    return removed


def _swap_in(staging: Path, root: Path, rels: Iterable[str]) -> None:
    """Move the staged PNGs of `rels` (those not already identical in `root`) into `root`."""
    for rel in rels:
        staged = staging / rel
        if staged.is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(staged, root / rel)  # a rename on one file system


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
