"""Training-step benchmark: images/s and peak memory of the configured objective, on random
tensors or (`data_root`) on prepared images drawn through the training loader each step.

`baseline=True` also times plain PyTorch (fp32, eager, contiguous, unfused Adam, one forward per
input as the paper code does, a resize-convolution as its three layers instead of ResizeConv's one
transposed convolution, instance norm as `F.instance_norm` rather than InstanceNorm's group norm)
in the same process, so the tuned path's gain is one ratio.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from culturegan.config import Pair, Params, TrainConfig
from culturegan.models.networks import InstanceNorm, ResizeConv
from culturegan.peakmem import PeakMemory
from culturegan.training.dataset import UnpairedSampler, load_pair
from culturegan.training.objectives import (
    Nets,
    Optimizers,
    build_nets,
    build_optimizers,
    compute_nets,
    train_step,
)
from culturegan.training.runtime import Runtime, World, resolve_precision
from culturegan.training.trainer import check_sizes, make_runtime

Batches = Callable[[int], tuple[torch.Tensor, torch.Tensor]]  # step index -> (real_a, real_b)


class _Path:
    """One way of running the training step: networks, optimisers and runtime."""

    def __init__(
        self,
        cfg: TrainConfig,
        device: torch.device,
        precision: str,
        tuned: bool,
        seed: int,
        compile_backend: str | None = None,
        side_by_side: bool | None = None,
    ):
        self.cfg, self.device, self.tuned = cfg, device, tuned
        torch.manual_seed(seed)
        self.nets: Nets = build_nets(cfg)
        for m in self.nets.named().values():
            for layer in m.modules():
                if isinstance(layer, (ResizeConv, InstanceNorm)):
                    layer.fast = tuned
            m.to(device)
            if self.tuned and cfg.channels_last:
                m.to(memory_format=torch.channels_last)
        self.opts: Optimizers = build_optimizers(self.nets, cfg, fast=tuned)
        self.rt: Runtime = make_runtime(cfg, device, precision, World(), seed, tuned=tuned)
        if side_by_side is False:  # otherwise trainer.split_threads' rule, as in training
            self.rt.split_threads = 0
        if cfg.compile:
            kwargs = {"backend": compile_backend} if compile_backend else {}
            for m in compute_nets(self.nets, self.rt).named().values():
                m.compile(**kwargs)
        self.precision = precision
        self.warmup_s = 0.0
        self.steps_done = 0

    def run(self, batches: Batches, steps: int) -> float:
        """Seconds for `steps` steps (drawing each batch included), waiting for the device at the
        end only."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        for i in range(steps):
            # a step count that runs on across rounds, so lazy R1 falls on every k-th step
            losses = train_step(batches(i), self.nets, self.opts, self.cfg, self.rt, self.steps_done)
            self.steps_done += 1
        # Reading a loss waits for all queued work (CUDA) before the clock stops.
        float(next(iter(losses.values())))
        return time.perf_counter() - t0


def _measure_round(path: _Path, batches: Batches, steps: int) -> tuple[float, int]:
    """Seconds for `steps` steps and peak memory in bytes (CUDA allocated, or CPU process RSS)."""
    if path.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(path.device)
        seconds = path.run(batches, steps)
        return seconds, torch.cuda.max_memory_allocated(path.device)
    with PeakMemory() as memory:
        seconds = path.run(batches, steps)
    return seconds, memory.rss


def bench_train(
    params: Params,
    pair: Pair | None = None,
    device: str = "cpu",
    precision: str | None = None,
    channels_last: bool | None = None,
    compile: bool | None = None,  # mirrors train.compile
    batch_size: int | None = None,
    steps: int | None = None,
    baseline: bool = False,
    warmup: int = 3,
    rounds: int = 3,
    compile_backend: str | None = None,
    tuned: bool = True,
    data_root: Path | None = None,
    side_by_side: bool | None = None,
) -> dict[str, Any]:
    """Full training steps (G and D updates) per second, after `warmup` steps, at the config of
    `params.train` with the given overrides; random images of data.image_size, no data needed,
    or with `data_root` (a prepared data folder) the pair's train images, loaded as the trainer
    loads them and drawn by its sampler (random pick, flips, crops) inside every timed step.

    Returns images/s (global batch images per second, the median of `rounds` timings of `steps`
    steps each) and peak memory; with `baseline`, the plain-PyTorch figures and the speedup too.
    `warmup_s` is the time of the warm-up steps (with torch.compile: mostly compiling);
    `tuned=False` (with `baseline`) times the plain path alone, e.g. for its own peak memory;
    `compile_backend` picks a torch.compile backend other than inductor (e.g. "eager" for a
    quick check of the compile path without a C++ compiler). `side_by_side=False` runs
    CycleGAN's two directions in turn where training would run them side by side in two threads
    (trainer.split_threads); None leaves the choice to the trainer's rule.
    """
    overrides: dict[str, Any] = {}
    if channels_last is not None:
        overrides["channels_last"] = channels_last
    if compile is not None:
        overrides["compile"] = compile
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    cfg = params.train.model_copy(update=overrides)
    size = params.data.image_size
    check_sizes(cfg, size)
    dev = torch.device(device)
    used_precision = resolve_precision(precision or cfg.precision, dev)
    steps = steps or 10
    pair = pair or params.train.pairs[0]
    data_info: dict[str, Any] = {"data": "random"}
    if data_root is not None:
        t0 = time.perf_counter()
        data = load_pair(Path(data_root), pair, size, dev)
        sampler = UnpairedSampler(
            data, cfg.batch_size, params.seed + 1, cfg.flip, crop=cfg.crop_size
        )
        data_info = {
            "data": str(data_root),
            "data_load_s": round(time.perf_counter() - t0, 3),
            "data_images": {"a": len(data.a), "b": len(data.b)},
        }

        def batches(i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return sampler.next()
    else:
        gen = torch.Generator().manual_seed(params.seed)
        fixed = [
            tuple(
                torch.rand(cfg.batch_size, 3, size, size, generator=gen).mul_(2).sub_(1).to(dev)
                for _ in range(2)
            )
            for _ in range(4)
        ]

        def batches(i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return fixed[i % len(fixed)]

    if not (tuned or baseline):
        raise ValueError("bench_train needs tuned, baseline or both")
    paths = {}
    if tuned:
        paths["tuned"] = _Path(cfg, dev, used_precision, True, params.seed, compile_backend, side_by_side)
    if baseline:
        plain = cfg.model_copy(update={"compile": False})
        paths["baseline"] = _Path(plain, dev, "fp32", False, params.seed)
    for p in paths.values():
        p.warmup_s = p.run(batches, warmup) if warmup > 0 else 0.0

    results: dict[str, Any] = {
        "pair": str(pair),
        **data_info,
        "device": str(dev),
        "objective": cfg.objective,
        "image_size": size,
        "batch_size": cfg.batch_size,
        "generator": cfg.generator.model_dump(),
        "discriminator": cfg.discriminator.model_dump(),
        "steps": steps,
        "rounds": rounds,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    peaks = dict.fromkeys(paths, 0)
    # Rounds alternate between the paths so that load from other processes hits both alike.
    for _ in range(rounds):
        for name, p in paths.items():
            seconds, peak = _measure_round(p, batches, steps)
            times[name].append(seconds)
            peaks[name] = max(peaks[name], peak)
    for name, p in paths.items():
        step_s = statistics.median(times[name]) / steps
        peak = peaks[name]
        results[name] = {
            "precision": p.precision,
            "channels_last": p.rt.channels_last,
            "compile": p.cfg.compile,
            "fused_adam": p.tuned,
            "batched_calls": p.rt.batch_calls,
            "split_threads": p.rt.split_threads,
            "warmup_s": round(p.warmup_s, 3),
            "step_ms": round(step_s * 1e3, 2),
            "images_per_s": round(cfg.batch_size / step_s, 3),
            "peak_mem_mb": round(peak / 2**20, 1),
            "peak_mem_kind": "cuda_max_allocated" if dev.type == "cuda" else "process_rss",
        }
    if baseline and tuned:
        results["speedup"] = round(
            results["tuned"]["images_per_s"] / results["baseline"]["images_per_s"], 3
        )
    if dev.type == "cpu":
        results["process_max_rss_mb"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        )
    return results
