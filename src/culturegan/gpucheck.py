"""The GPU check of issue 13: one run, within a time budget, on a lent GPU machine.

    bash scripts/gpu_check.sh                      # cuda, full matrix, results in $OUT or ./gpu_check
    python -m culturegan.gpucheck --device cpu --quick --out /tmp/gc   # tiny dry run (a test runs it)

It measures, at 256x256 with the reference networks (ResNet generator ngf 64 / 9 blocks, PatchGAN
ndf 64 / 3 layers), CycleGAN training steps of the plain path (fp32, eager, unfused Adam, one
forward per input, resize-convolutions as three layers) against the tuned path (fp16 with a
gradient scaler, bf16; eager and torch.compile; channels_last) at batch 1, 4 and 8, with peak
CUDA memory; then a short real training of one pair on a small synthetic benchmark, with its
evaluation. First, a correctness check of instance norm in both memory layouts on the device
(`measure_layouts`): torch 2.14.1's CPU `F.instance_norm` gives a single image whose output
gradient is channels-last a wrong input gradient (docs/benchmarks.md); whether the GPU's kernels
share the fault decides whether channels-last training can run there (the trainer refuses it
where the networks' norm faults: `models.layoutcheck.check_channels_last`). Every measurement is one
call of the project's own functions (`bench_train`, `prepare_synthetic`, `train_pair`,
`evaluate_pair`); a failing one (torch.compile missing a compiler, say) is recorded with its error
and the check goes on. Measurements that would not fit in the remaining budget are recorded as
skipped. The JSON and markdown results are rewritten after every measurement, so a run cut short
still leaves what it measured.

Needs only torch, numpy, pillow, pandas/pyarrow, scipy, pydantic and pyyaml (no MLflow, DVC or GX):
the GPU machine's own python3 with the repository's src/ on PYTHONPATH, no virtualenv.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from culturegan.gpucheck_report import targets, to_markdown

RESULT_JSON = "gpu_check.json"
RESULT_MD = "gpu_check.md"
SECTIONS = ("env", "layouts", "matrix", "loader", "train_eval", "targets")
# what --parts can choose (the loader rides on train_eval)
PARTS = ("layouts", "matrix", "train_eval", "compile")

def _full_sizes() -> dict[str, Any]:
    return {
        "image_size": 256,
        "batches": [1, 4, 8],
        "generator": {"ngf": 64, "n_blocks": 9},
        "discriminator": {"ndf": 64, "n_layers": 3},
        "steps": 20,
        "warmup": 5,
        "rounds": 3,
        "compile_backend": None,
        "compile_cap_s": 150.0,
        "train": {"styles": 2, "train_scenes": 120, "test_scenes": 24, "steps": 300, "batch": 4},
        # 240 images at batch 64 are 4 steps an epoch: at 4 epochs (stop 42's H200 run) the
        # classifier stayed at chance (0.50), at 30 it reached 1.00 (a CPU check, 27 s).
        "classifier_epochs": 30,
        "kid_subsets": 50,
    }


def _quick_sizes() -> dict[str, Any]:
    return {
        "image_size": 32,
        "batches": [1, 2],
        "generator": {"ngf": 8, "n_blocks": 1},
        "discriminator": {"ndf": 8, "n_layers": 2},
        "steps": 1,
        "warmup": 1,
        "rounds": 1,
        "compile_backend": "eager",  # dynamo without inductor: no C++ compiler, seconds not minutes
        "compile_cap_s": 120.0,
        "train": {"styles": 2, "train_scenes": 6, "test_scenes": 4, "steps": 2, "batch": 2},
        "classifier_epochs": 1,
        "kid_subsets": 4,
    }


def bench_params(sizes: dict[str, Any], **train: Any):
    """Params of the matrix: CycleGAN at the given sizes, everything else the project default."""
    from culturegan.config import Params

    return Params.model_validate(
        {
            "seed": 0,
            "data": {"image_size": sizes["image_size"]},
            "train": {
                "objective": "cyclegan",
                "generator": sizes["generator"],
                "discriminator": sizes["discriminator"],
                **train,
            },
        }
    )


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise _Timeout in the main thread after `seconds` (a hung compile must not eat the budget)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(*_: object) -> None:
        raise _Timeout(f"over its {seconds:.0f} s share of the budget")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Check:
    """The results so far, the budget, and the writing of both result files."""

    def __init__(self, out_dir: Path, budget_s: float, meta: dict[str, Any]) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        self.result: dict[str, Any] = {
            **meta, "layouts": None, "matrix": [], "loader": None, "train_eval": None,
        }

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def attempt(
        self, label: str, fn: Callable[[], dict[str, Any]], need_s: float, cap_s: float
    ) -> dict[str, Any]:
        """Run one measurement if `need_s` seconds are left, for at most `cap_s` (and the budget)."""
        if self.left() < need_s:
            return {"status": "skipped", "reason": f"{self.left():.0f} s of budget left, needs ~{need_s:.0f} s"}
        t = time.perf_counter()
        try:
            with _time_limit(min(cap_s, self.left())):
                out = {"status": "ok", **fn()}
        except Exception as err:  # noqa: BLE001 (recorded, not raised: the check goes on)
            out = {
                "status": "error",
                "error": f"{type(err).__name__}: {str(err)[:500]}",
                "where": traceback.format_exc(limit=3)[-800:],
            }
        out["seconds"] = round(time.perf_counter() - t, 2)
        print(f"[gpu-check] {label}: {out['status']} in {out['seconds']} s", flush=True)
        return out

    def write(self) -> None:
        from culturegan.fileio import atomic_write_text

        self.result["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        self.result["targets"] = targets(self.result)
        atomic_write_text(
            self.out_dir / RESULT_JSON, json.dumps(self.result, indent=2, default=str) + "\n"
        )
        atomic_write_text(self.out_dir / RESULT_MD, to_markdown(self.result))


def environment(device: str) -> dict[str, Any]:
    import torch

    from culturegan.bench import cpu_info

    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "cpu": cpu_info(),
        "threads": torch.get_num_threads(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        env |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "bf16_supported": torch.cuda.is_bf16_supported(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        }
    return env


def measure_layouts(device: str) -> dict[str, Any]:
    """torch's `F.instance_norm` and the networks' `InstanceNorm` layer with input and output
    gradient each in either layout, one and two images, fp32 and bf16, on `device`: which
    combinations compute a wrong output or gradient (`faults`)."""
    import torch

    from culturegan.models.layoutcheck import LAYOUT_TOLERANCE, layout_errors
    from culturegan.models.networks import InstanceNorm

    norms: dict[str, Callable[[Any], Any]] = {
        "F.instance_norm": lambda x: torch.nn.functional.instance_norm(x, eps=1e-5),
        "InstanceNorm": InstanceNorm(16).to(device),
    }
    rows = [
        {"norm": name, **layout_errors(fn, device, dtype, batch, x_cl, g_cl)}
        for name, fn in norms.items()
        for dtype in ("float32", "bfloat16")
        for batch in (1, 2)
        for x_cl in (False, True)
        for g_cl in (False, True)
    ]

    def layout(cl: bool) -> str:
        return "channels_last" if cl else "default"

    faults = [
        f"{r['norm']} {r['dtype']} batch {r['batch']}: input {layout(r['input_channels_last'])}, "
        f"gradient {layout(r['grad_channels_last'])}"
        for r in rows if not r["ok"]
    ]
    return {"rows": rows, "faults": faults, "tolerance": LAYOUT_TOLERANCE}


def _row(kind: str, batch: int, r: dict[str, Any], path: str) -> dict[str, Any]:
    """One table row from a bench_train result (`path`: tuned or baseline)."""
    p = r[path]
    return {
        "kind": kind,
        "batch": batch,
        "precision": p["precision"],
        "compile": p["compile"],
        "channels_last": p["channels_last"],
        "images_per_s": p["images_per_s"],
        "step_ms": p["step_ms"],
        "peak_mem_mb": p["peak_mem_mb"],
        "peak_mem_kind": p["peak_mem_kind"],
        "warmup_s": p["warmup_s"],
    }


def measure_matrix(check: Check, device: str, sizes: dict[str, Any]) -> None:
    """Plain vs tuned eager rows for every batch (the torch.compile rows: `measure_compiled`)."""
    from culturegan.training.bench import bench_train

    def bench(batch: int, **kw: Any) -> dict[str, Any]:
        return bench_train(
            bench_params(sizes), device=device, batch_size=batch, steps=sizes["steps"],
            warmup=sizes["warmup"], rounds=sizes["rounds"],
            compile_backend=sizes["compile_backend"], **kw,
        )

    cuda = device.startswith("cuda")
    # (kind, precision, channels_last); each alone in its process' memory, so peaks compare.
    variants = [("plain", "fp32", False), ("tuned", "bf16", False), ("tuned", "fp16", False),
                ("tuned", "bf16", True), ("tuned", "bf16-full", False)]
    for batch in sizes["batches"]:
        for kind, precision, cl in variants:
            head = {"kind": kind, "batch": batch, "precision": precision, "compile": False,
                    "channels_last": cl}
            if precision == "fp16" and not cuda:
                check.result["matrix"].append(
                    {**head, "status": "skipped", "reason": "fp16 needs CUDA (gradient scaler)"})
                continue
            plain = kind == "plain"
            out = check.attempt(
                f"{kind} {precision} channels_last={cl} batch {batch}",
                lambda b=batch, p=precision, c=cl, pl=plain: bench(
                    b, precision=p, compile=False, channels_last=c, baseline=pl, tuned=not pl),
                15, 300,
            )
            path = "baseline" if plain else "tuned"
            check.result["matrix"].append(
                _row(kind, batch, out, path) if out["status"] == "ok" else {**head, **out})
            _release(device)
        check.write()


def _release(device: str) -> None:
    """Free what the last measurement left, so the next one's peak memory is its own."""
    import gc

    import torch

    with contextlib.suppress(Exception):  # compiled graphs of the last networks (and a cut-off compile)
        torch._dynamo.reset()
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def measure_train_eval(check: Check, device: str, sizes: dict[str, Any], work: Path) -> dict[str, Any]:
    """A small synthetic benchmark, its style classifier, a short training of one pair, evaluation."""
    from culturegan.config import Pair, Params
    from culturegan.data.synthetic import prepare_synthetic
    from culturegan.evaluation.classifier import train_style_classifier
    from culturegan.evaluation.evaluate import evaluate_pair
    from culturegan.training.trainer import train_pair

    t = sizes["train"]
    styles = ["photo", "ukiyoe", "inkwash"][: t["styles"]]
    pair = Pair(styles[0], styles[1])
    params = Params.model_validate(
        {
            "seed": 0,
            "data": {
                "image_size": sizes["image_size"],
                "synthetic": {"styles": styles, "train_scenes": t["train_scenes"],
                              "test_scenes": t["test_scenes"], "preview_scenes": 2},
            },
            "train": {
                "pairs": [str(pair)], "objective": "cyclegan", "steps": t["steps"],
                "batch_size": t["batch"], "device": "cuda" if device.startswith("cuda") else "cpu",
                "generator": sizes["generator"], "discriminator": sizes["discriminator"],
                "log_every": max(1, t["steps"] // 4), "checkpoint_every": t["steps"],
                "sample_every": t["steps"], "sample_count": 2,
            },
            "evaluation": {"kid_subsets": sizes["kid_subsets"], "grid_rows": 2,
                           "classifier": {"epochs": sizes["classifier_epochs"]}},
        }
    )
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    prepare_synthetic(params, work / "data")
    times["prepare_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clf = train_style_classifier(params, work / "data", work / "clf")
    times["classifier_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    trained = train_pair(params, pair, work / "data", work / "run", tracker=None, resume=False)
    times["train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = evaluate_pair(params, pair, work / "data", work / "run", Path(clf["classifier"]),
                            work / "eval")
    times["evaluate_s"] = time.perf_counter() - t0
    full = json.loads(Path(metrics["metrics"]).read_text())
    gan = full["methods"].get("gan", {})
    return {
        "pair": str(pair),
        "image_size": sizes["image_size"],
        "steps": trained["steps"],
        "batch_size": t["batch"],
        "precision": trained["precision"],
        "train_images_per_s": trained["images_per_s"],
        "final_losses": trained["final_losses"],
        "classifier_test_accuracy": clf["test_accuracy"],
        "methods": metrics["methods"],
        "gan_metrics": {k: v for k, v in gan.items() if isinstance(v, int | float)},
        # The GAN's numbers mean something only beside the baselines' on the same test images.
        "by_method": {
            name: {k: m[k] for k in ("gt_ssim", "gt_psnr", "content_edge_ssim",
                                     "kid_classifier_relative_gain") if k in m}
            for name, m in full["methods"].items()
        },
        **{k: round(v, 2) for k, v in times.items()},
    }


def measure_loader(device: str, sizes: dict[str, Any], data_root: Path | None) -> dict[str, Any]:
    """The tuned (bf16) and plain paths at the training run's batch, fed by the training loader
    from the prepared images of the train+evaluate part instead of random tensors."""
    from culturegan.config import Pair
    from culturegan.training.bench import bench_train

    if data_root is None:
        return {"status": "skipped", "reason": "no prepared data (the train+evaluate part failed)"}
    batch = sizes["train"]["batch"]
    r = bench_train(
        bench_params(sizes), pair=Pair("photo", "ukiyoe"), device=device, precision="bf16", compile=False,
        channels_last=False, batch_size=batch, steps=sizes["steps"], warmup=sizes["warmup"],
        rounds=sizes["rounds"], baseline=True, data_root=data_root,
    )
    return {
        "batch": batch,
        "data_load_s": r["data_load_s"],
        "data_images": r["data_images"],
        "plain": _row("plain", batch, r, "baseline"),
        "tuned": _row("tuned", batch, r, "tuned"),
        "speedup": r["speedup"],
    }


def check_parts(parts: tuple[str, ...]) -> None:
    """A ValueError naming the option and the choices for any part not in PARTS."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"--parts: unknown {unknown}; choose from {','.join(PARTS)}")


def parse_selection(batches: str, parts: str) -> tuple[list[int], tuple[str, ...]]:
    """`--batches 1,4` and `--parts matrix,compile` as lists; a clear ValueError for anything else."""
    try:
        sizes = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"--batches takes comma-separated positive integers, got {batches!r}") from None
    if any(b < 1 for b in sizes):
        raise ValueError(f"--batches takes comma-separated positive integers, got {batches!r}")
    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    if not chosen:
        raise ValueError(f"--parts: empty {parts!r}; choose from {','.join(PARTS)}")
    check_parts(chosen)
    return sizes, chosen


def run_gpu_check(
    out_dir: Path | None = None,
    device: str = "cuda",
    quick: bool = False,
    budget_s: float = 360.0,
    compile_: bool = True,
    batches: list[int] | None = None,
    parts: tuple[str, ...] = PARTS,
) -> dict[str, Any]:
    """The whole check, or the `parts` of it at the given `batches` (a rerun of what a first run's
    budget cut off); returns the result dict and writes gpu_check.json / gpu_check.md."""
    import torch

    check_parts(parts)
    if out_dir is None:
        out_dir = Path(os.environ.get("OUT") or "gpu_check")
    sizes = _quick_sizes() if quick else _full_sizes()
    if batches:
        sizes["batches"] = sorted(set(batches))
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # as the reference implementation does
    check = Check(
        Path(out_dir),
        budget_s,
        {
            "mode": "quick" if quick else "full",
            "parts": list(parts),
            "batches": sizes["batches"],
            "budget_s": budget_s,
            "objective": "cyclegan",
            "image_size": sizes["image_size"],
            "generator": sizes["generator"],
            "discriminator": sizes["discriminator"],
            "peak_mem_note": "cuda: max allocated of the process during the timed rounds (both paths' "
            "weights and optimiser state are resident); cpu: process RSS",
        },
    )
    check.result["env"] = environment(device)
    check.write()
    if "layouts" in parts:
        check.result["layouts"] = check.attempt("layouts", lambda: measure_layouts(device), 2, 60)
        check.write()
    if "matrix" in parts:
        measure_matrix(check, device, sizes)
    if "train_eval" in parts:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
            work = Path(tmp)
            train_eval = check.attempt(
                "train+evaluate", lambda: measure_train_eval(check, device, sizes, work), 45, 240
            )
            check.result["train_eval"] = train_eval
            check.write()
            data_root = work / "data" if (work / "data").is_dir() else None
            check.result["loader"] = check.attempt(
                "loader", lambda: measure_loader(device, sizes, data_root), 10, 120
            )
            check.write()
    if compile_ and "compile" in parts:
        measure_compiled(check, device, sizes)
    check.write()
    return check.result


def measure_compiled(check: Check, device: str, sizes: dict[str, Any]) -> None:
    """torch.compile rows (last: compiling is the slowest part and the likeliest to fail)."""
    from culturegan.training.bench import bench_train

    cuda = device.startswith("cuda")
    # Largest batch first: the >= 100 img/s target is likeliest there, if the budget runs out.
    for precision in ("bf16", "fp16"):
        for batch in sorted(sizes["batches"], reverse=True):
            if precision == "fp16" and not cuda:
                continue
            out = check.attempt(
                f"{precision} compiled batch {batch}",
                lambda b=batch, p=precision: bench_train(
                    bench_params(sizes), device=device, batch_size=b, steps=sizes["steps"],
                    warmup=sizes["warmup"], rounds=sizes["rounds"], precision=p, compile=True,
                    channels_last=False, compile_backend=sizes["compile_backend"],
                ),
                30,
                sizes["compile_cap_s"],
            )
            check.result["matrix"].append(
                _row("tuned", batch, out, "tuned") if out["status"] == "ok"
                else {"kind": "tuned", "batch": batch, "precision": precision, "compile": True, **out}
            )
            _release(device)
            check.write()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m culturegan.gpucheck", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1-2 steps: a dry run of every part")
    ap.add_argument("--out", type=Path, default=None, help="result folder (default: $OUT, else ./gpu_check)")
    ap.add_argument("--budget-s", type=float, default=360.0, help="seconds for the whole check")
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    ap.add_argument("--batches", default="", help="comma-separated batch sizes instead of the mode's (e.g. 1)")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"comma-separated parts to run (default all: {','.join(PARTS)})")
    args = ap.parse_args(argv)
    try:
        batches, parts = parse_selection(args.batches, args.parts)
    except ValueError as err:
        ap.error(str(err))
    result = run_gpu_check(args.out, args.device, args.quick, args.budget_s, not args.no_compile,
                           batches, parts)
    print(to_markdown(result), flush=True)
    return 0


def exit_now(code: int) -> None:
    """Leave without the interpreter's shutdown. On the H200 (stop 42) the check had written and
    printed everything at 433 s and then hung in shutdown until the device call's limit, most
    likely joining the inductor compile workers of a compile the budget had cut off. The results
    are on disk (written atomically) by now, so nothing is lost by skipping the shutdown."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
