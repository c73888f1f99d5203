"""The training objectives: the networks each one trains, their optimisers, and one update step.

Code names vs paper names:
  CycleGAN (Zhu et al. 2017): g_ab = G: X->Y, g_ba = F: Y->X, d_b = D_Y (judges domain B, the
    target style), d_a = D_X; loss "cycle_a" = ||F(G(x)) - x||_1, "idt_b" = ||G(y) - y||_1.
  CUT (Park et al. 2020): g = G, d = D, head = H (the MLP of PatchNCE, "netF" in the paper code);
    "nce" = PatchNCE(X, G(X)), "nce_idt" = PatchNCE(Y, G(Y)). FastCUT = CUT with lambda_NCE 10
    and no identity term.
Domain A is the pair's source style, B its target style.

The loop that drives these steps, its state and checkpoints live in culturegan.training.trainer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from culturegan.config import TrainConfig
from culturegan.models.losses import GANLoss, PatchNCELoss
from culturegan.models.networks import (
    PatchDiscriminator,
    PatchSampleMLP,
    ResnetGenerator,
    init_weights,
    sample_patch_ids,
)
from culturegan.training.adam import Optimizer
from culturegan.training.augment import diff_augment
from culturegan.training.runtime import Runtime, make_optimizer, set_requires_grad

__all__ = [
    "CUTNets",
    "CycleGANNets",
    "Nets",
    "Optimizers",
    "build_nets",
    "build_optimizers",
    "compute_nets",
    "cut_step",
    "cyclegan_step",
    "train_step",
]

_gan_loss = GANLoss()


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
    g: Optimizer  # generators (and CUT's head)
    d: Optimizer  # discriminators


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
        d=make_optimizer(params(nets.discriminators), cfg.lr * cfg.discriminator.lr_scale, betas, fast),
    )


def _lazy_weight(weight: float, every: int, step: int) -> float:
    """A regulariser's weight at this step, lazily (Karras et al. 2020): `weight` on every step
    when `every` is 1, else `every` * `weight` on the last step of every `every` (steps k-1,
    2k-1, ...) and 0 on the others: the same weight on average for about 1/k of the cost."""
    return weight * every if step % every == every - 1 else 0.0


def _r1_gamma(cfg: TrainConfig, step: int) -> float:
    """The R1 weight at this step (train.discriminator.r1_every)."""
    return _lazy_weight(cfg.discriminator.r1_gamma, cfg.discriminator.r1_every, step)


def _identity_weight(cfg: TrainConfig, step: int) -> float:
    """The identity terms' weight at this step (train.cyclegan.identity_every); on the steps
    without them the generators run on a third fewer images."""
    c = cfg.cyclegan
    return _lazy_weight(c.lambda_identity * c.lambda_cycle, c.identity_every, step)


def _r1_input(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """A discriminator input that R1 can differentiate D by: a fresh leaf that requires grad."""
    return x.detach().requires_grad_(True) if gamma > 0 else x


def _scores(d: nn.Module, inputs: torch.Tensor, gamma: float) -> torch.Tensor:
    """D's scores of its inputs in a discriminator update. On steps with the R1 penalty
    (gamma > 0) through D's own forward, which bypasses a torch.compile of D (train.compile):
    R1 differentiates D's input gradient again, which inductor's compiled backward cannot (it
    fails with "compiled with non-empty donated buffers"). The same computation either way."""
    return d.forward(inputs) if gamma > 0 else d(inputs)


def _r1_penalty(real_scores: torch.Tensor, inputs: torch.Tensor, rows: slice, rt: Runtime) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): the squared norm of D's gradient with respect to its input at
    real images, mean over images. `inputs` is what D was called on (after DiffAugment), `rows`
    the real images among them, `real_scores` D's scores of those rows. The gradient graph is kept
    (double backward), so the penalty trains D to be flat around the real data.

    Under fp16 the gradient is taken of the scaled scores and unscaled, as for the weights.
    """
    scale = rt.scaler.get_scale() if rt.scaler is not None else 1.0
    (grad,) = torch.autograd.grad(real_scores.float().sum() * scale, inputs, create_graph=True)
    return (grad[rows].float() / scale).pow(2).flatten(1).sum(1).mean()


def _with_r1(loss_d: torch.Tensor, loss_r1: torch.Tensor | None, gamma: float) -> torch.Tensor:
    """D's loss to minimise: its GAN loss plus the R1 term (gamma / 2 times the penalty), when
    this step has one. One spelling for both objectives; the logged "d" losses exclude it."""
    return loss_d if loss_r1 is None else loss_d + 0.5 * gamma * loss_r1


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
    step: int = 0,
) -> dict[str, torch.Tensor]:
    """One CycleGAN update: generators (LSGAN + cycle + identity), then both discriminators.
    `step` (0-based) schedules the lazy R1 penalty and the lazy identity terms.

    Returns the losses as detached 0-dim tensors: the loop syncs with the device only to log.
    """
    real_a, real_b = (rt.prepare(x) for x in batch)  # (B, 3, H, W) each, in [-1, 1]
    n = real_a.shape[0]

    aug = _discriminator_input(cfg, rt)

    lam_cyc = cfg.cyclegan.lambda_cycle
    lam_idt = _identity_weight(cfg, step)
    use_idt = lam_idt > 0

    set_requires_grad(nets.discriminators, False)
    opts.g.zero_grad(set_to_none=True)
    if rt.split_threads:
        # The two directions' terms, each with its own backward, in two threads at once: the
        # sum of their gradients is the gradient of loss_g below.
        def direction(
            g: nn.Module, g_back: nn.Module, d: nn.Module, real: torch.Tensor, cycle_scale: float
        ) -> tuple[torch.Tensor, ...]:
            with rt.autocast():
                fake = g(real)
                out = g_back(torch.cat([fake, real]) if use_idt else fake)
                loss_gan = _gan_loss(d(aug(fake)), True)
                loss_cycle = _l1(out[:n], real) * (lam_cyc * cycle_scale)
                loss_idt = _l1(out[n:], real) * lam_idt if use_idt else real.new_zeros((), dtype=torch.float32)
            rt.backward(loss_gan + loss_cycle + loss_idt, nets.generators)
            return fake.detach(), loss_gan, loss_cycle, loss_idt

        (fake_b, loss_g_ab, loss_cycle_a, loss_idt_a), (fake_a, loss_g_ba, loss_cycle_b, loss_idt_b) = (
            rt.side_by_side(
                lambda: direction(nets.g_ab, nets.g_ba, nets.d_b, real_a, cfg.cyclegan.source_cycle_scale),
                lambda: direction(nets.g_ba, nets.g_ab, nets.d_a, real_b, 1.0),
            )
        )
        rt.optimizer_step(opts.g, nets.generators)
    else:
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
            loss_cycle_a = _l1(rec_a, real_a) * (lam_cyc * cfg.cyclegan.source_cycle_scale)  # x -> G -> F
            loss_cycle_b = _l1(rec_b, real_b) * lam_cyc
            loss_g = loss_g_ab + loss_g_ba + loss_cycle_a + loss_cycle_b + loss_idt_a + loss_idt_b
        rt.backward_step(loss_g, opts.g, nets.generators)

    set_requires_grad(nets.discriminators, True)
    opts.d.zero_grad(set_to_none=True)
    pooled_b = rt.pool_query("b", fake_b)
    pooled_a = rt.pool_query("a", fake_a)
    gamma = _r1_gamma(cfg, step)
    if rt.split_threads:

        def judge(d: nn.Module, real: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            with rt.autocast():
                inputs = _r1_input(aug(torch.cat([real, pooled])), gamma)
                out = _scores(d, inputs, gamma)
                loss_d = (_gan_loss(out[:n], True) + _gan_loss(out[n:], False)) * 0.5
                loss_r1 = _r1_penalty(out[:n], inputs, slice(0, n), rt) if gamma > 0 else None
            rt.backward(_with_r1(loss_d, loss_r1, gamma), [d])
            return loss_d, loss_r1

        (loss_d_b, r1_b), (loss_d_a, r1_a) = rt.side_by_side(
            lambda: judge(nets.d_b, real_b, pooled_b), lambda: judge(nets.d_a, real_a, pooled_a)
        )
        loss_r1 = r1_b + r1_a if gamma > 0 else None
        rt.optimizer_step(opts.d, nets.discriminators)
    else:
        with rt.autocast():
            if rt.batch_calls:
                in_b = _r1_input(aug(torch.cat([real_b, pooled_b])), gamma)
                in_a = _r1_input(aug(torch.cat([real_a, pooled_a])), gamma)
                out_b, out_a = _scores(nets.d_b, in_b, gamma), _scores(nets.d_a, in_a, gamma)
                real_b_scores, real_a_scores, reals = out_b[:n], out_a[:n], slice(0, n)
                loss_d_b = (_gan_loss(real_b_scores, True) + _gan_loss(out_b[n:], False)) * 0.5
                loss_d_a = (_gan_loss(real_a_scores, True) + _gan_loss(out_a[n:], False)) * 0.5
            else:
                reals = slice(None)
                in_b = _r1_input(aug(real_b), gamma)
                real_b_scores = _scores(nets.d_b, in_b, gamma)
                loss_d_b = (_gan_loss(real_b_scores, True) + _gan_loss(nets.d_b(aug(pooled_b)), False)) * 0.5
                in_a = _r1_input(aug(real_a), gamma)
                real_a_scores = _scores(nets.d_a, in_a, gamma)
                loss_d_a = (_gan_loss(real_a_scores, True) + _gan_loss(nets.d_a(aug(pooled_a)), False)) * 0.5
            loss_r1 = None
            if gamma > 0:
                loss_r1 = _r1_penalty(real_b_scores, in_b, reals, rt) + _r1_penalty(real_a_scores, in_a, reals, rt)
        rt.backward_step(_with_r1(loss_d_a + loss_d_b, loss_r1, gamma), opts.d, nets.discriminators)
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
        # Logged at the every-step weight, so that a lazy run's figures read as an eager run's.
        k = cfg.cyclegan.identity_every
        losses |= {"idt_a": loss_idt_a / k, "idt_b": loss_idt_b / k}
    if loss_r1 is not None:
        losses["r1"] = loss_r1
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
    step: int = 0,
) -> dict[str, torch.Tensor]:
    """One CUT/FastCUT update: discriminator first, then generator + head (paper code order).
    `step` (0-based) schedules the lazy R1 penalty."""
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
    gamma = _r1_gamma(cfg, step)
    with rt.autocast():
        if rt.batch_calls:
            d_in = _r1_input(aug(torch.cat([fake_b.detach(), real_b])), gamma)
            out = _scores(nets.d, d_in, gamma)
            real_scores, reals = out[n:], slice(n, None)
            loss_d_fake = _gan_loss(out[:n], False)
        else:
            loss_d_fake = _gan_loss(nets.d(aug(fake_b.detach())), False)
            d_in = _r1_input(aug(real_b), gamma)
            real_scores, reals = _scores(nets.d, d_in, gamma), slice(None)
        loss_d_real = _gan_loss(real_scores, True)
        loss_d = (loss_d_fake + loss_d_real) * 0.5
        loss_r1 = None
        if gamma > 0:
            loss_r1 = _r1_penalty(real_scores, d_in, reals, rt)
    rt.backward_step(_with_r1(loss_d, loss_r1, gamma), opts.d, [nets.d])

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
        if loss_r1 is not None:
            losses["r1"] = loss_r1
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
    step: int = 0,
) -> dict[str, torch.Tensor]:
    """Optimisation step `step` (0-based) of the objective that `nets` belongs to; returns its
    losses. Under bf16-full the step runs on bf16 copies of `nets` (compute_nets), and `nets`
    stay the fp32 masters that the optimisers step."""
    run_on = compute_nets(nets, rt)
    if isinstance(run_on, CycleGANNets):
        losses = cyclegan_step(batch, run_on, opts, cfg, rt, step)
    else:
        losses = cut_step(batch, run_on, opts, cfg, rt, step)
    if run_on is not nets:
        rt.sync_buffers()
    return losses


def compute_nets(nets: Nets, rt: Runtime) -> Nets:
    """The networks a step runs: `nets` themselves, or, when the runtime's precision keeps the
    weights in a lower precision (bf16-full), copies of them in that dtype. The copies are made
    from `nets` on first use (and again after Runtime.unbind_shadow, as after a checkpoint load);
    their gradients go to the parameters of `nets`, the fp32 masters that Adam steps, that the
    weight average follows and that checkpoints and outputs hold (Runtime.backward_step).

    Without autocast's casts around every convolution, and with padding, norms and their
    backward in bf16 too, a CPU step of the reference's 64 px networks (ngf 32) is about 10 %
    faster than under bf16 autocast; at 128 px with ngf 64, and at the default's networks, it
    gains nothing measurable (docs/benchmarks.md).
    """
    dtype = rt.weights_dtype
    if dtype is None:
        return nets
    if rt.shadow is None:
        named = nets.named()
        copies = {k: copy.deepcopy(m).to(dtype) for k, m in named.items()}
        rt.bind_shadow(type(nets)(**copies), list(named.values()), list(copies.values()))
    return rt.shadow
