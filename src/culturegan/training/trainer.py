"""The train stage: one GAN per culture pair (CycleGAN, CUT or FastCUT), resumable after a crash.

Code names vs paper names:
  CycleGAN (Zhu et al. 2017): g_ab = G: X->Y, g_ba = F: Y->X, d_b = D_Y (judges domain B, the
    target style), d_a = D_X; loss "cycle_a" = ||F(G(x)) - x||_1, "idt_b" = ||G(y) - y||_1.
  CUT (Park et al. 2020): g = G, d = D, head = H (the MLP of PatchNCE, "netF" in the paper code);
    "nce" = PatchNCE(X, G(X)), "nce_idt" = PatchNCE(Y, G(Y)). FastCUT = CUT with lambda_NCE 10
    and no identity term.
Domain A is the pair's source style, B its target style.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from culturegan.config import Params, TrainConfig, parse_pair, size_problem
from culturegan.errors import ConfigError
from culturegan.fileio import atomic_path, atomic_write_text
from culturegan.models.losses import GANLoss, ImagePool, PatchNCELoss
from culturegan.models.networks import (
    PatchDiscriminator,
    PatchSampleMLP,
    ResnetGenerator,
    count_params,
    init_weights,
    sample_patch_ids,
)
from culturegan.training.augment import diff_augment
from culturegan.training.checkpoint import (
    load_checkpoint,
    load_generator,
    load_state,
    rng_state,
    save_checkpoint,
    save_generator,
    set_rng_state,
)
from culturegan.training.dataset import PairImages, UnpairedSampler, load_pair, to_uint8
from culturegan.training.ema import EMA
from culturegan.training.runtime import (
    Runtime,
    World,
    distributed,
    eval_mode,
    linear_decay,
    make_optimizer,
    resolve_device,
    resolve_precision,
    set_requires_grad,
    sync_batchnorm,
)

__all__ = [
    "TrainState",
    "build_nets",
    "build_optimizers",
    "cut_step",
    "cyclegan_step",
    "load_generator",
    "make_runtime",
    "train_pair",
    "train_step",
]

log = logging.getLogger(__name__)
_gan_loss = GANLoss()


class Tracker(Protocol):
    """What the trainer needs from experiment tracking (culturegan.tracking provides it)."""

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...


@dataclass
class CycleGANNets:
    g_ab: ResnetGenerator
    g_ba: ResnetGenerator
    d_a: PatchDiscriminator
    d_b: PatchDiscriminator

    @property
    def generators(self) -> list[nn.Module]:
        return [self.g_ab, self.g_ba]

    @property
    def discriminators(self) -> list[nn.Module]:
        return [self.d_a, self.d_b]

    def named(self) -> dict[str, nn.Module]:
        return {"g_ab": self.g_ab, "g_ba": self.g_ba, "d_a": self.d_a, "d_b": self.d_b}


@dataclass
class CUTNets:
    g: ResnetGenerator
    d: PatchDiscriminator
    head: PatchSampleMLP

    @property
    def generators(self) -> list[nn.Module]:
        return [self.g, self.head]  # H is trained with G, by the same loss

    @property
    def discriminators(self) -> list[nn.Module]:
        return [self.d]

    def named(self) -> dict[str, nn.Module]:
        return {"g": self.g, "d": self.d, "head": self.head}


Nets = CycleGANNets | CUTNets


@dataclass
class Optimizers:
    g: torch.optim.Optimizer  # generators (and CUT's head)
    d: torch.optim.Optimizer  # discriminators


def _generator(cfg: TrainConfig) -> ResnetGenerator:
    g = init_weights(ResnetGenerator(cfg.generator))
    g.reset_output()  # residual mode: start as the identity
    return g


def build_nets(cfg: TrainConfig) -> Nets:
    """Fresh networks with the paper's N(0, 0.02) init, drawn from the global torch RNG."""
    if cfg.objective == "cyclegan":
        return CycleGANNets(
            g_ab=_generator(cfg),
            g_ba=_generator(cfg),
            d_a=init_weights(PatchDiscriminator(cfg.discriminator)),
            d_b=init_weights(PatchDiscriminator(cfg.discriminator)),
        )
    g = _generator(cfg)
    head = PatchSampleMLP([g.channels[i] for i in cfg.cut.nce_layers], cfg.cut.head_dim)
    return CUTNets(
        g=g, d=init_weights(PatchDiscriminator(cfg.discriminator)), head=init_weights(head)
    )


def build_optimizers(nets: Nets, cfg: TrainConfig, fast: bool) -> Optimizers:
    def params(modules: list[nn.Module]) -> list[nn.Parameter]:
        return [p for m in modules for p in m.parameters()]

    betas = (cfg.beta1, cfg.beta2)
    return Optimizers(
        g=make_optimizer(params(nets.generators), cfg.lr, betas, fast),
        d=make_optimizer(params(nets.discriminators), cfg.lr, betas, fast),
    )


def _l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(x.float(), y.float())


def _discriminator_input(cfg: TrainConfig, rt: Runtime) -> Callable[[torch.Tensor], torch.Tensor]:
    """What every discriminator input, real or fake, goes through: DiffAugment with train.augment
    (the identity when it is empty), drawing from the checkpointed trainer RNG."""
    return lambda x: diff_augment(x, cfg.augment, rt.rng)


def cyclegan_step(
    batch: tuple[torch.Tensor, torch.Tensor],
    nets: CycleGANNets,
    opts: Optimizers,
    cfg: TrainConfig,
    rt: Runtime,
) -> dict[str, torch.Tensor]:
    """One CycleGAN update: generators (LSGAN + cycle + identity), then both discriminators.

    Returns the losses as detached 0-dim tensors: the loop syncs with the device only to log.
    """
    real_a, real_b = (rt.prepare(x) for x in batch)  # (B, 3, H, W) each, in [-1, 1]
    n = real_a.shape[0]

    aug = _discriminator_input(cfg, rt)

    lam_cyc = cfg.cyclegan.lambda_cycle
    lam_idt = cfg.cyclegan.lambda_identity * lam_cyc
    use_idt = lam_idt > 0

    set_requires_grad(nets.discriminators, False)
    opts.g.zero_grad(set_to_none=True)
    with rt.autocast():
        if rt.batch_calls:
            # Norms act per image (instance norm), so one pass over a concatenation computes
            # exactly what separate passes would, with larger, faster convolutions.
            out = nets.g_ab(torch.cat([real_a, real_b]) if use_idt else real_a)
            fake_b, idt_b = out[:n], out[n:]
            out = nets.g_ba(torch.cat([real_b, fake_b, real_a] if use_idt else [real_b, fake_b]))
            fake_a, rec_a, idt_a = out[:n], out[n : 2 * n], out[2 * n :]
            rec_b = nets.g_ab(fake_a)
        else:
            fake_b = nets.g_ab(real_a)
            rec_a = nets.g_ba(fake_b)
            fake_a = nets.g_ba(real_b)
            rec_b = nets.g_ab(fake_a)
            if use_idt:
                idt_b, idt_a = nets.g_ab(real_b), nets.g_ba(real_a)
        zero = real_a.new_zeros((), dtype=torch.float32)
        loss_idt_b = _l1(idt_b, real_b) * lam_idt if use_idt else zero  # G(y) ~ y
        loss_idt_a = _l1(idt_a, real_a) * lam_idt if use_idt else zero  # F(x) ~ x
        loss_g_ab = _gan_loss(nets.d_b(aug(fake_b)), True)
        loss_g_ba = _gan_loss(nets.d_a(aug(fake_a)), True)
        loss_cycle_a = _l1(rec_a, real_a) * lam_cyc
        loss_cycle_b = _l1(rec_b, real_b) * lam_cyc
        loss_g = loss_g_ab + loss_g_ba + loss_cycle_a + loss_cycle_b + loss_idt_a + loss_idt_b
    rt.backward_step(loss_g, opts.g, nets.generators)

    set_requires_grad(nets.discriminators, True)
    opts.d.zero_grad(set_to_none=True)
    pooled_b = rt.pool_query("b", fake_b)
    pooled_a = rt.pool_query("a", fake_a)
    with rt.autocast():
        if rt.batch_calls:
            out_b = nets.d_b(aug(torch.cat([real_b, pooled_b])))
            out_a = nets.d_a(aug(torch.cat([real_a, pooled_a])))
            loss_d_b = (_gan_loss(out_b[:n], True) + _gan_loss(out_b[n:], False)) * 0.5
            loss_d_a = (_gan_loss(out_a[:n], True) + _gan_loss(out_a[n:], False)) * 0.5
        else:
            loss_d_b = (
                _gan_loss(nets.d_b(aug(real_b)), True) + _gan_loss(nets.d_b(aug(pooled_b)), False)
            ) * 0.5
            loss_d_a = (
                _gan_loss(nets.d_a(aug(real_a)), True) + _gan_loss(nets.d_a(aug(pooled_a)), False)
            ) * 0.5
    rt.backward_step(loss_d_a + loss_d_b, opts.d, nets.discriminators)
    if rt.scaler is not None:
        rt.scaler.update()
    losses = {
        "g_ab": loss_g_ab,
        "g_ba": loss_g_ba,
        "cycle_a": loss_cycle_a,
        "cycle_b": loss_cycle_b,
        "d_a": loss_d_a,
        "d_b": loss_d_b,
    }
    if use_idt:
        losses |= {"idt_a": loss_idt_a, "idt_b": loss_idt_b}
    return {k: v.detach() for k, v in losses.items()}


def _patch_nce(
    feats_q: list[torch.Tensor],
    feats_k: list[torch.Tensor],
    head: PatchSampleMLP,
    cfg: TrainConfig,
    rt: Runtime,
) -> torch.Tensor:
    """PatchNCE averaged over layers: each output patch must pick its own input patch."""
    n = feats_k[0].shape[0]
    ids = sample_patch_ids(feats_k, cfg.cut.num_patches, rt.rng)
    # Keys get no gradient in PatchNCE (the paper code detaches them): skip their graph.
    with torch.no_grad():
        keys = head([f.detach() for f in feats_k], ids)
    queries = head(feats_q, ids)
    nce = PatchNCELoss(cfg.cut.nce_t)
    total = sum(nce(q, k, n).mean() for q, k in zip(queries, keys, strict=True))
    return total * cfg.lambda_nce / len(queries)


def cut_step(
    batch: tuple[torch.Tensor, torch.Tensor],
    nets: CUTNets,
    opts: Optimizers,
    cfg: TrainConfig,
    rt: Runtime,
) -> dict[str, torch.Tensor]:
    """One CUT/FastCUT update: discriminator first, then generator + head (paper code order)."""
    real_a, real_b = (rt.prepare(x) for x in batch)
    n = real_a.shape[0]

    aug = _discriminator_input(cfg, rt)

    layers = tuple(cfg.cut.nce_layers)
    use_idt = cfg.nce_idt
    real = torch.cat([real_a, real_b]) if use_idt else real_a  # (B or 2B, 3, H, W)
    flipped = cfg.cut.flip_equivariance and bool(torch.rand((), generator=rt.rng) < 0.5)
    with rt.autocast():
        if flipped:
            fake, feats_real = nets.g(real.flip(3)), None
        else:
            # The keys of PatchNCE are G's features of the real images: take them from this pass
            # instead of a second encoder pass (they are detached either way).
            fake, feats_real = nets.g.forward_with_features(real, layers)
    fake_b = fake[:n]

    set_requires_grad([nets.d], True)
    opts.d.zero_grad(set_to_none=True)
    with rt.autocast():
        if rt.batch_calls:
            out = nets.d(aug(torch.cat([fake_b.detach(), real_b])))
            loss_d_fake, loss_d_real = _gan_loss(out[:n], False), _gan_loss(out[n:], True)
        else:
            loss_d_fake = _gan_loss(nets.d(aug(fake_b.detach())), False)
            loss_d_real = _gan_loss(nets.d(aug(real_b)), True)
        loss_d = (loss_d_fake + loss_d_real) * 0.5
    rt.backward_step(loss_d, opts.d, [nets.d])

    set_requires_grad([nets.d], False)
    opts.g.zero_grad(set_to_none=True)
    with rt.autocast():
        loss_g_gan = _gan_loss(nets.d(aug(fake_b)), True) * cfg.cut.lambda_gan
        if rt.batch_calls or not use_idt:
            # queries for X and, with the identity term, for Y in one pass
            feats_q = nets.g.features(fake, layers)
        else:
            q_x, q_y = nets.g.features(fake_b, layers), nets.g.features(fake[n:], layers)
            feats_q = [torch.cat(pair) for pair in zip(q_x, q_y, strict=True)]
        if flipped:
            feats_q = [f.flip(3) for f in feats_q]  # back to the input's orientation
        if feats_real is None or not rt.batch_calls:
            with torch.no_grad():
                feats_real = nets.g.features(real, layers)
        loss_nce = _patch_nce(
            [f[:n] for f in feats_q], [f[:n] for f in feats_real], nets.head, cfg, rt
        )
        losses = {"d": loss_d, "g_gan": loss_g_gan, "nce": loss_nce}
        if use_idt:
            loss_nce_idt = _patch_nce(
                [f[n:] for f in feats_q], [f[n:] for f in feats_real], nets.head, cfg, rt
            )
            losses["nce_idt"] = loss_nce_idt
            loss_g = loss_g_gan + (loss_nce + loss_nce_idt) * 0.5
        else:
            loss_g = loss_g_gan + loss_nce
    rt.backward_step(loss_g, opts.g, nets.generators)
    if rt.scaler is not None:
        rt.scaler.update()
    return {k: v.detach() for k, v in losses.items()}


def train_step(
    batch: tuple[torch.Tensor, torch.Tensor],
    nets: Nets,
    opts: Optimizers,
    cfg: TrainConfig,
    rt: Runtime,
) -> dict[str, torch.Tensor]:
    """One optimisation step of the objective that `nets` belongs to; returns its losses."""
    if isinstance(nets, CycleGANNets):
        return cyclegan_step(batch, nets, opts, cfg, rt)
    return cut_step(batch, nets, opts, cfg, rt)


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
        world=world,
        rng=torch.Generator().manual_seed(seed),
        pools=pools,
        scaler=scaler,
    )


def check_sizes(cfg: TrainConfig, image_size: int) -> None:
    """The load-time size rules of `Params`, again for configs built another way (bench)."""
    problem = size_problem(cfg, image_size)
    if problem:
        raise ConfigError(problem, hint="see data.image_size and train in params.yaml")


def run_fingerprint(params: Params, pair: str, seed: int | None = None) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: everything that shapes the model or its
    training, the training `seed` (default params.seed) included. The step count is part of it,
    since the lr schedule is laid out over `train.steps`: a run with other steps is another run
    (issue: a shorter run silently returned the longer model)."""
    t = params.train
    if t.objective == "cyclegan":
        losses = t.cyclegan.model_dump()
    else:
        losses = {**t.cut.model_dump(), "lambda_nce": t.lambda_nce, "nce_idt": t.nce_idt}
    return {
        "pair": pair,
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
    }


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= _flat(f"{prefix}.{k}" if prefix else str(k), v)
        return out
    return {prefix: value}


@torch.no_grad()
def write_sample_grid(nets: Nets, sources: torch.Tensor, path: Path, device: torch.device) -> Path:
    """One row per source image: source -> generated (-> reconstructed for CycleGAN), as a PNG."""
    with eval_mode(nets.named().values()):
        x = sources.to(device)
        src = x.float() / 127.5 - 1.0
        if isinstance(nets, CycleGANNets):
            fake = nets.g_ab(src)
            columns = [src, fake, nets.g_ba(fake)]
        else:
            columns = [src, nets.g(src)]
    rows = torch.cat([to_uint8(c) for c in columns], dim=3)  # (N, 3, H, cols*W)
    grid = torch.cat(list(rows), dim=1)  # (3, N*H, cols*W)
    with atomic_path(path) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).cpu().numpy()).save(tmp, format="PNG")
    return path


def _write_outputs(
    nets: Nets, out_dir: Path, meta: dict[str, Any], metrics: dict[str, Any]
) -> dict[str, Path]:
    generator = nets.g_ab if isinstance(nets, CycleGANNets) else nets.g
    paths = {"generator": out_dir / "generator.pt"}
    save_generator(
        paths["generator"], generator, {**meta, "direction": f"{meta['source']}->{meta['target']}"}
    )
    if isinstance(nets, CycleGANNets):
        paths["generator_reverse"] = out_dir / "generator_reverse.pt"
        reverse = {**meta, "source": meta["target"], "target": meta["source"]}
        save_generator(
            paths["generator_reverse"],
            nets.g_ba,
            {**reverse, "direction": f"{meta['target']}->{meta['source']}"},
        )
    paths["metrics"] = out_dir / "train_metrics.json"
    atomic_write_text(paths["metrics"], json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return paths


CHECKPOINT_KEYS = ("nets", "ema", "opts", "scheds", "scaler", "pools", "rng", "progress")


def _generator_names(nets: Nets) -> tuple[str, ...]:
    return ("g_ab", "g_ba") if isinstance(nets, CycleGANNets) else ("g",)


@dataclass
class TrainState:
    """Everything a checkpoint holds: networks, optimisers, lr schedules, the gradient scaler,
    image pools, every RNG (data sampler included), the step and the time spent so far."""

    nets: Nets
    opts: Optimizers
    scheds: dict[str, torch.optim.lr_scheduler.LambdaLR]
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
    LambdaLR = torch.optim.lr_scheduler.LambdaLR
    return TrainState(
        nets=nets,
        opts=opts,
        scheds={"g": LambdaLR(opts.g, factor), "d": LambdaLR(opts.d, factor)},
        sampler=UnpairedSampler(
            data, cfg.batch_size, seed + 1, cfg.flip, world.rank, world.size, cfg.crop_size
        ),
        rt=make_runtime(cfg, device, precision, world, seed + 2),
        ema=ema,
    )


def _train_loop(
    state: TrainState,
    cfg: TrainConfig,
    pair: str,
    tracker: Tracker | None,
    sample: Callable[[int], None],
    checkpoint: Callable[[], None],
) -> None:
    """Steps from state.step to cfg.steps; logs, samples and checkpoints along the way."""
    world = state.rt.world
    bar = tqdm(
        total=cfg.steps,
        initial=state.step,
        desc=pair,
        unit="step",
        dynamic_ncols=True,
        disable=not (world.is_main and sys.stderr.isatty()),
    )
    seconds_before = state.seconds
    t0 = window_t0 = time.perf_counter()
    window_start = state.step
    while state.step < cfg.steps:
        losses = train_step(state.sampler.next(), state.nets, state.opts, cfg, state.rt)
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
    pair: str,
    data_root: Path,
    out_dir: Path,
    tracker: Tracker | None = None,
    resume: bool = True,
    checkpoint_dir: Path | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Train the GAN of one culture pair '<source>-<target>' into `out_dir` (runs/<pair>/seed<k>).

    `seed` is the training seed (networks' init, data sampler, image pool; default params.seed);
    params.seed itself is left to the stages that sample with it, e.g. the evaluation's KID subsets.

    Writes `checkpoint_dir/last.pt` (default `out_dir/checkpoints`) every
    train.checkpoint_every steps, samples/step_*.png,
    generator.pt (source->target; generator_reverse.pt too for CycleGAN) and train_metrics.json.
    With `resume` (the default) a compatible checkpoint is continued, and a finished run only
    rewrites its outputs; an incompatible or damaged one is a CheckpointError. Under torchrun the
    global batch is split across processes and the result equals a single process's.
    """
    cfg = params.train
    seed = params.seed if seed is None else seed
    source, target = parse_pair(pair)
    data_root, out_dir = Path(data_root), Path(out_dir)
    check_sizes(cfg, params.data.image_size)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
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
            for m in state.nets.named().values():
                m.compile()  # in place: state_dict keys stay those of the plain module
        log.info(
            "%s: %s on %s, %s, %d process(es)", pair, cfg.objective, device, precision, world.size
        )
        if tracker is not None and world.is_main:
            tracker.log_params(
                {
                    "pair": pair,
                    "device": str(device),
                    "precision_used": precision,
                    "world_size": world.size,
                    **_flat("train", cfg.model_dump(mode="json")),
                }
            )

        sources = data.a[: cfg.sample_count]

        def sample(step: int) -> None:
            if world.is_main:
                path = write_sample_grid(
                    state.output_nets(), sources, out_dir / "samples" / f"step_{step:06d}.png", device
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
            "pair": pair,
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
                "pair": pair,
                "source": source,
                "target": target,
                "objective": cfg.objective,
                "image_size": params.data.image_size,
                "steps": state.step,
            }
            paths = _write_outputs(state.output_nets(), out_dir, meta, metrics)
            if tracker is not None:
                tracker.log_artifact(paths["metrics"])
        world.barrier()
    return {**metrics, "checkpoint": str(ckpt_path), **{k: str(v) for k, v in paths.items()}}
