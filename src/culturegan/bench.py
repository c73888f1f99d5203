"""Speed measurements of pipeline stages on generated data, separate from the tests."""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from culturegan.cpus import usable_cpus


def cpu_info() -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model
            )
    except OSError:
        pass
    usable = usable_cpus()
    return {
        "model": model,
        "machine": platform.machine(),
        "cores": usable,
        "python": platform.python_version(),
    }


def _random_jpegs(folder: Path, n: int, size: int, seed: int) -> None:
    """`n` JPEGs of smooth random colour fields plus noise: photo-like to encode and decode."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
        field = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)
        noise = rng.integers(-12, 13, (size, size, 3), dtype=np.int16)
        img = Image.fromarray(np.clip(field + noise, 0, 255).astype(np.uint8))
        img.save(folder / f"{i:05d}.jpg", quality=90)


def bench_ingest(
    n: int = 600, size: int = 256, workers: int = 0, tmp: Path | None = None
) -> dict[str, Any]:
    """Ingest `n` generated `size`x`size` JPEGs (two style folders) to 64x64 PNGs; time it.

    Also times a rerun, which the journal should make much faster (nothing is decoded).
    """
    from culturegan.config import Params
    from culturegan.data.ingest import ingest
    from culturegan.data.ingest_workers import pool_size

    with tempfile.TemporaryDirectory(dir=tmp) as work_dir:
        work = Path(work_dir)
        half = n // 2
        _random_jpegs(work / "src" / "style_a", half, size, seed=1)
        _random_jpegs(work / "src" / "style_b", n - half, size, seed=2)
        params = Params.model_validate(
            {
                "data": {
                    "source": str(work / "src"),
                    "root": str(work / "data"),
                    "cache_dir": str(work / "cache"),
                    "image_size": 64,
                    "workers": workers,
                }
            }
        )
        t0 = time.perf_counter()
        summary = ingest(params, work / "data")
        seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        ingest(params, work / "data")
        rerun = time.perf_counter() - t1
    return {
        "images": n,
        "source_size": size,
        "image_size": 64,
        "seconds": round(seconds, 3),
        "images_per_s": round(n / seconds, 1),
        "rerun_seconds": round(rerun, 3),
        "accepted": summary["accepted"],
        "workers": pool_size(workers),
        "cpu": cpu_info(),
    }
