"""A params profile's directions trained longer on a lent GPU, within a time budget.

    bash scripts/gpu_run.sh --params params/realart.yaml --images .realart --steps 2880,8640
    python -m culturegan.gpurun --device cpu --quick --images DIR --out DIR   # dry run (a test)

Issue 10's real-art target (the GAN ahead of the best colour baseline on KID gain in 5 of 6
directions) is out of reach of 2 CPU cores' minutes (docs/quality.md, "What it would take"): this
is its GPU route, ready for the next time a GPU is lent. It prepares the images as the profile says
(the prepare stage's `prepare`), trains the profile's style classifier (`classifier_stage`, all
ensemble members), then trains and scores every direction of the profile's `train.pairs` in
rounds of increasing steps, each round all directions at once in processes of their own
(`quality_curve`: a training from scratch at that budget, then the direction's evaluation with the
baselines and controls). A round starts only if the last one's time, its training part scaled by
the steps, fits what is left of the budget; every row is on disk before the next round starts.

Writes to $OUT (the device tool's result folder) or --out: rows.jsonl (one `summarize` row a
direction and round), summary.md and summary.json (per round: each direction's KID-gain margin
over the best colour baseline in every classifier run, and the GAN's wins per run) and grids.tar
(each direction's grid per round: source, GAN, baselines). Needs what `scripts/gpu_check.sh` needs
(no MLflow, DVC or GX).
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROWS = "rows.jsonl"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
GRIDS = "grids.tar"

# --quick: every part at toy sizes on the CPU, in seconds (tests/test_gpurun.py)
QUICK_SET = [
    "data.load_size=64", "data.image_size=32", "data.min_source_size=16", "train.crop_size=16",
    "evaluation.tile_size=16", "train.generator.ngf=8", "train.generator.n_blocks=1",
    "train.discriminator.ndf=8", "train.discriminator.n_layers=2", "train.batch_size=2",
    "train.log_every=1", "train.sample_every=1000", "train.checkpoint_every=1000",
    "evaluation.classifier.epochs=1", "evaluation.classifier.ensemble=2", "evaluation.kid_subsets=4",
]


def run_params(profile: Path, images: Path | None, work: Path, device: str, assignments: list[str]):
    """The profile with its data from `images` (None: the profile's own source) into `work/data`,
    on `device`, plus `assignments`."""
    from culturegan.config import load_params
    from culturegan.quality import override

    source = [f"data.source={images.resolve()}"] if images is not None else []
    return override(load_params(profile), [
        *source, f"data.root={work / 'data'}", f"train.device={device}", *assignments,
    ])


def _direction_worker(params_json: str, pair: str, steps: int, data_root: str, classifier: str,
                      work: str, threads: int) -> list[dict[str, Any]]:
    """One direction at one budget, in a process of its own (spawned: CUDA does not survive fork)."""
    import torch

    torch.set_num_threads(threads)
    from culturegan.config import Pair, Params
    from culturegan.quality import quality_curve

    params = Params.model_validate(json.loads(params_json))
    return quality_curve(params, Pair.parse(pair), [steps], Path(data_root), Path(classifier),
                         Path(work), label=f"gpu-run-{steps}")


def _margin(row: dict[str, Any], gan_key: str, best_key: str) -> float | None:
    """row[gan_key] minus the value of row[best_key] ([baseline, value]); None when either is missing."""
    best = row.get(best_key)
    if row.get(gan_key) is None or not best or best[1] is None:
        return None
    return float(row[gan_key]) - float(best[1])


def margins(row: dict[str, Any]) -> list[float] | None:
    """The GAN's KID-gain margin over the best colour baseline, per classifier run (one run: one)."""
    if row.get("gan_kid_margin_per_classifier_run"):
        return [float(m) for m in row["gan_kid_margin_per_classifier_run"]]
    margin = _margin(row, "gan_kid_gain", "best_baseline_kid_gain")
    return None if margin is None else [margin]


def texture_margin(row: dict[str, Any]) -> float | None:
    """The GAN's KID-gain margin over the best colour baseline in the training-free texture space."""
    return _margin(row, "gan_kid_gain_texture", "best_baseline_kid_gain_texture")


def summarize_round(steps: int, rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Per direction its margins; per classifier run the GAN's wins out of the directions scored;
    and the same in the texture space, which has no training run."""
    per_direction = {r["direction"]: margins(r) for r in rows if "direction" in r}
    scored = {d: m for d, m in per_direction.items() if m}
    n_runs = max((len(m) for m in scored.values()), default=0)
    wins = [sum(1 for m in scored.values() if len(m) > k and m[k] > 0) for k in range(n_runs)]
    texture = {r["direction"]: texture_margin(r) for r in rows if "direction" in r}
    return {
        "steps": steps,
        "seconds": round(seconds, 1),
        "directions": len(scored),
        "margins": per_direction,
        "wins_per_classifier_run": wins,
        "texture_margins": texture,
        "texture_wins": sum(1 for m in texture.values() if m is not None and m > 0),
        "errors": [r for r in rows if "error" in r],
    }


def _took(result: dict[str, Any], stage: str) -> str:
    return f"{result[stage + '_s']} s" if result.get(stage + "_s") is not None else "given"


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        "# GPU run of a params profile",
        "",
        (f"{result['env'].get('gpu') or result['env'].get('cpu', {}).get('model', '?')}, torch "
         f"{result['env'].get('torch')}, profile {result['profile']}, images {result['images'] or '(data given)'}, "
         f"{result['elapsed_s']} s of a {result['budget_s']} s budget. Classifier: test accuracy "
         f"{result.get('classifier', {}).get('test_accuracy')}; prepare {_took(result, 'prepare')}, "
         f"classifier {_took(result, 'classifier')}."),
        "",
    ]
    for rnd in result["rounds"]:
        lines += [f"## {rnd['steps']} steps a direction ({rnd['seconds']} s)", "",
                  ("| direction | GAN KID-gain margin over the best colour baseline, per classifier run "
                   "| the same in the texture space |"),
                  "|---|---|---|"]
        texture = rnd.get("texture_margins") or {}
        for d, m in rnd["margins"].items():
            cell = ", ".join(f"{x:+.3f}" for x in m) if m else "not scored"
            tex = texture.get(d)
            lines.append(f"| {d} | {cell} | {'not scored' if tex is None else f'{tex:+.3f}'} |")
        wins = f"GAN wins per classifier run, of {rnd['directions']} directions: {rnd['wins_per_classifier_run']}"
        lines += ["", wins, ""]
        if any(v is not None for v in texture.values()):
            lines += [f"GAN wins in the texture space: {rnd['texture_wins']}", ""]
        for e in rnd["errors"]:
            lines.append(f"- error in {e.get('label')}: {e['error'][:300]}")
    for s in result.get("skipped", []):
        lines.append(f"- skipped: {s}")
    return "\n".join(lines) + "\n"


def run_profile_on_gpu(
    profile: Path,
    images: Path | None,
    out_dir: Path | None = None,
    device: str = "cuda",
    steps: list[int] | None = None,
    budget_s: float = 480.0,
    jobs: int = 0,
    assignments: list[str] | None = None,
    quick: bool = False,
    data_root: Path | None = None,
    classifier_path: Path | None = None,
) -> dict[str, Any]:
    """The whole run (module docstring); returns the result and writes it to `out_dir`.

    `data_root` (a prepared data folder) and `classifier_path` (its classifier.pt, next to its
    classifier.json) skip those two stages: the classifier trains on the CPU, and the real-art
    profile's five members take minutes of a GPU lease that the CPU here can spend beforehand
    (`culturegan prepare` and `culturegan classifier` with the same profile)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from culturegan.data.prepare import prepare
    from culturegan.evaluation.classifier import CLASSIFIER_FILE, CLASSIFIER_REPORT
    from culturegan.fileio import atomic_write_text
    from culturegan.gpucheck import environment
    from culturegan.stages import classifier_stage

    t0 = time.perf_counter()
    images = Path(images) if images is not None else None
    if data_root is None and (images is None or not images.is_dir()):
        raise FileNotFoundError(f"images folder {images} not found: give a folder with one sub-folder "
                                "per style (copy ../shared/realart into the repository and carry it)")
    out_dir = Path(out_dir or os.environ.get("OUT") or "gpu_run")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (ROWS, GRIDS):  # appended to round by round: this run's alone, not an earlier one's
        (out_dir / name).unlink(missing_ok=True)
    steps = sorted(set(steps or [2880]))
    result: dict[str, Any] = {
        "profile": str(profile), "images": str(images) if images else None, "budget_s": budget_s,
        "steps": steps,
        "env": environment(device), "rounds": [], "skipped": [],
    }

    def write() -> None:
        result["elapsed_s"] = round(time.perf_counter() - t0, 1)
        atomic_write_text(out_dir / SUMMARY_JSON, json.dumps(result, indent=2, default=str) + "\n")
        atomic_write_text(out_dir / SUMMARY_MD, to_markdown(result))

    with tempfile.TemporaryDirectory(prefix="gpu_run_") as tmp:
        work = Path(tmp)
        params = run_params(profile, images, work, device, [*(QUICK_SET if quick else []), *(assignments or [])])
        if data_root is None:
            data_root = work / "data"
            t = time.perf_counter()
            prepared = prepare(params, data_root)
            result["prepare_s"] = round(time.perf_counter() - t, 1)
            result["prepared"] = {k: v for k, v in prepared.items() if isinstance(v, int | float | str)}
        else:
            result["prepared"] = {"given": str(data_root)}
        if classifier_path is None:
            t = time.perf_counter()
            clf = classifier_stage(params, data_root, work / "clf")
            result["classifier_s"] = round(time.perf_counter() - t, 1)
            classifier_path = work / "clf" / CLASSIFIER_FILE
        else:
            report = Path(classifier_path).parent / CLASSIFIER_REPORT
            clf = {"given": str(classifier_path),
                   **(json.loads(report.read_text()) if report.is_file() else {})}
        result["classifier"] = {k: clf[k] for k in ("given", "test_accuracy", "test_accuracy_per_style")
                                if k in clf}
        write()

        pairs = [str(p) for p in params.train.pairs]
        jobs = jobs or len(pairs)
        threads = max(1, (os.cpu_count() or 1) // jobs)
        params_json = params.model_dump_json()
        classifier = str(classifier_path)
        estimate = None
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for n in steps:
                left = budget_s - (time.perf_counter() - t0)
                if estimate is not None and estimate(n) > left:
                    result["skipped"].append(f"{n} steps: ≈ {estimate(n):.0f} s needed, {left:.0f} s left")
                    continue
                t = time.perf_counter()
                futures = {p: pool.submit(_direction_worker, params_json, p, n, str(data_root),
                                          classifier, str(work / "runs"), threads) for p in pairs}
                rows: list[dict[str, Any]] = []
                for p, fut in futures.items():
                    try:
                        rows += fut.result()
                    except Exception as err:  # noqa: BLE001 (recorded: the other directions go on)
                        rows.append({"label": f"{p} at {n} steps", "error": f"{type(err).__name__}: {err}"})
                seconds = time.perf_counter() - t
                with (out_dir / ROWS).open("a") as f:
                    f.writelines(json.dumps(r, default=str) + "\n" for r in rows)
                result["rounds"].append(summarize_round(n, rows, seconds))
                _add_grids(out_dir / GRIDS, rows, n)
                write()
                train_s = max((r.get("train_seconds") or 0.0 for r in rows), default=0.0)
                estimate = (lambda m, s=seconds, tr=train_s, n0=n: (s - tr) + tr * m / n0)
    write()
    return result


def _add_grids(tar_path: Path, rows: list[dict[str, Any]], steps: int) -> None:
    """Append each direction's grid of this round to one tar (the device tool returns 8 files)."""
    with tarfile.open(tar_path, "a") as tar:
        for r in rows:
            grid = Path(r.get("grid") or "")
            if grid.is_file():
                tar.add(grid, arcname=f"{steps}/{r['direction']}.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m culturegan.gpurun", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params/realart.yaml"), help="the profile")
    ap.add_argument("--images", type=Path, default=None,
                    help="folder with one sub-folder per style (not needed with --data)")
    ap.add_argument("--data", type=Path, default=None, help="a prepared data folder: skip prepare")
    ap.add_argument("--classifier", type=Path, default=None,
                    help="a trained classifier.pt for that data: skip the classifier")
    ap.add_argument("--out", type=Path, default=None, help="result folder (default: $OUT, else ./gpu_run)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--steps", default="2880", help="comma-separated step budgets, run in rounds")
    ap.add_argument("--budget-s", type=float, default=480.0, help="seconds for the whole run")
    ap.add_argument("--jobs", type=int, default=0, help="directions at once (default: all)")
    ap.add_argument("--set", action="append", default=[], dest="assignments",
                    help="key=value over the profile, repeatable (e.g. train.batch_size=16)")
    ap.add_argument("--quick", action="store_true", help="toy sizes: a dry run of every part")
    args = ap.parse_args(argv)
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--steps takes comma-separated integers, got {args.steps!r}")
    if not steps or min(steps) < 1:
        ap.error(f"--steps takes positive integers, got {args.steps!r}")
    if args.images is None and args.data is None:
        ap.error("give --images (a folder per style) or --data (a prepared data folder)")
    result = run_profile_on_gpu(args.params, args.images, args.out, args.device, steps,
                                args.budget_s, args.jobs, args.assignments, args.quick, args.data,
                                args.classifier)
    print(to_markdown(result), flush=True)
    return 0


if __name__ == "__main__":
    from culturegan.gpucheck import exit_now

    exit_now(main())
