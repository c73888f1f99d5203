"""The manifest (one row per accepted image) and the rejects list (one row per refused input).

`data/manifest.parquet` is the contract between data preparation and every later stage:
paths are relative to the data root and always `styles/<style>/<split>/<file>.png`.

pandas and scipy are imported inside the functions that use them, and the training process, which
only lists a pair's images (`manifest_records`), reads the manifest in a short-lived child process:
it then holds none of pandas, scipy or pyarrow (about 55 MB and 90 MB of its peak memory,
docs/benchmarks.md).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from culturegan.errors import SourceError
from culturegan.fileio import atomic_path, atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

MANIFEST_NAME = "manifest.parquet"
REJECTS_NAME = "rejects.csv"
SPLITS = ("train", "test")


@dataclass(frozen=True)
class ManifestRow:
    path: str  # relative to the data root, posix: styles/<style>/<split>/<name>.png
    style: str
    split: str  # "train" | "test"
    scene: str  # ground-truth scene key shared across styles (synthetic); "" for real data
    sha256: str  # of the source bytes (what was ingested), hex
    source: str  # where it came from: a path, URL#member, s3:// URI, or synthetic:<seed>
    width: int  # of the normalised image
    height: int
    mode: str  # PIL mode of the normalised image
    phash: str  # 64-bit DCT perceptual hash of the normalised image, 16 hex digits
    intensity_std: float  # standard deviation of luminance (0..255): near 0 means blank
    tile: str = ""  # data.load_size: which tile of its source, "r<row>c<col>"; "" for a whole image


MANIFEST_COLUMNS = [f.name for f in fields(ManifestRow)]


class Reason:
    """Reject reasons written to rejects.csv (one vocabulary for every source)."""

    EMPTY = "empty_file"
    NOT_IMAGE = "not_an_image"
    CORRUPT = "corrupt_image"
    TRUNCATED = "truncated_image"
    TOO_SMALL = "too_small"
    TOO_LARGE = "too_many_pixels"
    UNSAFE_PATH = "unsafe_archive_member"
    DUPLICATE = "exact_duplicate"
    NEAR_DUPLICATE = "near_duplicate"
    LEAK = "train_test_leak"
    AMBIGUOUS = "ambiguous_style"  # the same or a near-identical image under two styles
    BLANK = "blank_image"  # data.load_size: a tile (or every tile) flatter than validation.min_intensity_std
    UNKNOWN_STYLE = "unknown_style_folder"
    DOWNLOAD_FAILED = "download_failed"


@dataclass(frozen=True)
class RejectRow:
    source: str
    reason: str
    detail: str
    style: str = ""
    split: str = ""


REJECT_COLUMNS = [f.name for f in fields(RejectRow)]


def phash(img: Image.Image) -> str:
    """64-bit DCT perceptual hash (the classic pHash): robust to resizing and re-encoding."""
    from scipy.fft import dctn

    gray = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float32)
    low = dctn(gray, norm="ortho")[:8, :8]  # lowest frequencies carry the layout of the picture
    bits = (low > np.median(low)).flatten()
    return f"{int(np.packbits(bits).view('>u8')[0]):016x}"


def phash_ints(hashes: Iterable[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hashes], dtype=np.uint64)


def intensity_std(img: Image.Image) -> float:
    return float(np.asarray(img.convert("L"), dtype=np.float32).std())


def manifest_frame(rows: Iterable[ManifestRow]) -> pd.DataFrame:
    import pandas as pd

    df = pd.DataFrame([asdict(r) for r in rows], columns=MANIFEST_COLUMNS)
    return df.astype({"width": "int64", "height": "int64", "intensity_std": "float64"})


def write_manifest(df: pd.DataFrame, root: Path) -> Path:
    """Write `root/manifest.parquet` atomically, sorted so the file is deterministic."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest is missing columns {missing}")
    df = df[MANIFEST_COLUMNS].sort_values(["style", "split", "path"]).reset_index(drop=True)
    out = Path(root) / MANIFEST_NAME
    with atomic_path(out) as tmp:
        df.to_parquet(tmp, index=False)
    return out


def _existing_manifest(root: Path) -> Path:
    """The manifest of the prepared data folder `root`; a clear error if it has none."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise SourceError(
            f"{path} not found",
            hint="run the prepare stage first (`dvc repro prepare` or `culturegan prepare`), or point"
            " data.root in params.yaml at a prepared data folder",
        )
    return path


def read_manifest(root: Path) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(_existing_manifest(root))


def manifest_records(root: Path, columns: Iterable[str]) -> list[dict[str, Any]]:
    """The manifest's rows as dicts of `columns` (JSON values: str, int, float, bool, None), read
    in a child process, so pyarrow's libraries (about 90 MB of resident memory) never load into
    the caller: the trainer, whose peak memory is a benchmark target (docs/benchmarks.md). One
    read per file version and column list in a process (cached)."""
    path = _existing_manifest(root).resolve()
    stat = path.stat()
    rows = _records_in_child(str(path), stat.st_mtime_ns, stat.st_size, tuple(columns))
    return [dict(r) for r in rows]


_CHILD_READ = (
    "import json, sys\n"
    "from culturegan.data.manifest import _read_records\n"
    "json.dump(_read_records(sys.argv[1], sys.argv[2:]), sys.stdout)\n"
)


@lru_cache(maxsize=8)
def _records_in_child(path: str, mtime_ns: int, size: int, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    # mtime and size are part of the cache key only: a rewritten manifest is read again.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD_READ, path, *columns],
        capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no error output"])[-1]
        raise SourceError(
            f"cannot read {path}: {last}",
            hint="re-run the prepare stage (`dvc repro prepare` or `culturegan prepare`)",
        )
    return json.loads(proc.stdout)


def _read_records(path: str, columns: list[str]) -> list[dict[str, Any]]:
    """The child's side of `manifest_records`: pyarrow alone (no pandas)."""
    import pyarrow.parquet as pq

    # ParquetFile.read, not read_table: read_table goes through pyarrow.dataset, which imports pandas.
    with pq.ParquetFile(path) as f:
        missing = [c for c in columns if c not in f.schema_arrow.names]
        if missing:  # pyarrow would give rows without them
            raise ValueError(f"no column(s) {missing}; it has {f.schema_arrow.names}")
        return f.read(columns=columns).to_pylist()


def write_rejects(rows: Iterable[RejectRow], root: Path, name: str = REJECTS_NAME) -> Path:
    """Write `root/rejects.csv` (or `root/<name>`) atomically (a header only when nothing was
    rejected)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REJECT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in sorted(rows, key=lambda r: (r.source, r.reason)):
        writer.writerow(asdict(r))
    out = Path(root) / name
    atomic_write_text(out, buf.getvalue())
    return out


def read_rejects(root: Path) -> pd.DataFrame:
    import pandas as pd

    return pd.read_csv(Path(root) / REJECTS_NAME, dtype=str, keep_default_na=False)
