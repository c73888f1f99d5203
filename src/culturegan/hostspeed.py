"""A fixed one-thread workload timed beside benchmarks, so that figures from different sessions
can be set side by side.

Instances of one machine kind have run the same training step 1.7 times apart with no steal
visible in /proc/stat (docs/benchmarks.md), so a figure alone does not say how fast its host was.
`host_speed()` times, in one thread, a 3 x 3 convolution's forward and backward (64 -> 64
channels, 4 x 32 x 32; fp32, and bf16 where the CPU has native bf16) and a 32 MB memory copy, and
`culturegan bench train` and `scripts/bench_vs_reference.py` record it beside their figures. A
step that is mostly convolutions scales with the first, one that is mostly overhead and copies more
with the last; it is a yardstick for comparing sessions, not a model of any step.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

CONV_SHAPE = (4, 64, 32, 32)  # N, C, H, W of the convolution's input; C -> C channels, 3 x 3
COPY_VALUES = 8 * 2**20  # fp32 values copied: 32 MB


def _median_seconds(fn: Callable[[], object], budget_s: float, min_repeats: int = 3) -> float:
    """Median wall time of `fn` over repeats for about `budget_s` seconds, after two warm-up calls
    (oneDNN builds its kernels on the first)."""
    fn()
    fn()
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < min_repeats or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def host_speed(budget_s: float = 0.3) -> dict[str, float | None]:
    """The host's speed at fixed work in one thread: `conv_fp32_gflops`, `conv_bf16_gflops` (None
    without native bf16) and `copy_gbps` (bytes read and written). Each takes about `budget_s`
    seconds. The caller's torch thread count is restored."""
    from culturegan.training.runtime import cpu_has_native_bf16

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        n, c, h, w = CONV_SHAPE
        flops = 3 * 2 * n * c * h * w * c * 9  # forward, input gradient, weight gradient
        gen = torch.Generator().manual_seed(0)
        out: dict[str, float | None] = {}
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            if dtype is torch.bfloat16 and not cpu_has_native_bf16():
                out[f"conv_{name}_gflops"] = None
                continue
            x = torch.randn(n, c, h, w, generator=gen).to(dtype).requires_grad_()
            weight = (torch.randn(c, c, 3, 3, generator=gen) * 0.05).to(dtype).requires_grad_()
            grad_out = torch.ones(n, c, h, w, dtype=dtype)

            def conv_step(x: torch.Tensor = x, weight: torch.Tensor = weight, g: torch.Tensor = grad_out) -> object:
                return torch.autograd.grad(F.conv2d(x, weight, padding=1), (x, weight), g)

            out[f"conv_{name}_gflops"] = round(flops / _median_seconds(conv_step, budget_s) / 1e9, 2)
        src, dst = torch.ones(COPY_VALUES), torch.zeros(COPY_VALUES)
        seconds = _median_seconds(lambda: dst.copy_(src), budget_s)
        out["copy_gbps"] = round(2 * COPY_VALUES * src.element_size() / seconds / 1e9, 2)
        return out
    finally:
        torch.set_num_threads(threads)
