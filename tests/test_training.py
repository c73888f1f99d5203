"""GAN training: steps of each objective, crash-safe resume, checkpoint errors, DDP, benchmark.

Everything runs on a tiny manifest of 32x32 PNGs built here, with 8-filter, 1-block networks.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tiny
import torch
import yaml
from conftest import free_port
from PIL import Image
from torch import nn

from culturegan.config import Pair, Params, parse_params
from culturegan.data.manifest import ManifestRow, manifest_frame, write_manifest
from culturegan.errors import CheckpointError, ConfigError
from culturegan.training import objectives, trainer
from culturegan.training.adam import LinearDecay
from culturegan.training.checkpoint import load_generator, read_generator_file
from culturegan.training.dataset import PairImages, UnpairedSampler, to_unit_range
from culturegan.training.objectives import build_nets, build_optimizers, train_step
from culturegan.training.runtime import (
    Runtime,
    World,
    cpu_has_native_bf16,
    linear_decay,
    resolve_precision,
)
from culturegan.training.trainer import make_runtime, train_pair

SIZE = tiny.SIZE
PAIR = Pair("photo", "inkwash")
TINTS = {"photo": (200, 80, 60), "inkwash": (90, 90, 90), "ukiyoe": (40, 90, 200)}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest with three styles of 8 train + 2 test noisy tinted images each."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    rows = []
    for style, tint in TINTS.items():
        for split, n in (("train", 8), ("test", 2)):
            for i in range(n):
                arr = np.clip(rng.normal(tint, 40, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
                rel = f"styles/{style}/{split}/{i:03d}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / rel)
                rows.append(
                    ManifestRow(
                        rel,
                        style,
                        split,
                        f"scene{i}",
                        f"{i:064x}",
                        "test",
                        SIZE,
                        SIZE,
                        "RGB",
                        "0" * 16,
                        40.0,
                    )
                )
    write_manifest(manifest_frame(rows), root)
    return root


# The shared tiny run (tests/tiny.py) in fp32, sampled every 2 steps, with small CUT heads.
TRAIN = {
    "precision": "fp32",
    "sample_every": 2,
    "cut": {"num_patches": 16, "head_dim": 16},
    "cyclegan": {"pool_size": 3},
}


def tiny_params(objective: str = "fastcut", **train: Any) -> Params:
    return tiny.tiny_params({"seed": 3, "train": {**TRAIN, "objective": objective}}, {"train": train})


def _states(nets: objectives.Nets) -> dict[str, torch.Tensor]:
    return {
        f"{n}.{k}": v.detach().clone()
        for n, m in nets.named().items()
        for k, v in m.state_dict().items()
    }


PROBE = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(99)) * 2 - 1


@torch.no_grad()
def _outputs(nets: objectives.Nets) -> dict[str, torch.Tensor]:
    """What each network computes on a fixed probe: compared instead of raw weights, because a
    conv bias right before an affine-free InstanceNorm has a mathematically zero gradient, so
    Adam turns rounding noise there into updates that change nothing downstream."""
    outs = {}
    for name, m in nets.named().items():
        if name != "head":
            m.eval()
            outs[name] = m(PROBE)
    return outs


def _random_batch(n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1, torch.rand(
        n, 3, SIZE, SIZE, generator=g
    ) * 2 - 1


def _setup(params: Params, tuned: bool = True):
    torch.manual_seed(params.seed)
    nets = build_nets(params.train)
    opts = build_optimizers(nets, params.train, fast=tuned)
    rt = make_runtime(
        params.train, torch.device("cpu"), params.train.precision, World(), 0, tuned=tuned
    )
    return nets, opts, rt


OBJECTIVES = [
    ("cyclegan", {}),
    ("cut", {}),
    ("fastcut", {}),
    ("fastcut", {"cut": {"flip_equivariance": True}}),
    ("cut", {"generator": {"norm": "batch"}, "discriminator": {"norm": "batch"}}),
    ("cyclegan", {"generator": {"decoder_norm": "batch"}}),
    (
        "cyclegan",
        {"generator": {"norm": "none"}, "cyclegan": {"lambda_identity": 0.0, "pool_size": 0}},
    ),
    # the recipe's options: DiffAugment on D's inputs, the residual start, the old upsampling
    ("cyclegan", {"augment": ["translation", "cutout", "color"], "generator": {"residual": True}}),
    ("cut", {"augment": ["translation"], "generator": {"upsample": "transposed"}}),
    # the R1 penalty on D, alone and through DiffAugment
    ("cyclegan", {"discriminator": {"r1_gamma": 0.01}}),
    ("cut", {"discriminator": {"r1_gamma": 0.01}, "augment": ["translation", "cutout"]}),
    # anti-aliased downsampling (the CUT paper code's default), with R1 through its BlurPools
    ("cut", {"generator": {"antialias": True}, "discriminator": {"antialias": True, "r1_gamma": 0.01}}),
    ("cyclegan", {"generator": {"antialias": True}, "discriminator": {"antialias": True}}),
]


@pytest.mark.parametrize(("objective", "extra"), OBJECTIVES)
def test_train_step_returns_finite_losses_and_updates_every_network(objective, extra):
    params = tiny_params(objective, **extra)
    nets, opts, rt = _setup(params)
    before = _states(nets)
    losses = train_step(_random_batch(), nets, opts, params.train, rt)
    expected = {
        "cyclegan": {"g_ab", "g_ba", "cycle_a", "cycle_b", "d_a", "d_b"},
        "cut": {"d", "g_gan", "nce", "nce_idt"},
        "fastcut": {"d", "g_gan", "nce"},
    }[objective] | ({"r1"} if params.train.discriminator.r1_gamma > 0 else set())
    assert expected <= set(losses)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    after = _states(nets)
    for name in nets.named():
        changed = [
            k for k in before if k.startswith(name + ".") and not torch.equal(before[k], after[k])
        ]
        assert changed, f"{name} did not change"


@pytest.mark.parametrize("r1_gamma", [0.0, 1.0])
@pytest.mark.parametrize(
    ("objective", "extra"),
    [("cyclegan", {}), ("cyclegan", {"cyclegan": {"lambda_identity": 0.0}}), ("cut", {})],
)
def test_batched_and_side_by_side_steps_compute_the_same_update_as_separate_calls(
    objective, extra, r1_gamma
):
    # The tuned path concatenates inputs into fewer generator/discriminator passes; with
    # per-image normalisation that must not change the maths, the R1 penalty's included (it
    # must take the gradient at the real rows of the concatenation only). On a CPU with two or
    # more threads CycleGAN's tuned step runs its two directions side by side in two threads,
    # each with its own backward: the summed gradients must be the same update again.
    params = tiny_params(objective, discriminator={"r1_gamma": r1_gamma}, **extra)
    ways = [(True, 0), (False, 0)] + ([(True, 1)] if objective == "cyclegan" else [])
    results = []
    for tuned, split in ways:
        nets, opts, rt = _setup(params, tuned=tuned)
        rt.split_threads = split
        for i in range(2):
            losses = train_step(_random_batch(seed=i), nets, opts, params.train, rt, step=i)
        results.append((_outputs(nets), losses))
    s1, l1 = results[0]
    for s2, l2 in results[1:]:
        assert set(l1) == set(l2)
        for k in s1:
            assert torch.allclose(s1[k], s2[k], atol=1e-4), k
        for k in l1:
            assert torch.allclose(l1[k], l2[k], atol=1e-5), k


@pytest.mark.parametrize("batch", [1, 2])
def test_channels_last_steps_compute_the_same_update_as_the_default_layout(batch):
    # train.channels_last changes memory layouts only: a whole step in each layout must train
    # the same networks (FusedAdam's layouts, InstanceNorm's channels-last kernel). Two layer-level
    # torch faults this does not reach are tested at their layers: F.instance_norm's input
    # gradient for a single channels-last image with a channels-last gradient (here the gradients
    # reach the norms in the default layout) and the fused Adam kernel's pairing of mixed layouts.
    # CycleGAN only: CUT's first Adam steps turn rounding noise into whole updates (swapping
    # F.instance_norm for InstanceNorm's group norm, same layout, moves its outputs by 3e-3 here).
    results = []
    for cl in (False, True):
        params = tiny_params("cyclegan", channels_last=cl)
        nets, opts, rt = _setup(params)
        assert rt.channels_last is cl
        if cl:
            for m in nets.named().values():
                m.to(memory_format=torch.channels_last)  # as the trainer does
        for i in range(2):
            train_step(_random_batch(n=batch, seed=i), nets, opts, params.train, rt, step=i)
        results.append(_outputs(nets))
    for k in results[0]:
        assert torch.allclose(results[0][k], results[1][k], atol=1e-5), k


def test_side_by_side_steps_are_bit_reproducible_and_keep_the_thread_count():
    # Two threads add their gradients to the same parameters in no fixed order; a sum of two
    # terms is the same either way, so a seeded run still gives the same weights bit for bit.
    params = tiny_params("cyclegan", discriminator={"r1_gamma": 0.01, "r1_every": 2})
    before = torch.get_num_threads()
    runs = []
    for _ in range(2):
        nets, opts, rt = _setup(params)
        rt.split_threads = 1
        for i in range(3):
            train_step(_random_batch(seed=i), nets, opts, params.train, rt, step=i)
        runs.append(_states(nets))
        assert torch.get_num_threads() == before
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_side_by_side_runs_both_halves_and_raises_either_ones_error():
    rt = Runtime(torch.device("cpu"), split_threads=1)
    before = torch.get_num_threads()
    assert rt.side_by_side(lambda: torch.get_num_threads(), lambda: torch.get_num_threads()) == (1, 1)
    assert torch.get_num_threads() == before

    def fail(name: str):
        def f():
            raise ValueError(name)

        return f

    with pytest.raises(ValueError, match="worker"):
        rt.side_by_side(fail("worker"), lambda: 2)
    with pytest.raises(ValueError, match="here"):
        rt.side_by_side(lambda: 1, fail("here"))
    assert torch.get_num_threads() == before
    assert Runtime(torch.device("cpu")).side_by_side(lambda: 1, lambda: 2) == (1, 2)


def _side_by_side_in_a_forked_child(queue) -> None:
    queue.put(Runtime(torch.device("cpu"), split_threads=1).side_by_side(lambda: "f", lambda: "g"))


def test_side_by_side_works_in_a_process_forked_after_it_ran():
    # The worker thread is not copied into a forked child: the child must make its own instead
    # of waiting forever on a thread that does not exist there.
    import multiprocessing

    assert Runtime(torch.device("cpu"), split_threads=1).side_by_side(lambda: 1, lambda: 2) == (1, 2)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_side_by_side_in_a_forked_child, args=(queue,))
    child.start()
    try:
        assert queue.get(timeout=60) == ("f", "g")
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0


@pytest.mark.parametrize(
    ("threads", "device", "objective", "extra", "expected"),
    [
        (2, "cpu", "cyclegan", {}, 1),
        (4, "cpu", "cyclegan", {}, 2),
        (1, "cpu", "cyclegan", {}, 0),
        (2, "cuda", "cyclegan", {}, 0),
        (2, "cpu", "cut", {}, 0),
        (2, "cpu", "cyclegan", {"generator": {"decoder_norm": "batch"}}, 0),
        (2, "cpu", "cyclegan", {"discriminator": {"norm": "batch"}}, 0),
        (2, "cpu", "cyclegan", {"augment": ["translation"]}, 0),
        (2, "cpu", "cyclegan", {"compile": True}, 0),
    ],
)
def test_directions_run_side_by_side_only_on_a_multi_threaded_cpu_without_batch_norm_or_augment(
    threads, device, objective, extra, expected
):
    cfg = tiny_params(objective, **extra).train
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert trainer.split_threads(cfg, torch.device(device)) == expected
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("objective", "tuned", "split"), [("cyclegan", True, 0), ("cyclegan", False, 0), ("cyclegan", True, 1), ("cut", True, 0), ("cut", False, 0)]
)
def test_r1_steps_call_the_discriminators_forward_not_a_compiled_call(objective, tuned, split):
    # train.compile compiles each network in place (Module.compile), which only module calls go
    # through; R1 differentiates D twice, which inductor's compiled backward cannot. So on R1
    # steps every D call whose input is R1's fresh leaf must bypass the module call (its
    # forward hooks stand in for the compiled call here), and on other steps D is called as usual.
    params = tiny_params(objective, discriminator={"r1_gamma": 0.01, "r1_every": 2})
    nets, opts, rt = _setup(params, tuned=tuned)
    rt.split_threads = split
    calls: list[tuple[int, bool]] = []
    step_now = [0]
    for d in nets.discriminators:
        d.register_forward_pre_hook(
            lambda m, args: calls.append((step_now[0], args[0].is_leaf and args[0].requires_grad))
        )
    for i in range(2):
        step_now[0] = i
        losses = train_step(_random_batch(seed=i), nets, opts, params.train, rt, step=i)
    assert "r1" in losses  # step 1 (r1_every 2) had the penalty
    assert not any(r1_leaf for _, r1_leaf in calls)
    assert {s for s, _ in calls} == {0, 1}  # G's adversarial terms still call D as a module
    # on step 0 (no R1) the discriminator update calls D as a module too: more calls than step 1
    assert sum(s == 0 for s, _ in calls) > sum(s == 1 for s, _ in calls)


def test_r1_penalty_is_the_mean_squared_input_gradient_of_d_at_the_real_rows():
    params = tiny_params("cyclegan")
    nets, _, rt = _setup(params)
    real, fake = _random_batch(n=3)
    # one image at a time: the squared norm of d(sum of its scores)/d(image), by plain autograd
    expected = []
    for image in real:
        x = image[None].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(nets.d_b(x).sum(), x)
        expected.append(grad.pow(2).sum())
    expected = torch.stack(expected).mean()
    both = torch.cat([real, fake]).requires_grad_(True)
    scores = nets.d_b(both)
    penalty = objectives._r1_penalty(scores[:3], both, slice(0, 3), rt)
    assert torch.allclose(penalty, expected, rtol=1e-5)
    # and it is differentiable in D's weights (double backward): a gradient reaches every layer's
    # weights (not the last bias, which shifts every score alike and so moves no input gradient)
    penalty.backward()
    weights = [p for name, p in nets.d_b.named_parameters() if name.endswith("weight")]
    assert weights and all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)


def test_r1_penalty_flattens_d_around_the_real_images():
    # The same discriminator updates with and without R1: with it, D's input gradient at the
    # real images ends up smaller (what the penalty is for).
    norms = {}
    for gamma in (0.0, 10.0):
        params = tiny_params("cyclegan", lr=1e-3, discriminator={"r1_gamma": gamma})
        nets, opts, rt = _setup(params)
        for i in range(15):
            train_step(_random_batch(n=4, seed=i), nets, opts, params.train, rt)
        real = _random_batch(n=4, seed=99)[1].requires_grad_(True)
        (grad,) = torch.autograd.grad(nets.d_b(real).sum(), real)
        norms[gamma] = grad.pow(2).flatten(1).sum(1).mean().item()
    assert norms[10.0] < 0.5 * norms[0.0]


@pytest.mark.parametrize("objective", ["cyclegan", "cut"])
def test_lazy_r1_applies_k_times_the_penalty_on_every_kth_step_and_none_between(objective):
    # r1_every k: on the last step of each k (step % k == k - 1) the update is exactly that of
    # R1 at k * gamma on every step; on the other steps exactly that of no R1.
    def one_step(step: int, gamma: float, every: int):
        params = tiny_params(objective, discriminator={"r1_gamma": gamma, "r1_every": every})
        nets, opts, rt = _setup(params)
        losses = train_step(_random_batch(), nets, opts, params.train, rt, step)
        return _states(nets), losses

    lazy_on, losses_on = one_step(3, 0.5, 4)
    eager, losses_eager = one_step(0, 2.0, 1)
    lazy_off, losses_off = one_step(4, 0.5, 4)
    none, _ = one_step(0, 0.0, 1)
    assert "r1" in losses_on and "r1" not in losses_off
    assert torch.equal(losses_on["r1"], losses_eager["r1"])
    for k in eager:
        assert torch.equal(lazy_on[k], eager[k]), k
        assert torch.equal(lazy_off[k], none[k]), k
    # and the penalty did change D (else the equalities above would say nothing)
    assert any(not torch.equal(eager[k], none[k]) for k in eager if k.startswith("d"))


@pytest.mark.parametrize(("tuned", "split"), [(True, 0), (False, 0), (True, 1)])
def test_lazy_identity_applies_k_times_the_identity_terms_on_every_kth_step_and_none_between(tuned, split):
    # cyclegan.identity_every k: on the last step of each k the update is exactly that of the
    # identity terms at k times their weight on every step; on the other steps exactly that of no
    # identity terms (the generators then run on fewer images: what makes it cheaper). The logged
    # identity losses keep the every-step weight's scale.
    def one_step(step: int, lambda_identity: float, every: int):
        params = tiny_params("cyclegan", cyclegan={"lambda_identity": lambda_identity, "identity_every": every})
        nets, opts, rt = _setup(params, tuned=tuned)
        rt.split_threads = split
        losses = train_step(_random_batch(), nets, opts, params.train, rt, step)
        return _states(nets), losses

    lazy_on, losses_on = one_step(3, 0.5, 4)
    eager_k, _ = one_step(0, 2.0, 1)
    _, losses_eager = one_step(0, 0.5, 1)
    lazy_off, losses_off = one_step(4, 0.5, 4)
    none, _ = one_step(0, 0.0, 1)
    assert "idt_a" in losses_on and "idt_a" not in losses_off
    for k in ("idt_a", "idt_b"):
        assert torch.allclose(losses_on[k], losses_eager[k], rtol=1e-6), k
    for k in eager_k:
        assert torch.equal(lazy_on[k], eager_k[k]), k
        assert torch.equal(lazy_off[k], none[k]), k
    # and the identity terms did change G (else the equalities above would say nothing)
    assert any(not torch.equal(eager_k[k], none[k]) for k in eager_k if k.startswith("g"))


@pytest.mark.parametrize("objective", ["cyclegan", "cut"])
def test_discriminator_lr_scale_sets_the_discriminators_rate_only_and_follows_the_schedule(objective):
    params = tiny_params(objective, lr=1e-3, decay_start=0.0, discriminator={"lr_scale": 4.0})
    _, opts, _ = _setup(params)
    assert opts.g.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert opts.d.param_groups[0]["lr"] == pytest.approx(4e-3)
    # the schedule (linear decay from step 0 here) scales each optimiser's own base rate
    factor = linear_decay(params.train.steps, params.train.decay_start)
    scheds = [LinearDecay(opts.g, factor), LinearDecay(opts.d, factor)]
    for _ in range(2):
        for sched in scheds:
            sched.step()
    assert 0 < opts.g.param_groups[0]["lr"] < 1e-3
    assert opts.d.param_groups[0]["lr"] == pytest.approx(4 * opts.g.param_groups[0]["lr"])


def test_identity_every_is_part_of_the_run_fingerprint():
    prints = {
        every: trainer.run_fingerprint(tiny_params("cyclegan", cyclegan={"identity_every": every}), Pair("photo", "inkwash"))
        for every in (1, 4)
    }
    assert prints[1] != prints[4]


def test_source_cycle_scale_weighs_the_source_cycle_only_and_changes_the_update():
    # From one initialisation and batch: the source's cycle term (x -> G -> F) is weighted by
    # lambda_cycle * scale, the target's cycle and the identity terms keep lambda_cycle, and the
    # generators' update differs. The scale is part of the run's fingerprint (another run).
    runs = {}
    for scale in (1.0, 0.5):
        params = tiny_params("cyclegan", cyclegan={"source_cycle_scale": scale})
        nets, opts, rt = _setup(params)
        losses = train_step(_random_batch(), nets, opts, params.train, rt)
        runs[scale] = (losses, _states(nets), trainer.run_fingerprint(params, Pair("photo", "inkwash")))
    (full, full_states, full_print), (half, half_states, half_print) = runs[1.0], runs[0.5]
    assert torch.allclose(half["cycle_a"], 0.5 * full["cycle_a"], rtol=1e-6)
    for k in ("cycle_b", "idt_a", "idt_b", "g_ab", "g_ba"):
        assert torch.equal(half[k], full[k]), k
    assert any(not torch.equal(full_states[k], half_states[k]) for k in full_states if k.startswith("g_"))
    assert full_print != half_print


def test_bf16_autocast_step_gives_finite_losses():
    params = tiny_params("cyclegan", precision="bf16")
    nets, opts, rt = _setup(params)
    losses = train_step(_random_batch(), nets, opts, params.train, rt)
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize(
    ("objective", "extra"),
    [
        ("cyclegan", {"discriminator": {"r1_gamma": 0.01, "r1_every": 1}}),
        ("cut", {}),
        ("cyclegan", {"generator": {"norm": "batch"}, "discriminator": {"norm": "batch"}}),
    ],
)
def test_bf16_full_steps_fp32_masters_on_the_gradients_of_bf16_copies(objective, extra):
    # bf16-full runs the step on bf16 copies of the networks; Adam must step the fp32 masters
    # (the networks the trainer holds), on the copies' gradients, and the copies must then hold
    # the masters' new weights. Adam's first update is about lr * sign(gradient): the masters must
    # move as the fp32 path's do wherever the signs agree, and bf16 rounding flips the sign of
    # small gradients (about 1 weight in 10 here) as often under bf16 autocast as in bf16-full.
    moved = {}
    for precision in ("fp32", "bf16", "bf16-full"):
        params = tiny_params(objective, precision=precision, **extra)
        nets, opts, rt = _setup(params)
        before = _states(nets)
        losses = train_step(_random_batch(), nets, opts, params.train, rt)
        assert all(torch.isfinite(v) for v in losses.values())
        after = _states(nets)
        # weights only: biases before an InstanceNorm have a gradient of 0 plus rounding
        moved[precision] = {k: after[k] - before[k] for k in before if k.endswith("weight")}
        if precision != "bf16-full":
            assert rt.shadow is None
            continue
        assert rt.shadow is not None and rt.shadow is not nets
        for name, master in nets.named().items():
            shadow = rt.shadow.named()[name]
            for (k, p), c in zip(master.named_parameters(), shadow.parameters(), strict=True):
                assert p.dtype == torch.float32 and c.dtype == torch.bfloat16, (name, k)
                assert torch.equal(c, p.to(torch.bfloat16)), (name, k)
                assert c.grad is None, (name, k)
            for b_m, b_c in zip(master.buffers(), shadow.buffers(), strict=True):
                assert torch.equal(b_m, b_c.to(b_m.dtype)), name  # BatchNorm statistics
        masters = {id(p) for m in nets.named().values() for p in m.parameters()}
        for opt in (opts.g, opts.d):
            assert {id(p) for p in opt.params} <= masters
            assert all(s["exp_avg"].dtype == torch.float32 for s in opt.state.values())

    def sign_agreement(precision: str) -> float:
        ref, other = moved["fp32"], moved[precision]
        same = sum(int((torch.sign(ref[k]) == torch.sign(other[k])).sum()) for k in ref)
        return same / sum(v.numel() for v in ref.values())

    assert sign_agreement("bf16-full") > 0.85
    assert sign_agreement("bf16-full") >= sign_agreement("bf16") - 0.02


def test_bf16_full_steps_its_masters_slice_by_slice_with_the_update_of_one_step(monkeypatch):
    # Only one slice's fp32 gradients exist at a time (peak memory); Adam acts weight by weight,
    # so slices of any size must give the update of one step over all weights, bit for bit, and
    # leave no gradient on masters or copies.
    from culturegan.training import runtime

    assert [[p.numel() for p in s] for s in runtime._slices([nn.Parameter(torch.zeros(n)) for n in (3, 4, 9, 2, 1)], 6)] == [
        [3], [4], [9], [2, 1]
    ]
    assert runtime._slices([], 6) == []
    states = []
    for slice_size in (10**12, 500, 1):  # one slice; several; one parameter a slice
        monkeypatch.setattr(runtime, "MASTER_STEP_SLICE", slice_size)
        params = tiny_params("cyclegan", precision="bf16-full")
        nets, opts, rt = _setup(params)
        for i in range(2):
            train_step(_random_batch(seed=i), nets, opts, params.train, rt, step=i)
        assert all(p.grad is None for m in nets.named().values() for p in m.parameters())
        assert all(p.grad is None for m in rt.shadow.named().values() for p in m.parameters())
        states.append(_states(nets) | {f"shadow.{k}": v for k, v in _states(rt.shadow).items()})
    for other in states[1:]:
        assert states[0].keys() == other.keys()
        assert all(torch.equal(states[0][k], other[k]) for k in other)


def test_discriminator_learns_to_separate_trivially_different_images():
    # D of CUT against a frozen-at-init generator whose outputs sit near 0, versus real images
    # near +1: after a few dozen D steps real and fake scores must be clearly apart.
    params = tiny_params("fastcut", lr=2e-3)
    nets, opts, _ = _setup(params)
    real_a = torch.full((4, 3, SIZE, SIZE), -0.5) + 0.1 * torch.randn(4, 3, SIZE, SIZE)
    real_b = torch.full((4, 3, SIZE, SIZE), 0.9) + 0.05 * torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        fake = nets.g(real_a)
    for _ in range(30):
        opts.d.zero_grad()
        loss = (
            objectives._gan_loss(nets.d(fake), False) + objectives._gan_loss(nets.d(real_b), True)
        ) * 0.5
        loss.backward()
        opts.d.step()
    with torch.no_grad():
        assert nets.d(real_b).mean() - nets.d(fake).mean() > 0.5
    assert loss.item() < 0.1


def test_lr_schedule_is_constant_then_linear_to_zero():
    f = linear_decay(10, 0.5)
    assert [f(s) for s in range(5)] == [1.0] * 5
    assert [round(f(s), 3) for s in range(5, 11)] == [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
    assert linear_decay(4, 0.0)(0) == 1.0 and linear_decay(4, 1.0)(3) == 1.0


def test_precision_auto_follows_cpu_bf16_support_and_fp16_needs_cuda():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(ConfigError, match="train.precision fp16 needs a CUDA device"):
        resolve_precision("fp16", cpu)


def test_sampler_is_seeded_resumable_and_splits_the_global_batch_across_ranks():
    data = PairImages(
        "a",
        "b",
        torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).clone(),
        torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 3, 2, 2).clone(),
    )
    one = UnpairedSampler(data, 4, seed=1, flip=True)
    first = one.next()
    state = one.state_dict()
    second = one.next()
    again = UnpairedSampler(data, 4, seed=1, flip=True)
    assert all(torch.equal(x, y) for x, y in zip(again.next(), first, strict=True))
    again.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(again.next(), second, strict=True))
    ranks = [
        UnpairedSampler(data, 4, seed=1, flip=True, rank=r, world_size=2).next() for r in range(2)
    ]
    assert torch.equal(torch.cat([ranks[0][0], ranks[1][0]]), first[0])
    assert first[0].min() >= -1 and first[0].max() <= 1
    with pytest.raises(ConfigError, match="batch_size 3 does not split evenly across 2 ranks"):
        UnpairedSampler(data, 3, seed=1, flip=False, rank=0, world_size=2)


def test_sampler_crops_are_random_windows_of_the_stored_images_and_identical_across_ranks():
    # image i holds the value 16*i + row*4 + col at every channel: a crop names its source window
    base = torch.arange(4 * 16, dtype=torch.uint8).view(4, 1, 4, 4).expand(4, 3, 4, 4).clone()
    data = PairImages("a", "b", base, base.clone())
    crops = UnpairedSampler(data, 4, seed=3, flip=False, crop=2).next()
    assert crops[0].shape == (4, 3, 2, 2)
    windows = {
        (i, y, x): to_unit_range(base[i, :, y : y + 2, x : x + 2].clone())
        for i in range(4) for y in range(3) for x in range(3)
    }
    for img in crops[0]:
        assert any(torch.equal(img, w) for w in windows.values())
    assert len({tuple(img.flatten().tolist()) for img in crops[0]}) > 1
    ranks = [UnpairedSampler(data, 4, seed=3, flip=False, rank=r, world_size=2, crop=2).next() for r in range(2)]
    assert torch.equal(torch.cat([ranks[0][0], ranks[1][0]]), crops[0])


@pytest.mark.parametrize(
    ("crop", "match"),
    [(80, "crop_size 80 is larger than data.image_size"), (30, "crop_size 30 is not a multiple of 4")],
)
def test_bad_crop_sizes_are_config_errors(crop, match, data_root, tmp_path):
    with pytest.raises(ConfigError, match=match):
        train_pair(tiny_params(crop_size=crop), PAIR, data_root, tmp_path)


def test_channels_last_training_is_refused_where_the_norm_computes_wrong_gradients(data_root, tmp_path, monkeypatch):
    # A device whose instance norm faults on channels-last tensors (here a CPU norm made to drop
    # its gradient): the run stops before any work, naming the key.
    from culturegan.models.networks import InstanceNorm

    def zero_gradient(self, x):
        return torch.nn.functional.instance_norm(x.detach().contiguous(), eps=1e-5) + 0 * x

    monkeypatch.setattr(InstanceNorm, "forward", zero_gradient)
    with pytest.raises(ConfigError, match="train.channels_last"):
        train_pair(tiny_params("cyclegan", channels_last=True), PAIR, data_root, tmp_path / "cl")
    assert not (tmp_path / "cl").exists()


def test_training_on_crops_gives_a_generator_for_whole_images(data_root, tmp_path):
    result = train_pair(tiny_params("cyclegan", crop_size=16), PAIR, data_root, tmp_path)
    g = load_generator(Path(result["generator"]))
    assert g(torch.zeros(1, 3, SIZE, SIZE)).shape == (1, 3, SIZE, SIZE)


class RecordingTracker:
    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.artifacts: list[tuple[Path, str | None]] = []

    def log_params(self, params: dict[str, Any]) -> None:
        self.params |= params

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((step, metrics))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        assert Path(path).exists()
        self.artifacts.append((Path(path), artifact_path))


@pytest.mark.parametrize("objective", ["cyclegan", "fastcut"])
def test_train_pair_writes_generators_samples_metrics_and_logs_to_tracker(
    data_root, tmp_path, objective
):
    tracker = RecordingTracker()
    result = train_pair(tiny_params(objective), PAIR, data_root, tmp_path / "out", tracker=tracker)
    out = tmp_path / "out"
    assert (out / "checkpoints" / "last.pt").exists()
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "step_000002.png",
        "step_000004.png",
    ]
    cols = 3 if objective == "cyclegan" else 2
    assert Image.open(out / "samples" / "step_000004.png").size == (cols * SIZE, 2 * SIZE)
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["images"] == 8 and metrics["images_per_s"] > 0
    assert set(metrics["final_losses"]) == set(result["final_losses"]) and metrics["final_losses"]
    # generator.pt is self-describing and loads with weights_only=True
    g = load_generator(out / "generator.pt")
    assert g(torch.zeros(1, 3, SIZE, SIZE)).shape == (1, 3, SIZE, SIZE)
    info = read_generator_file(out / "generator.pt")
    assert (info["source"], info["target"], info["image_size"]) == ("photo", "inkwash", SIZE)
    assert (out / "generator_reverse.pt").exists() == (objective == "cyclegan")
    # tracking: params once, metrics every log_every steps, samples and metrics as artifacts
    assert tracker.params["pair"] == "photo-inkwash" and tracker.params["train.objective"] == objective
    assert [s for s, _ in tracker.metrics] == [2, 4]
    assert {"lr", "images_per_s"} <= set(tracker.metrics[-1][1])
    assert any(k.startswith("loss/") for k in tracker.metrics[-1][1])
    assert ("samples" in {a for _, a in tracker.artifacts}) and any(
        p.name == "train_metrics.json" for p, _ in tracker.artifacts
    )


def test_lazy_r1_loss_is_logged_at_its_latest_value_between_r1_steps(data_root, tmp_path):
    # r1_every 4: R1 on steps 3 and 7 (0-based). The log points after 6 and 8 steps both report
    # r1 (after 6 the value of step 3, whose penalty D is still carrying), as does final_losses.
    tracker = RecordingTracker()
    params = tiny_params(
        "cyclegan", steps=8, log_every=3, discriminator={"r1_gamma": 0.01, "r1_every": 4}
    )
    result = train_pair(params, PAIR, data_root, tmp_path / "out", tracker=tracker)
    logged = dict(tracker.metrics)
    assert sorted(logged) == [3, 6, 8]
    assert "loss/r1" not in logged[3]  # no R1 step yet
    assert "loss/r1" in logged[6] and "loss/r1" in logged[8] and "r1" in result["final_losses"]
    assert logged[6]["loss/r1"] != logged[8]["loss/r1"]


def test_backward_step_gives_gradients_to_the_modules_parameters_only():
    # The R1 penalty differentiates D by its input, a leaf that requires grad; the optimiser's
    # backward must not spend work on (or fill) that leaf's gradient.
    rt = Runtime(torch.device("cpu"))
    m = nn.Linear(3, 1)
    x = torch.randn(4, 3, requires_grad=True)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    rt.backward_step(m(x).pow(2).sum(), opt, [m])
    assert x.grad is None
    assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0


def test_same_seed_gives_identical_weights(data_root, tmp_path):
    params = tiny_params("cyclegan", steps=3)
    train_pair(params, PAIR, data_root, tmp_path / "one")
    train_pair(params, PAIR, data_root, tmp_path / "two")
    a = read_generator_file(tmp_path / "one" / "generator.pt")["state_dict"]
    b = read_generator_file(tmp_path / "two" / "generator.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _checkpoint_nets(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    return {f"{n}.{k}": v for n, sd in state["nets"].items() for k, v in sd.items()}


def _checkpoint_outputs(path: Path, params: Params) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    nets = build_nets(params.train)
    for name, m in nets.named().items():
        m.load_state_dict(state["nets"][name])
    return _outputs(nets)


class SimulatedKill(Exception):
    pass


@pytest.mark.parametrize(
    ("objective", "extra"),
    [
        ("cyclegan", {}),
        ("cut", {"precision": "auto", "cut": {"flip_equivariance": True}}),
        ("cyclegan", {"precision": "bf16-full"}),
    ],
)
def test_resume_after_kill_gives_same_weights_as_uninterrupted_run(
    data_root, tmp_path, monkeypatch, objective, extra
):
    n = 3
    params = tiny_params(objective, steps=2 * n, checkpoint_every=n, **extra)
    straight = train_pair(params, PAIR, data_root, tmp_path / "straight")

    real_step = trainer.train_step
    calls = {"n": 0}

    def dying_step(*args: Any) -> dict[str, torch.Tensor]:
        calls["n"] += 1
        if calls["n"] == n + 2:  # one step past the checkpoint at step n: that work is lost
            raise SimulatedKill
        return real_step(*args)

    monkeypatch.setattr(trainer, "train_step", dying_step)
    with pytest.raises(SimulatedKill):
        train_pair(params, PAIR, data_root, tmp_path / "killed")
    assert (
        torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)["step"] == n
    )
    monkeypatch.setattr(trainer, "train_step", real_step)
    resumed = train_pair(params, PAIR, data_root, tmp_path / "killed")

    assert resumed["resumed_from"] == n and resumed["steps"] == 2 * n
    a = _checkpoint_nets(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = _checkpoint_nets(tmp_path / "killed" / "checkpoints" / "last.pt")
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    assert resumed["final_losses"] == pytest.approx(straight["final_losses"], rel=1e-4, abs=1e-6)


def test_finished_run_rerun_only_rewrites_outputs(data_root, tmp_path, monkeypatch):
    params = tiny_params("fastcut")
    train_pair(params, PAIR, data_root, tmp_path)
    before = read_generator_file(tmp_path / "generator.pt")["state_dict"]
    (tmp_path / "generator.pt").unlink()
    (tmp_path / "train_metrics.json").unlink()

    def no_training(*args: Any) -> None:
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(trainer, "train_step", no_training)
    result = train_pair(params, PAIR, data_root, tmp_path)
    after = read_generator_file(tmp_path / "generator.pt")["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (
        result["resumed_from"] == 4
        and json.loads((tmp_path / "train_metrics.json").read_text())["steps"] == 4
    )


@pytest.mark.parametrize(("first", "second"), [(2, 4), (4, 2)])
def test_a_checkpoint_of_other_step_count_is_refused_not_resumed(data_root, tmp_path, first, second):
    # the lr schedule is laid out over train.steps: continuing would give neither run's result
    train_pair(tiny_params("fastcut", steps=first), PAIR, data_root, tmp_path)
    with pytest.raises(CheckpointError, match=f"steps: {first}, .* in the file, {{steps: {second},"):
        train_pair(tiny_params("fastcut", steps=second), PAIR, data_root, tmp_path)


def test_shorter_run_through_the_stage_trains_afresh_and_writes_the_shorter_model(data_root, tmp_path):
    from culturegan.stages import train_stage

    def params(steps: int) -> Params:
        p = tiny_params("fastcut", steps=steps)
        return p.model_copy(update={"data": p.data.model_copy(update={"cache_dir": tmp_path / "cache"})})

    train_stage(params(4), PAIR, 3, data_root, tmp_path / "runs", track=False)
    result = train_stage(params(2), PAIR, 3, data_root, tmp_path / "runs", track=False)
    assert (result["resumed_from"], result["steps"]) == (0, 2)
    saved = read_generator_file(tmp_path / "runs" / "photo-inkwash" / "seed3" / "generator.pt")
    assert saved["steps"] == 2


@pytest.fixture
def trained(data_root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "photo-inkwash"
    train_pair(tiny_params("fastcut", steps=2), PAIR, data_root, out)
    return out


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b"\x00garbage" * 100, id="garbage"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_damaged_checkpoint_is_a_clear_error_not_a_silent_restart(data_root, trained, damage):
    ckpt = trained / "checkpoints" / "last.pt"
    ckpt.write_bytes(damage(ckpt.read_bytes()))
    with pytest.raises(CheckpointError) as info:
        train_pair(tiny_params("fastcut", steps=2), PAIR, data_root, trained)
    assert str(ckpt) in info.value.message and "--no-resume" in info.value.hint
    # resume=False is the documented way out: it trains from scratch over the bad file
    assert (
        train_pair(tiny_params("fastcut", steps=2), PAIR, data_root, trained, resume=False)[
            "resumed_from"
        ]
        == 0
    )


@pytest.mark.parametrize(
    ("params", "pair", "mentions"),
    [
        (
            tiny_params("cyclegan", steps=2),
            PAIR,
            "objective: 'fastcut' in the file, 'cyclegan' now",
        ),
        (tiny_params("fastcut", steps=2, generator={"ngf": 4}), PAIR, "generator"),
        (tiny_params("fastcut", steps=2, cut={"num_patches": 8}), PAIR, "losses"),
        (
            tiny_params("fastcut", steps=2),
            Pair("photo", "ukiyoe"),
            "pair: 'photo-inkwash' in the file, 'photo-ukiyoe' now",
        ),
    ],
    ids=["objective", "ngf", "nce-patches", "pair"],
)
def test_checkpoint_of_another_run_is_a_clear_error(data_root, trained, params, pair, mentions):
    with pytest.raises(CheckpointError) as info:
        train_pair(params, pair, data_root, trained)
    assert (
        mentions in info.value.message
        and str(trained / "checkpoints" / "last.pt") in info.value.message
    )
    assert "delete it" in info.value.hint


def test_checkpoint_with_mismatched_weights_is_a_clear_error(data_root, trained):
    ckpt = trained / "checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=True)
    state["nets"]["g"] = {k: v[:1] for k, v in state["nets"]["g"].items()}
    torch.save(state, ckpt)
    with pytest.raises(CheckpointError, match="does not fit network g"):
        train_pair(tiny_params("fastcut", steps=2), PAIR, data_root, trained)


def test_non_generator_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "generator.pt"
    torch.save({"something": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="not a culturegan generator file"):
        load_generator(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_generator(tmp_path / "absent.pt")


def test_pair_with_unknown_style_names_train_pairs_and_available_styles(data_root, tmp_path):
    with pytest.raises(ConfigError) as info:
        train_pair(tiny_params(), Pair("photo", "cubism"), data_root, tmp_path)
    assert "train.pairs" in info.value.message and "'cubism'" in info.value.message
    assert "inkwash, photo, ukiyoe" in info.value.hint


@pytest.mark.parametrize(
    "pairs", [["photo_inkwash"], ["photo-ink-wash"], ["photo-photo"], ["a-b", "a-b"]]
)
def test_malformed_pairs_in_params_are_config_errors(pairs):
    with pytest.raises(ConfigError, match="train.pairs"):
        parse_params({"train": {"pairs": pairs}})


def test_nce_layers_past_the_generator_are_config_errors():
    with pytest.raises(ConfigError, match="index past the generator's 20 layers"):
        parse_params(
            {
                "train": {
                    "objective": "cut",
                    "generator": {"n_blocks": 1},
                    "cut": {"nce_layers": [0, 20]},
                }
            }
        )


def test_image_too_small_for_discriminator_depth_is_a_config_error(data_root, tmp_path):
    with pytest.raises(ConfigError, match="train.discriminator.n_layers 5 is too deep"):
        train_pair(tiny_params(discriminator={"n_layers": 5}), PAIR, data_root, tmp_path)


def test_bench_train_reports_throughput_memory_and_speedup_over_plain_pytorch():
    from culturegan.training.bench import bench_train

    result = bench_train(
        tiny_params("cyclegan"), steps=1, warmup=1, rounds=1, baseline=True, precision="auto"
    )
    for path in ("tuned", "baseline"):
        assert result[path]["images_per_s"] > 0 and result[path]["peak_mem_mb"] > 0
    assert result["baseline"]["precision"] == "fp32" and not result["baseline"]["fused_adam"]
    assert result["speedup"] == pytest.approx(
        result["tuned"]["images_per_s"] / result["baseline"]["images_per_s"], rel=1e-2
    )
    assert result["batch_size"] == 2 and result["image_size"] == SIZE


def test_bench_plain_path_runs_the_resize_convolution_as_its_three_layers():
    from culturegan.models.networks import ResizeConv
    from culturegan.training.bench import _Path

    cfg = tiny_params("cyclegan").train
    for tuned in (True, False):
        path = _Path(cfg, torch.device("cpu"), "fp32", tuned, 0)
        layers = [x for m in path.nets.named().values() for x in m.modules() if isinstance(x, ResizeConv)]
        assert len(layers) == 4 and {x.fast for x in layers} == {tuned}


def _ddp_worker(
    rank: int, world_size: int, port: int, params_json: str, data_root: str, out: str
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        GLOO_SOCKET_IFNAME="lo",
    )
    torch.set_num_threads(1)
    train_pair(parse_params(json.loads(params_json)), PAIR, Path(data_root), Path(out))


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["cyclegan", "cut"])
def test_two_process_ddp_gives_the_same_weights_as_one_process(data_root, tmp_path, objective):
    import torch.multiprocessing as mp

    params = tiny_params(objective, steps=3, checkpoint_every=3)
    single = train_pair(params, PAIR, data_root, tmp_path / "single")
    mp.spawn(
        _ddp_worker,
        args=(
            2,
            free_port(),
            json.dumps(params.model_dump(mode="json")),
            str(data_root),
            str(tmp_path / "ddp"),
        ),
        nprocs=2,
    )
    a = _checkpoint_outputs(tmp_path / "single" / "checkpoints" / "last.pt", params)
    b = _checkpoint_outputs(tmp_path / "ddp" / "checkpoints" / "last.pt", params)
    # Summing gradients over ranks rounds differently; Adam's normalisation magnifies that on
    # near-zero gradients, so after 3 steps outputs agree to ~1e-4, not bit for bit.
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-3), k
    ddp_metrics = json.loads((tmp_path / "ddp" / "train_metrics.json").read_text())
    assert ddp_metrics["world_size"] == 2
    assert ddp_metrics["final_losses"] == pytest.approx(single["final_losses"], rel=1e-3, abs=1e-4)


_TRAIN_SCRIPT = """
import json, sys
from pathlib import Path
import torch
import yaml
from culturegan.config import Pair, parse_params
from culturegan.training.trainer import train_pair
torch.set_num_threads(1)
train_pair(parse_params(json.loads(sys.argv[1])), Pair.parse(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
"""


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_matches_uninterrupted_run(data_root, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    params = tiny_params(
        "cyclegan", steps=60, checkpoint_every=4, sample_every=1000, log_every=1000
    )
    out = tmp_path / "killed"
    ckpt = out / "checkpoints" / "last.pt"
    args = [
        sys.executable,
        "-c",
        _TRAIN_SCRIPT,
        json.dumps(params.model_dump(mode="json")),
        str(PAIR),
        str(data_root),
        str(out),
    ]
    proc = subprocess.Popen(args)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup of any kind: the worst case
    proc.wait()
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < killed_at < params.train.steps

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same thread count as the killed process: same rounding
    try:
        resumed = train_pair(params, PAIR, data_root, out)
        train_pair(params, PAIR, data_root, tmp_path / "straight")
    finally:
        torch.set_num_threads(threads)
    assert resumed["resumed_from"] == killed_at
    a = _checkpoint_nets(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = _checkpoint_nets(ckpt)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_saved_generator_files_are_byte_identical_for_the_same_weights(tmp_path):
    """DVC hashes generator.pt: the same weights and config must give the same bytes, wherever
    and however often they are written (torch.save named the zip's records after the temp file)."""
    from culturegan.config import GeneratorConfig
    from culturegan.models.networks import ResnetGenerator
    from culturegan.training.checkpoint import save_checkpoint, save_generator

    torch.manual_seed(0)
    net = ResnetGenerator(GeneratorConfig(ngf=4, n_blocks=1))
    meta = {"pair": str(PAIR), "image_size": SIZE}
    paths = [tmp_path / "a" / "generator.pt", tmp_path / "a" / "generator.pt", tmp_path / "b" / "generator.pt"]
    written = []
    for path in paths:
        save_generator(path, net, meta)
        written.append(path.read_bytes())
    assert written[0] == written[1] == written[2]
    assert torch.equal(load_generator(paths[2]).state_dict()["layers.1.weight"], net.state_dict()["layers.1.weight"])
    for name in ("x.pt", "y.pt"):
        save_checkpoint(tmp_path / name, {"step": 3, "weights": net.state_dict()})
    assert (tmp_path / "x.pt").read_bytes() == (tmp_path / "y.pt").read_bytes()


@pytest.mark.parametrize("objective", ["cyclegan", "fastcut"])
def test_batch_norm_becomes_sync_batch_norm_only_with_several_processes(objective: str):
    from culturegan.training.runtime import sync_batchnorm

    cfg = tiny_params(objective, generator={"norm": "batch"}, discriminator={"norm": "batch"}).train

    def nets_and_layers():
        nets = objectives.build_nets(cfg)
        return nets, [x for m in nets.named().values() for x in m.modules()]

    nets, _ = nets_and_layers()
    assert sync_batchnorm(nets.named().values(), World(), torch.device("cpu")) == 0
    assert not any(isinstance(x, torch.nn.SyncBatchNorm) for m in nets.named().values() for x in m.modules())

    nets, before = nets_and_layers()
    keys = {n: list(m.state_dict()) for n, m in nets.named().items()}
    weights = [id(p) for m in nets.named().values() for p in m.parameters()]
    n_bn = sum(isinstance(x, torch.nn.BatchNorm2d) for x in before)
    # Conversion only swaps modules; the device matters for the forward pass, not here.
    assert sync_batchnorm(nets.named().values(), World(0, 2), torch.device("cuda")) == n_bn > 0
    after = [x for m in nets.named().values() for x in m.modules()]
    assert sum(isinstance(x, torch.nn.SyncBatchNorm) for x in after) == n_bn
    assert not any(type(x) is torch.nn.BatchNorm2d for x in after)
    assert {n: list(m.state_dict()) for n, m in nets.named().items()} == keys, "checkpoints stay compatible"
    assert [id(p) for m in nets.named().values() for p in m.parameters()] == weights, "same parameters"


def test_batch_norm_with_several_cpu_processes_is_a_config_error_and_instance_norm_is_fine(data_root):
    from culturegan.training.dataset import load_pair

    data = load_pair(data_root, PAIR, SIZE, torch.device("cpu"))
    batch = tiny_params("cyclegan", generator={"norm": "batch"})
    with pytest.raises(ConfigError, match="of 'batch'\\) with 2 training processes on cpu"):
        trainer.build_state(batch, data, torch.device("cpu"), "fp32", World(0, 2), 0)
    decoder = tiny_params("cyclegan", generator={"decoder_norm": "batch"})  # 2 layers in each of G, F
    with pytest.raises(ConfigError, match="4 BatchNorm layers"):
        trainer.build_state(decoder, data, torch.device("cpu"), "fp32", World(0, 2), 0)
    trainer.build_state(batch, data, torch.device("cpu"), "fp32", World(), 0)  # one process: plain BatchNorm
    trainer.build_state(tiny_params("cyclegan"), data, torch.device("cpu"), "fp32", World(0, 2), 0)


def test_bench_train_cli_times_steps_fed_by_the_training_loader(data_root, tmp_path):
    from typer.testing import CliRunner

    from culturegan.cli import app

    params_file = tmp_path / "params.yaml"
    raw = tiny_params("cyclegan").model_dump(mode="json")
    params_file.write_text(yaml.safe_dump(raw))
    args = ["bench", "train", "--params", str(params_file), "--pair", "photo-inkwash", "--steps", "1"]
    result = CliRunner().invoke(app, [*args, "--data", str(data_root), "--baseline"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["data"] == str(data_root) and out["pair"] == "photo-inkwash"
    assert out["data_images"] == {"a": 8, "b": 8} and out["data_load_s"] >= 0
    assert out["tuned"]["images_per_s"] > 0 and out["baseline"]["images_per_s"] > 0
    # the host's share of CPU time over the command: a fraction on Linux, None where unknown
    assert "steal_share" in out
    assert out["steal_share"] is None or 0.0 <= out["steal_share"] <= 1.0
    # and the host's speed at fixed work (culturegan.hostspeed), to compare sessions
    assert out["host_speed"]["conv_fp32_gflops"] > 0 and out["host_speed"]["copy_gbps"] > 0
    random = json.loads(CliRunner().invoke(app, args).stdout)
    assert random["data"] == "random" and "data_images" not in random
    assert out["tuned"]["split_threads"] == trainer.split_threads(
        parse_params(raw).train, torch.device("cpu")
    )
    assert out["baseline"]["split_threads"] == 0  # the plain path runs the directions in turn
    serial = json.loads(CliRunner().invoke(app, [*args, "--no-side-by-side"]).stdout)
    assert serial["tuned"]["split_threads"] == 0


def test_training_loads_its_images_without_pandas_scipy_or_pyarrow(data_root: Path) -> None:
    """The training process lists a pair's images through a child process that reads the
    manifest: pandas and scipy would add about 55 MB to its peak memory and pyarrow about 90 MB
    (docs/benchmarks.md) for nothing it uses."""
    a, b = list(TINTS)[:2]
    code = (
        "import sys\n"
        "from culturegan.config import Pair\n"
        "from culturegan.training.dataset import check_pair_styles, load_pair\n"
        "import culturegan.training.trainer, culturegan.training.bench\n"
        f"pair = Pair({a!r}, {b!r})\n"
        f"check_pair_styles({str(data_root)!r}, pair)\n"
        f"images = load_pair({str(data_root)!r}, pair, {SIZE})\n"
        "print(len(images.a), len(images.b), *(m in sys.modules for m in ('pandas', 'scipy', 'pyarrow')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["8", "8", "False", "False", "False"]


# ---------------------------------------------------------------------------------------------
# FusedAdam and LinearDecay: torch.optim's arithmetic without torch.optim (and its 150 MB import)


def _adam_pair(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    a = nn.Sequential(nn.Conv2d(3, 8, 3), nn.InstanceNorm2d(8, affine=True), nn.Conv2d(8, 2, 1))
    b = copy.deepcopy(a)
    return a, b


def _grads(model: nn.Module, step: int) -> None:
    g = torch.Generator().manual_seed(step)
    for i, p in enumerate(model.parameters()):
        # Parameter 1 has no gradient on odd steps: its state must not move then.
        p.grad = None if (i == 1 and step % 2) else torch.randn(p.shape, generator=g)


def test_fused_adam_is_bit_identical_to_torch_adam_fused_and_shares_its_state_dict():
    from culturegan.training.adam import FusedAdam

    ours_model, ref_model = _adam_pair()
    ours = FusedAdam(ours_model.parameters(), lr=2e-3, betas=(0.5, 0.999))
    ref = torch.optim.Adam(ref_model.parameters(), lr=2e-3, betas=(0.5, 0.999), fused=True)
    for step in range(6):
        _grads(ours_model, step)
        _grads(ref_model, step)
        ours.step()
        ref.step()
    for p, q in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert torch.equal(ours.state_dict()["state"][1]["step"], ref.state_dict()["state"][1]["step"])

    # A checkpoint of torch's Adam resumes in FusedAdam, and the reverse, with identical updates.
    resumed_model, _ = _adam_pair()
    resumed_model.load_state_dict(ref_model.state_dict())
    resumed = FusedAdam(resumed_model.parameters(), lr=1.0, betas=(0.9, 0.9))
    resumed.load_state_dict(ref.state_dict())
    back = torch.optim.Adam(ours_model.parameters(), lr=2e-3, betas=(0.5, 0.999), fused=True)
    back.load_state_dict(ours.state_dict())
    for step in range(6, 9):
        for m in (resumed_model, ref_model, ours_model):
            _grads(m, step)
        resumed.step()
        ref.step()
        back.step()
    for p, q, r in zip(
        resumed_model.parameters(), ref_model.parameters(), ours_model.parameters(), strict=True
    ):
        assert torch.equal(p, q) and torch.equal(r, q)

    with pytest.raises(ValueError, match="expected one of"):
        FusedAdam(nn.Linear(2, 2).parameters(), lr=1e-3, betas=(0.5, 0.999)).load_state_dict(
            ref.state_dict()
        )


def test_linear_decay_steps_the_lr_as_lambda_lr_and_loads_its_state():
    from culturegan.training.adam import FusedAdam, LinearDecay

    factor = linear_decay(10, 0.5)
    model, _ = _adam_pair()
    ours = LinearDecay(FusedAdam(model.parameters(), lr=2e-4, betas=(0.5, 0.999)), factor)
    ref_opt = torch.optim.Adam(model.parameters(), lr=2e-4, fused=True)
    ref = torch.optim.lr_scheduler.LambdaLR(ref_opt, factor)
    seen = []
    for _ in range(10):
        assert ours.get_last_lr() == ref.get_last_lr()
        seen.append(ours.get_last_lr()[0])
        ref_opt.step()
        ours.step()
        ref.step()
    assert seen[0] == 2e-4 and seen[-1] == pytest.approx(4e-5)
    resumed = LinearDecay(FusedAdam(model.parameters(), lr=2e-4, betas=(0.5, 0.999)), factor)
    resumed.load_state_dict(ref.state_dict())  # an older checkpoint's LambdaLR state
    assert resumed.get_last_lr() == ref.get_last_lr() == [0.0]


def test_training_never_imports_torch_dynamo(data_root: Path, tmp_path: Path) -> None:
    """The trainer's optimiser and schedule are not torch.optim's, whose first use imports
    torch._dynamo with sympy and triton: about 150 MB of peak memory (docs/benchmarks.md)."""
    params = tiny_params("cyclegan", steps=4, checkpoint_every=2, sample_every=1000, log_every=2)
    script = _TRAIN_SCRIPT + "print('torch._dynamo' in sys.modules, 'sympy' in sys.modules)\n"
    args = [json.dumps(params.model_dump(mode="json")), str(PAIR), str(data_root), str(tmp_path)]
    out = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[-2:] == ["False", "False"]


def test_grad_scaler_steps_fused_adam_like_torch_adam():
    """fp16 on a GPU goes through torch.amp.GradScaler; its CPU twin runs the same Python path
    (unscale through param_groups, skip the step on inf)."""
    from culturegan.training.adam import FusedAdam

    ours_model, ref_model = _adam_pair()
    ours = FusedAdam(ours_model.parameters(), lr=2e-3, betas=(0.5, 0.999))
    ref = torch.optim.Adam(ref_model.parameters(), lr=2e-3, betas=(0.5, 0.999), fused=True)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for model, opt in ((ours_model, ours), (ref_model, ref)):
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        for step in range(3):
            opt.zero_grad(set_to_none=True)
            loss = model(x).square().mean() * (float("inf") if step == 1 else 1.0)
            scaler.scale(loss).backward()
            scaler.step(opt)  # step 1: inf gradients, skipped
            scaler.update()
    for p, q in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert float(ours.state_dict()["state"][0]["step"]) == 2.0


def test_fused_adam_pairs_weights_and_gradients_of_any_layouts_and_passes_channels_last_ones_in_memory_order(monkeypatch):
    # torch's CPU kernel pairs the tensors' elements in memory order: a channels-last parameter
    # with a gradient in the default layout gets other weights' gradients. FusedAdam brings them
    # into one layout, and passes channels-last ones as contiguous views (no copies back and forth).
    from culturegan.training.adam import FusedAdam

    cl = torch.channels_last
    p0, g0 = torch.randn(4, 3, 3, 3), torch.randn(4, 3, 3, 3)
    def raw(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:  # the kernel as torch.optim calls it
        m, v, step = torch.zeros_like(p), torch.zeros_like(p), torch.ones(())
        torch._fused_adam_([p], [g], [m], [v], [], [step], lr=0.1, beta1=0.5, beta2=0.999, weight_decay=0.0,
                           eps=1e-8, amsgrad=False, maximize=False, grad_scale=None, found_inf=None)
        return p
    assert not torch.allclose(raw(p0.contiguous(memory_format=cl), g0.clone()), raw(p0.clone(), g0.clone()))

    cl_model, ref_model = _adam_pair()
    mixed_model = copy.deepcopy(ref_model)
    cl_model.to(memory_format=cl)
    mixed_model.to(memory_format=cl)
    weight = cl_model[0].weight
    assert not weight.is_contiguous() and weight.is_contiguous(memory_format=cl)
    opts = [FusedAdam(m.parameters(), lr=2e-3, betas=(0.5, 0.999)) for m in (cl_model, ref_model, mixed_model)]
    kernel, passed = torch._fused_adam_, []

    def spy(params, grads, exp_avgs, exp_avg_sqs, *args, **kwargs):
        passed.append([t.is_contiguous() for ts in (params, grads, exp_avgs, exp_avg_sqs) for t in ts])
        return kernel(params, grads, exp_avgs, exp_avg_sqs, *args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adam_", spy)
    for step in range(4):
        for m in (cl_model, ref_model, mixed_model):
            _grads(m, step)  # gradients in the default layout
        for p in cl_model.parameters():  # gradients in the parameters' layout, as backward makes them
            if p.grad is not None and p.dim() == 4:
                p.grad = p.grad.contiguous(memory_format=cl)
        for opt in opts:
            opt.step()
    assert len(passed) == 12 and all(all(f) for f in passed)
    for p, q, r in zip(cl_model.parameters(), ref_model.parameters(), mixed_model.parameters(), strict=True):
        assert torch.equal(p, q) and torch.equal(r, q)
    assert weight.is_contiguous(memory_format=cl) and mixed_model[0].weight.is_contiguous(memory_format=cl)
    assert torch.equal(opts[0].state[weight]["exp_avg"], opts[1].state[ref_model[0].weight]["exp_avg"])


# --- the training code in the run's fingerprint -------------------------------------------------------


def test_the_fingerprints_code_is_the_source_the_train_stage_of_dvc_yaml_depends_on():
    from conftest import REPO_ROOT

    stage = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]["train"]
    deps = {d.removeprefix("src/culturegan/") for d in stage["deps"] if d.startswith("src/")}
    # cpus.py decides how many runs share the cores (and so each one's threads), not what a run
    # computes: a finished checkpoint stays the model of its run when it changes
    assert deps == set(trainer.TRAINING_CODE) | {"cpus.py"}
    assert trainer.training_code_hash() == trainer.code_hash(REPO_ROOT / "src" / "culturegan")
    assert trainer.run_fingerprint(tiny_params(), Pair("photo", "inkwash"))["code"] == trainer.training_code_hash()


def test_the_code_hash_changes_with_the_training_source_and_with_nothing_else(tmp_path: Path):
    def package(name: str, edits: dict[str, str]) -> Path:
        files = {
            "training/loop.py": "x = 1\n",
            "training/sub/step.py": "y = 2\n",
            "models/nets.py": "z = 3\n",
            "data/manifest.py": "m = 4\n",
            "torchfile.py": "t = 7\n",
            "data/ingest.py": "i = 5\n",
            "cli.py": "c = 6\n",
            "training/notes.txt": "not code\n",
        } | edits
        for rel, text in files.items():
            (tmp_path / name / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / rel).write_text(text)
        return tmp_path / name

    base = trainer.code_hash(package("base", {}))
    assert len(base) == 16
    # outside the training code, or not Python: the same run
    for i, rel in enumerate(["data/ingest.py", "cli.py", "training/notes.txt"]):
        assert trainer.code_hash(package(f"same{i}", {rel: "changed\n"})) == base, rel
    # any training source file, nested ones too, or a new one: another run
    for i, rel in enumerate(["training/loop.py", "training/sub/step.py", "models/nets.py", "data/manifest.py", "torchfile.py", "training/new.py"]):
        assert trainer.code_hash(package(f"other{i}", {rel: "changed\n"})) != base, rel
