"""The train stage: one GAN per culture pair (CycleGAN, CUT or FastCUT), resumable after a crash.

This module holds the loop (`train_pair`, `_train_loop`), the state a checkpoint captures
(`TrainState`) and what a checkpoint must match to be resumed (`run_fingerprint`). The objectives
(networks, optimisers, one update step each, and the code-name/paper-name glossary) are in
culturegan.training.objectives; sample grids and the written generators in
culturegan.training.outputs.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from culturegan.codehash import installed_source_hash, source_hash
from culturegan.config import Pair, Params, TrainConfig, size_problem
from culturegan.errors import ConfigError
from culturegan.fileio import atomic_write_bytes
from culturegan.models.layoutcheck import check_channels_last
from culturegan.models.losses import ImagePool
from culturegan.models.networks import count_params
from culturegan.training.adam import LinearDecay
from culturegan.training.checkpoint import (
    load_checkpoint,
    load_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from culturegan.training.dataset import PairImages, UnpairedSampler, load_pair
from culturegan.training.ema import EMA
from culturegan.training.objectives import (
    CycleGANNets,
    Nets,
    Optimizers,
    build_nets,
    build_optimizers,
    compute_nets,
    train_step,
)
from culturegan.training.outputs import write_outputs, write_sample_grid
from culturegan.training.runtime import (
    Runtime,
    World,
    distributed,
    linear_decay,
    resolve_device,
    resolve_precision,
    sync_batchnorm,
)

__all__ = [
    "TrainState",
    "make_runtime",
    "run_fingerprint",
    "train_pair",
]

log = logging.getLogger(__name__)


class Tracker(Protocol):
    """What the trainer needs from experiment tracking (culturegan.tracking provides it)."""

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...


def make_runtime(
    cfg: TrainConfig,
    device: torch.device,
    precision: str,
    world: World,
    seed: int,
    *,
    tuned: bool = True,
) -> Runtime:
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    pools = {}
    if cfg.objective == "cyclegan":
        pools = {"a": ImagePool(cfg.cyclegan.pool_size), "b": ImagePool(cfg.cyclegan.pool_size)}
    return Runtime(
        device=device,
        precision=precision,
        channels_last=cfg.channels_last and tuned,
        batch_calls=tuned and cfg.generator.norm != "batch" and cfg.discriminator.norm != "batch",
        split_threads=split_threads(cfg, device) if tuned else 0,
        world=world,
        rng=torch.Generator().manual_seed(seed),
        pools=pools,
        scaler=scaler,
    )


def split_threads(cfg: TrainConfig, device: torch.device) -> int:
    """Intra-op threads for each of CycleGAN's two directions run side by side
    (Runtime.side_by_side), or 0 to run them in turn.

    On a CPU with two or more torch threads, the small networks of a CycleGAN step use two cores
    better as two single-threaded halves than as one step split operator by operator
    (docs/benchmarks.md). Not for batch norm (its statistics would be taken over one direction's
    images instead of the whole call's), DiffAugment (its draws from the shared RNG would
    come in no fixed order) nor torch.compile (compiled code calls back into Python under
    autocast's locks: two threads can deadlock on it and the interpreter lock).
    """
    threads = torch.get_num_threads()
    batch_norm = "batch" in (cfg.generator.norm, cfg.generator.decoder_norm, cfg.discriminator.norm)
    if device.type != "cpu" or cfg.objective != "cyclegan" or threads < 2 or batch_norm or cfg.augment:
        return 0
    if cfg.compile:
        return 0
    return threads // 2


def check_sizes(cfg: TrainConfig, image_size: int) -> None:
    """The load-time size rules of `Params`, again for configs built another way (bench)."""
    problem = size_problem(cfg, image_size)
    if problem:
        raise ConfigError(problem, hint="see data.image_size and train in params.yaml")


# The package's source that shapes a training run besides its config: the src/culturegan paths
# that the train stage of dvc.yaml depends on (tests/test_training.py keeps the two equal).
TRAINING_CODE = ("training", "models", "data/manifest.py", "torchfile.py")


def training_code_hash() -> str:
    """The fingerprint's code part: the hash of this installed package's TRAINING_CODE."""
    return installed_source_hash(TRAINING_CODE)


def code_hash(package: Path) -> str:
    """The hash of the TRAINING_CODE in `package` (codehash.source_hash)."""
    return source_hash(package, TRAINING_CODE)


def run_fingerprint(params: Params, pair: Pair, seed: int | None = None) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: everything that shapes the model or its
    training, the training `seed` (default params.seed) included. The step count is part of it,
    since the lr schedule is laid out over `train.steps`: a run with other steps is another run
    (issue: a shorter run silently returned the longer model). So is the training code: after
    `dvc repro` reruns a train stage because its code changed, a finished checkpoint of the old
    code would otherwise be "resumed" at its last step and returned as the new model."""
    t = params.train
    if t.objective == "cyclegan":
        losses = t.cyclegan.model_dump()
    else:
        losses = {**t.cut.model_dump(), "lambda_nce": t.lambda_nce, "nce_idt": t.nce_idt}
    return {
        "pair": str(pair),
        "objective": t.objective,
        "image_size": params.data.image_size,
        "seed": params.seed if seed is None else seed,
        "generator": t.generator.model_dump(),
        "discriminator": t.discriminator.model_dump(),
        "losses": losses,
        "optimiser": {"lr": t.lr, "beta1": t.beta1, "beta2": t.beta2, "batch_size": t.batch_size},
        "schedule": {"steps": t.steps, "decay_start": t.decay_start},
        "flip": t.flip,
        "crop_size": t.crop_size,
        "ema": t.ema,
        "augment": list(t.augment),
        "code": training_code_hash(),
    }


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= _flat(f"{prefix}.{k}" if prefix else str(k), v)
        return out
    return {prefix: value}


CHECKPOINT_KEYS = ("nets", "ema", "opts", "scheds", "scaler", "pools", "rng", "progress")


def _generator_names(nets: Nets) -> tuple[str, ...]:
    return ("g_ab", "g_ba") if isinstance(nets, CycleGANNets) else ("g",)


@dataclass
class TrainState:
    """Everything a checkpoint holds: networks, optimisers, lr schedules, the gradient scaler,
    image pools, every RNG (data sampler included), the step and the time spent so far."""

    nets: Nets
    opts: Optimizers
    scheds: dict[str, LinearDecay]
    sampler: UnpairedSampler
    rt: Runtime
    ema: dict[str, EMA] = field(default_factory=dict)  # averaged generators, by net name
    step: int = 0
    seconds: float = 0.0  # training time over all sessions of this run
    losses: dict[str, float] = field(default_factory=dict)  # the last logged ones

    def update_ema(self) -> None:
        named = self.nets.named()
        for name, avg in self.ema.items():
            avg.update(named[name])

    def output_nets(self) -> Nets:
        """The networks whose generators are written out and sampled: the weight averages when
        train.ema is on, else the live ones."""
        return replace(self.nets, **{k: v.module for k, v in self.ema.items()})

    def state_dict(self, run: dict[str, Any]) -> dict[str, Any]:
        rt = self.rt
        return {
            "run": run,
            "step": self.step,
            "nets": {k: m.state_dict() for k, m in self.nets.named().items()},
            "ema": {k: e.state_dict() for k, e in self.ema.items()},
            "opts": {"g": self.opts.g.state_dict(), "d": self.opts.d.state_dict()},
            "scheds": {k: s.state_dict() for k, s in self.scheds.items()},
            "scaler": rt.scaler.state_dict() if rt.scaler is not None else {},
            "pools": {k: p.state_dict() for k, p in rt.pools.items()},
            "rng": rng_state(
                {"sampler": self.sampler.rng.get_state(), "trainer": rt.rng.get_state()}
            ),
            "progress": {"seconds": self.seconds, "losses": self.losses},
        }

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        for name, module in self.nets.named().items():
            load_state(module, state["nets"][name], path, f"network {name}")
        self.rt.unbind_shadow()  # bf16-full: the next step copies the loaded weights
        for name, avg in self.ema.items():
            load_state(avg, state["ema"].get(name), path, f"the weight average of {name}")
        load_state(self.opts.g, state["opts"]["g"], path, "the generator optimiser")
        load_state(self.opts.d, state["opts"]["d"], path, "the discriminator optimiser")
        for name, sched in self.scheds.items():
            load_state(sched, state["scheds"][name], path, f"the {name} lr schedule")
        if self.rt.scaler is not None and state["scaler"]:
            self.rt.scaler.load_state_dict(state["scaler"])
        for name, pool in self.rt.pools.items():
            load_state(pool, state["pools"][name], path, f"image pool {name}")
        set_rng_state(state["rng"])
        self.sampler.rng.set_state(state["rng"]["sampler"])
        self.rt.rng.set_state(state["rng"]["trainer"])
        self.step = int(state["step"])
        self.seconds = float(state["progress"]["seconds"])
        self.losses = dict(state["progress"]["losses"])


def build_state(
    params: Params, data: PairImages, device: torch.device, precision: str, world: World, seed: int
) -> TrainState:
    """Fresh networks (seeded with the training `seed`: identical on every rank), optimisers,
    schedules and samplers."""
    cfg = params.train
    torch.manual_seed(seed)
    nets = build_nets(cfg)
    sync_batchnorm(nets.named().values(), world, device)  # before optimisers and EMA copies
    for m in nets.named().values():
        m.to(device)
        if cfg.channels_last:
            m.to(memory_format=torch.channels_last)
    opts = build_optimizers(nets, cfg, fast=True)
    ema = {}
    if cfg.ema > 0:
        named = nets.named()
        ema = {k: EMA(named[k], cfg.ema) for k in _generator_names(nets)}
    factor = linear_decay(cfg.steps, cfg.decay_start)
    return TrainState(
        nets=nets,
        opts=opts,
        scheds={"g": LinearDecay(opts.g, factor), "d": LinearDecay(opts.d, factor)},
        sampler=UnpairedSampler(
            data, cfg.batch_size, seed + 1, cfg.flip, world.rank, world.size, cfg.crop_size
        ),
        rt=make_runtime(cfg, device, precision, world, seed + 2),
        ema=ema,
    )


def _train_loop(
    state: TrainState,
    cfg: TrainConfig,
    pair: Pair,
    tracker: Tracker | None,
    sample: Callable[[int], None],
    checkpoint: Callable[[], None],
) -> None:
    """Steps from state.step to cfg.steps; logs, samples and checkpoints along the way."""
    world = state.rt.world
    bar = tqdm(
        total=cfg.steps,
        initial=state.step,
        desc=str(pair),
        unit="step",
        dynamic_ncols=True,
        disable=not (world.is_main and sys.stderr.isatty()),
    )
    seconds_before = state.seconds
    t0 = window_t0 = time.perf_counter()
    window_start = state.step
    # Each step's losses over the last one's: a term that only some steps compute (lazy R1) is
    # logged at its latest value instead of going missing from the log points between.
    losses: dict[str, torch.Tensor] = {}
    while state.step < cfg.steps:
        losses |= train_step(state.sampler.next(), state.nets, state.opts, cfg, state.rt, state.step)
        for sched in state.scheds.values():
            sched.step()
        state.update_ema()
        state.step += 1
        state.seconds = seconds_before + time.perf_counter() - t0
        bar.update(1)
        is_last = state.step == cfg.steps
        if state.step % cfg.log_every == 0 or is_last:
            state.losses = world.mean(losses)  # the loop's only wait for the device
            now = time.perf_counter()
            ips = (state.step - window_start) * cfg.batch_size / max(now - window_t0, 1e-9)
            window_t0, window_start = now, state.step
            bar.set_postfix(
                {**{k: f"{v:.3f}" for k, v in state.losses.items()}, "img/s": f"{ips:.1f}"}
            )
            if tracker is not None and world.is_main:
                metrics = {f"loss/{k}": v for k, v in state.losses.items()}
                lr = state.opts.g.param_groups[0]["lr"]
                tracker.log_metrics({**metrics, "lr": lr, "images_per_s": ips}, state.step)
        if state.step % cfg.sample_every == 0 and not is_last:
            sample(state.step)
        if state.step % cfg.checkpoint_every == 0 or is_last:
            checkpoint()
    bar.close()


def train_pair(
    params: Params,
    pair: Pair,
    data_root: Path,
    out_dir: Path,
    tracker: Tracker | None = None,
    resume: bool = True,
    checkpoint_dir: Path | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Train the GAN of one culture pair '<source>-<target>' into `out_dir` (runs/gan/<pair>/seed<k>).

    `seed` is the training seed (networks' init, data sampler, image pool; default params.seed);
    params.seed itself is left to the stages that sample with it, e.g. the evaluation's KID subsets.

    Writes `checkpoint_dir/last.pt` (default `out_dir/checkpoints`) every
    train.checkpoint_every steps, samples/step_*.png (kept in `checkpoint_dir/samples` too, so a
    resumed run still delivers every sample),
    generator.pt (source->target; generator_reverse.pt too for CycleGAN) and train_metrics.json.
    With `resume` (the default) a compatible checkpoint is continued, and a finished run only
    rewrites its outputs; an incompatible or damaged one is a CheckpointError. Under torchrun the
    global batch is split across processes and the result equals a single process's.
    """
    cfg = params.train
    seed = params.seed if seed is None else seed
    data_root, out_dir = Path(data_root), Path(out_dir)
    check_sizes(cfg, params.data.image_size)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    if cfg.channels_last:
        check_channels_last(device, precision)  # ms; a ConfigError where the norm's kernels fault
    with distributed(device) as world:
        data = load_pair(data_root, pair, params.data.image_size, device)
        state = build_state(params, data, device, precision, world, seed)
        ckpt_path = Path(checkpoint_dir or out_dir / "checkpoints") / "last.pt"
        run = run_fingerprint(params, pair, seed)
        if resume and ckpt_path.exists():
            state.load_state_dict(load_checkpoint(ckpt_path, run, CHECKPOINT_KEYS), ckpt_path)
            log.info(
                "%s: resuming from %s at step %d of %d", pair, ckpt_path, state.step, cfg.steps
            )
        start = state.step
        if cfg.compile:
            for m in compute_nets(state.nets, state.rt).named().values():
                m.compile()  # in place: state_dict keys stay those of the plain module
        log.info(
            "%s: %s on %s, %s, %d process(es)", pair, cfg.objective, device, precision, world.size
        )
        if tracker is not None and world.is_main:
            tracker.log_params(
                {
                    "pair": str(pair),
                    "device": str(device),
                    "precision_used": precision,
                    "world_size": world.size,
                    **_flat("train", cfg.model_dump(mode="json")),
                }
            )

        sources = data.a[: cfg.sample_count]
        # Samples are kept beside the checkpoint and copied into the output at the end: DVC
        # deletes a stage's outputs before it reruns, and a resumed run must still deliver the
        # samples of the steps it does not train again.
        sample_dir = ckpt_path.parent / "samples"

        def sample(step: int) -> None:
            if world.is_main:
                path = write_sample_grid(
                    state.output_nets(), sources, sample_dir / f"step_{step:06d}.png", device
                )
                if tracker is not None:
                    tracker.log_artifact(path, "samples")

        def checkpoint() -> None:
            if world.is_main:
                save_checkpoint(ckpt_path, state.state_dict(run))
            world.barrier()

        if state.step < cfg.steps:
            _train_loop(state, cfg, pair, tracker, sample, checkpoint)
        elif world.is_main:
            log.info(
                "%s: %s holds all %d steps; rewriting outputs only", pair, ckpt_path, state.step
            )
        sample(state.step)

        images = state.step * cfg.batch_size
        metrics = {
            "pair": str(pair),
            "objective": cfg.objective,
            "seed": seed,  # the training seed
            "steps": state.step,
            "resumed_from": start,
            "images": images,
            "seconds": round(state.seconds, 3),
            "images_per_s": round(images / state.seconds, 3) if state.seconds > 0 else None,
            "final_losses": state.losses,
            "precision": precision,
            "device": str(device),
            "world_size": world.size,
            "generator_params": count_params(state.nets.generators[0]),
        }
        paths: dict[str, Path] = {}
        if world.is_main:
            meta = {
                "pair": str(pair),
                "source": pair.source,
                "target": pair.target,
                "objective": cfg.objective,
                "image_size": params.data.image_size,
                "steps": state.step,
            }
            paths = write_outputs(state.output_nets(), out_dir, meta, metrics)
            for png in sorted(sample_dir.glob("step_*.png")):
                atomic_write_bytes(out_dir / "samples" / png.name, png.read_bytes())
            if tracker is not None:
                tracker.log_artifact(paths["metrics"])
        world.barrier()
    return {**metrics, "checkpoint": str(ckpt_path), **{k: str(v) for k, v in paths.items()}}
