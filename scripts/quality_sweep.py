"""Run many `culturegan bench quality` variants side by side (the ablation of docs/quality.md).

    python scripts/quality_sweep.py VARIANTS.yaml --jobs 8 --out sweep.jsonl

VARIANTS.yaml maps a label to {pairs: [...], steps: [...], set: [key=value, ...]}. Each variant
runs in its own process (torch threads split between jobs) on prepared data and the trained
style classifier at their standard paths; rows are appended to --out as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import yaml


def _run(label: str, spec: dict, threads: int, work_dir: str) -> list[dict]:
    import torch

    torch.set_num_threads(threads)
    from culturegan.config import Pair, load_params
    from culturegan.evaluation.classifier import CLASSIFIER_FILE
    from culturegan.quality import override, quality_curve
    from culturegan.stages import CLASSIFIER_DIR

    params = override(load_params("params.yaml"), list(spec.get("set", [])))
    rows = []
    for pair in spec["pairs"]:
        rows += quality_curve(
            params, Pair.parse(pair), [int(s) for s in spec["steps"]], Path(params.data.root),
            CLASSIFIER_DIR / CLASSIFIER_FILE, Path(work_dir), label,
        )
    for r in rows:
        r["set"] = list(spec.get("set", []))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", type=Path)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work-dir", default=".staging/quality")
    args = ap.parse_args()
    variants = yaml.safe_load(args.variants.read_text())
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool, args.out.open("a") as out:
        futures = {pool.submit(_run, k, v, threads, args.work_dir): k for k, v in variants.items()}
        for fut in as_completed(futures):
            try:
                rows = fut.result()
            except Exception as err:  # noqa: BLE001 - one broken variant must not stop the sweep
                rows = [{"label": futures[fut], "error": repr(err)}]
            out.writelines(json.dumps(r) + "\n" for r in rows)
            out.flush()
            print(f"[{time.perf_counter() - t0:.0f}s] done {futures[fut]}", flush=True)


if __name__ == "__main__":
    main()
