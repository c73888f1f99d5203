"""Where a training step's time goes: torch.profiler over the bench's tuned (or plain) path,
operators summed by category (self CPU time).

    OMP_NUM_THREADS=1 python scripts/profile_step.py --size 64 --ngf 32 --blocks 6 --ndf 64 \\
        --batch 4 --precision bf16 [--plain] [--steps 5]

Prints a JSON summary: ms per step by category and the top operators.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from culturegan.config import Params
from culturegan.training.bench import _Path

# First matching substring of the operator name wins.
CATEGORIES = [
    ("optimizer", ("adam", "optimizer", "_foreach", "lerp", "addcdiv", "addcmul")),
    ("conv backward", ("convolution_backward",)),
    ("conv", ("conv", "mkldnn_convolution")),
    ("instance norm backward", ("batch_norm_backward", "native_batch_norm_backward")),
    ("instance norm", ("batch_norm", "instance_norm", "_batch_norm")),
    ("casts/copies", ("aten::to", "_to_copy", "copy_", "clone", "contiguous")),
    ("pad/upsample", ("reflection_pad", "upsample", "pad")),
    ("cat/stack/index", ("aten::cat", "aten::stack", "index", "select", "slice")),
    ("activations", ("relu", "tanh", "leaky", "threshold")),
    ("losses/elementwise", ("mse", "l1", "abs", "sub", "pow", "mean", "add", "mul", "div", "sum", "sgn", "neg")),
]


def category(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--ndf", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--plain", action="store_true", help="the plain path (fp32, unfused, unbatched)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--objective", default="cyclegan")
    ap.add_argument("--side-by-side", action="store_true",
                    help="the two directions in two threads, as training does on >= 2 threads")
    args = ap.parse_args(argv)

    params = Params.model_validate({
        "data": {"image_size": args.size},
        "train": {"objective": args.objective, "batch_size": args.batch,
                  "generator": {"ngf": args.ngf, "n_blocks": args.blocks},
                  "discriminator": {"ndf": args.ndf}},
    })
    precision = "fp32" if args.plain else args.precision
    path = _Path(params.train, torch.device("cpu"), precision, not args.plain, params.seed,
                 side_by_side=None if args.side_by_side else False)
    gen = torch.Generator().manual_seed(0)
    batches = [tuple(torch.rand(args.batch, 3, args.size, args.size, generator=gen) * 2 - 1
                     for _ in range(2)) for _ in range(4)]

    def batch(i: int):
        return batches[i % 4]

    path.run(batch, 3)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        seconds = path.run(batch, args.steps)
    events = prof.key_averages()
    by_cat: dict[str, float] = defaultdict(float)
    total = 0.0
    for e in events:
        if e.key.startswith("ProfilerStep"):
            continue
        by_cat[category(e.key)] += e.self_cpu_time_total
        total += e.self_cpu_time_total
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:20]
    per_step = 1e-3 / args.steps  # us total -> ms per step
    print(json.dumps({
        "config": vars(args) | {"precision_used": precision, "threads": torch.get_num_threads()},
        "step_ms_profiled": round(seconds * 1e3 / args.steps, 1),
        "self_cpu_ms_per_step": round(total * per_step, 1),
        "by_category_ms": {k: round(v * per_step, 1) for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
        "by_category_share": {k: round(v / total, 3) for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
        "top_ops": [{"op": e.key, "ms": round(e.self_cpu_time_total * per_step, 2), "calls_per_step": e.count / args.steps}
                    for e in top],
    }, indent=1))


if __name__ == "__main__":
    main()
