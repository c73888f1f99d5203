"""Training throughput and peak memory side by side with the reference CycleGAN (issue 13).

Runs, alternating in one sequence, the unmodified reference implementation
(junyanz/pytorch-CycleGAN-and-pix2pix: its train.py, fp32, its own data loader) and
`culturegan.training.bench.bench_train` through the training loader (`--data`), at the same
architecture: ResNet generator with transposed-convolution upsampling, PatchGAN ndf 64 / 3 layers,
instance norm, LSGAN, cycle 10, identity 0.5, pool 50, flips. Each run times 30 steps after 3
warm-up steps; the reference's own per-iteration prints (compute time × batch + data time) are
summed, culturegan's bench times the 30 steps. Peak memory is each process's max RSS
(/usr/bin/time -v), and, sampled every 50 ms, its peak anonymous and file-backed resident parts
(`peak_anon_mb`, `peak_file_mb`; the medians' ratio of the former is `anon_ratio`). Each run
also records `steal_share`, the share of the machine's CPU time that the hypervisor took while
it ran (/proc/stat; on a busy host's VM figures move by tens of percent, docs/benchmarks.md "The
AMX box"), and `host_speed_before`, the host's speed at fixed
one-thread work just before it (culturegan.hostspeed), which on a VM can halve within a minute
with no steal reported. Not a test: a benchmark for docs/benchmarks.md.

The reference is not part of this project: clone it yourself and give its folder and a python
that can run it (torch 2.14.1 and its imports, e.g. dominate and wandb for the 2025 upstream):

    python scripts/bench_vs_reference.py --ref-dir ../ref --ref-python ../ref/.venv/bin/python \\
        --data data --size 64 --blocks 6 --ngf 32 --batch 4 --runs 2 --precision bf16-full bf16

`--data` is a prepared data root (`culturegan prepare`) at image size `--size` holding the pair's
styles; the reference reads the same PNGs (symlinked as trainA/trainB). Upstream versions from
before the 2025 one start a visdom display and ask for a GPU by default: add
`--ref-arg=--display_id --ref-arg=0 --ref-arg=--gpu_ids --ref-arg=-1` (stop 46 ran upstream
00d5574, 2021, that way).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from culturegan.hostspeed import host_speed
from culturegan.hoststeal import StealMeter
from culturegan.peakmem import PeakMemory

ROOT = Path(__file__).resolve().parents[1]
STEPS, WARMUP = 30, 3
ITER = re.compile(r"\(epoch: \d+, iters: \d+, time: ([\d.]+), data: ([\d.]+)\)")
RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def bench_params(args: argparse.Namespace, out: Path) -> Path:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["image_size"] = args.size
    p["data"]["root"] = str(Path(args.data).resolve())
    t = p["train"]
    t.update(objective="cyclegan", crop_size=None, augment=[], flip=True, pairs=[args.pair])
    t["generator"].update(ngf=args.ngf, n_blocks=args.blocks, upsample="transposed", residual=False, norm="instance")
    t["discriminator"].update(ndf=64, n_layers=3, r1_gamma=0.0, norm="instance")
    t["cyclegan"].update(lambda_cycle=10.0, lambda_identity=0.5, pool_size=50, source_cycle_scale=1.0)
    path = out / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def reference_dataset(args: argparse.Namespace, out: Path) -> Path:
    source, target = args.pair.split("-")
    ds = out / "dataset"
    for sub, style in (("trainA", source), ("trainB", target)):
        (ds / sub).mkdir(parents=True, exist_ok=True)
        files = sorted((Path(args.data) / "styles" / style / "train").glob("*.png"))
        if not files:
            sys.exit(f"no train PNGs of style {style!r} under {args.data}/styles: prepare that data first")
        for f in files:
            link = ds / sub / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    return ds


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[str, dict[str, float | None]]:
    """The command's output; its peak RSS in MB (/usr/bin/time), peak anonymous and file-backed
    resident MB (PeakMemory), and the host's steal share while it ran."""
    with StealMeter() as steal:  # a busy host slows every run unevenly: keep its share beside each figure
        proc = subprocess.Popen(
            ["/usr/bin/time", "-v", *cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        # /usr/bin/time's child is the command; 50 ms samples are enough beside its max RSS
        with PeakMemory(proc.pid, descendants=True, interval=0.05) as peak:
            text, _ = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{text[-3000:]}")
    return text, {
        "peak_rss_mb": int(RSS.findall(text)[-1]) / 1024,
        "peak_anon_mb": round(peak.anon / 2**20, 1),
        "peak_file_mb": round(peak.file / 2**20, 1),
        "steal_share": steal.share,
    }


def run_reference(args: argparse.Namespace, ds: Path, name: str) -> dict[str, float | None]:
    b = args.batch
    cmd = [
        args.ref_python, "train.py", "--dataroot", str(ds), "--name", name, "--model", "cycle_gan",
        "--load_size", str(args.size), "--crop_size", str(args.size), "--netG", f"resnet_{args.blocks}blocks",
        "--ngf", str(args.ngf), "--ndf", "64", "--batch_size", str(b), "--no_html", "--n_epochs", "1",
        "--n_epochs_decay", "0", "--print_freq", str(b), "--num_threads", "0",
        "--max_dataset_size", str((STEPS + WARMUP) * b), "--save_epoch_freq", "1000",
        "--checkpoints_dir", str(ds.parent / "ref_checkpoints"), *args.ref_arg,
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    text, mem = timed(cmd, Path(args.ref_dir), env)
    # 'time' is one iteration's compute time divided by the batch size, 'data' its loading time
    its = [float(t) * b + float(d) for t, d in ITER.findall(text)]
    if len(its) < STEPS + WARMUP:
        sys.exit(f"the reference printed {len(its)} iterations, expected {STEPS + WARMUP}")
    return {"images_per_s": b * STEPS / sum(its[WARMUP : WARMUP + STEPS]), **mem}


def run_ours(args: argparse.Namespace, params: Path, spec: str) -> dict[str, float | None]:
    # "bf16" etc.: as training runs; "bf16:serial": CycleGAN's directions in turn, not side by side;
    # "bf16:cl": channels_last (NHWC) networks and inputs; "bf16:compile": torch.compile (its
    # compile is part of the warm-up, not of the timed steps); modes combine, "bf16:serial,cl"
    precision, _, spec_modes = spec.partition(":")
    modes = set(filter(None, spec_modes.split(",")))
    unknown = modes - {"serial", "cl", "compile"}
    if unknown:
        sys.exit(f"--precision {spec!r}: unknown mode(s) {sorted(unknown)}; known: serial, cl, compile")
    side_by_side = False if "serial" in modes else None
    channels_last = True if "cl" in modes else None
    compile_ = True if "compile" in modes else None
    code = (
        "import json; from pathlib import Path; from culturegan.config import load_params; "
        "from culturegan.training.bench import bench_train; "
        f"r = bench_train(load_params({str(params)!r}), data_root=Path({str(Path(args.data).resolve())!r}), "
        f"precision={precision!r}, batch_size={args.batch}, steps={STEPS}, rounds=1, warmup={WARMUP}, "
        f"side_by_side={side_by_side!r}, channels_last={channels_last!r}, compile={compile_!r}); "
        "print('RESULT', json.dumps(r['tuned']))"
    )
    text, mem = timed([sys.executable, "-c", code], ROOT)
    result = json.loads(re.search(r"RESULT (.*)", text).group(1))
    return {"images_per_s": result["images_per_s"], **mem}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref-dir", required=True)
    ap.add_argument("--ref-python", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument(
        "--ref-arg", action="append", default=[],
        help="one more argument for the reference's train.py, repeatable: '--ref-arg=--display_id "
        "--ref-arg=0 --ref-arg=--gpu_ids --ref-arg=-1' for upstream versions that still start a "
        "visdom display and ask for a GPU by default (2021)",
    )
    ap.add_argument("--pair", default="photo-ukiyoe")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument(
        "--precision", nargs="+", default=["bf16-full", "bf16"],
        help="culturegan variants, each a train.precision, optionally with ':serial' (the two "
        "directions in turn rather than side by side in two threads), ':cl' (channels_last), "
        "':compile' (torch.compile), or several (':serial,cl')",
    )
    ap.add_argument("--out", type=Path, help="append the result as one JSON line here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params, ds = bench_params(args, work), reference_dataset(args, work)
        runs: dict[str, list[dict[str, Any]]] = {"reference": [], **{p: [] for p in args.precision}}
        for i in range(args.runs):  # alternating, so load from other processes hits all alike
            # each run with the host's speed at fixed work just before it (culturegan.hostspeed):
            # on a VM it can change by 2x within a minute
            speed = host_speed()
            runs["reference"].append({**run_reference(args, ds, f"bench{i}"), "host_speed_before": speed})
            for precision in args.precision:
                speed = host_speed()
                runs[precision].append({**run_ours(args, params, precision), "host_speed_before": speed})
            print(json.dumps({k: v[-1] for k, v in runs.items()}), file=sys.stderr)
    measures = ("images_per_s", "peak_rss_mb", "peak_anon_mb")
    med = {k: {m: statistics.median(r[m] for r in v) for m in measures} for k, v in runs.items()}
    ref = med["reference"]
    result = {
        "config": {k: getattr(args, k) for k in ("pair", "size", "blocks", "ngf", "batch", "runs")},
        "runs": runs,
        "median": med,
        "speedup": {p: round(med[p]["images_per_s"] / ref["images_per_s"], 3) for p in args.precision},
        "rss_ratio": {p: round(med[p]["peak_rss_mb"] / ref["peak_rss_mb"], 3) for p in args.precision},
        "anon_ratio": {p: round(med[p]["peak_anon_mb"] / ref["peak_anon_mb"], 3) for p in args.precision},
    }
    print(json.dumps(result, indent=1))
    if args.out:
        with args.out.open("a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
