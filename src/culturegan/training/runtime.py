"""Where and how training runs: device, precision, optimisers, and data-parallel processes.

Data parallelism averages gradients with one all-reduce per model (gloo on CPU, NCCL on CUDA)
under `torchrun`; nothing here changes what a single process computes.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from culturegan.errors import ConfigError
from culturegan.models.losses import ImagePool
from culturegan.training.adam import FusedAdam, Optimizer, fused_adam_supported


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel processes (rank 0 of 1 when alone)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_grads(self, modules: Iterable[nn.Module]) -> None:
        """Average gradients over processes: the global-batch gradient, as one process gets it."""
        if self.size == 1:
            return
        grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
        if not grads:
            return
        # One collective for all gradients: a flat copy (reshape follows the logical order, so
        # channels_last gradients come back in place through copy_).
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(self.size)
        for g, synced in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(synced.view_as(g))

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's `x` along dim 0, in rank order (the global batch)."""
        if self.size == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch."""
        n = x.shape[0] // self.size
        return x[self.rank * n : (self.rank + 1) * n]

    def mean(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        """Average scalar tensors over ranks and turn them into floats (one device sync)."""
        if not values:
            return {}
        stacked = torch.stack([v.detach().float() for v in values.values()])
        if self.size > 1:
            dist.all_reduce(stacked)
            stacked /= self.size
        return dict(zip(values, stacked.cpu().tolist(), strict=True))

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def init_world(device: torch.device) -> tuple[World, bool]:
    """Join the process group that torchrun describes in the environment, if any.

    Returns the world and whether this call created the group (then the caller destroys it).
    """
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size()), False
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(), False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size()), True


@contextlib.contextmanager
def distributed(device: torch.device) -> Iterator[World]:
    """The data-parallel world for a block; a process group created here is destroyed after."""
    world, owns_group = init_world(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        yield world
    finally:
        if owns_group:
            dist.destroy_process_group()


def sync_batchnorm(modules: Iterable[nn.Module], world: World, device: torch.device) -> int:
    """Under torchrun, BatchNorm must normalise with the global batch's statistics, as one process
    does: convert every BatchNorm layer of `modules`, in place, to SyncBatchNorm. Returns how
    many layers were converted (none in a single process). Parameters, buffers and state_dict
    keys stay the same, so optimisers, EMA copies, checkpoints and saved generators are unaffected.

    PyTorch's SyncBatchNorm runs on GPUs only, so `norm: batch` with several CPU processes is a
    ConfigError rather than a silent per-rank normalisation.
    """
    modules = list(modules)
    if world.size == 1:
        return 0
    found = sum(isinstance(x, nn.modules.batchnorm._BatchNorm) for m in modules for x in m.modules())
    if found and device.type != "cuda":
        raise ConfigError(
            f"{found} BatchNorm layers (a norm or decoder_norm of 'batch') with {world.size}"
            f" training processes on {device.type} cannot be synchronised"
            " (PyTorch's SyncBatchNorm needs GPUs)",
            hint="use norm: instance and decoder_norm: same (the defaults), train in one process,"
            " or on CUDA",
        )
    for m in modules:
        if nn.SyncBatchNorm.convert_sync_batchnorm(m) is not m:  # only a bare BatchNorm root is replaced
            raise TypeError("sync_batchnorm needs container modules, not a bare BatchNorm layer")
    return found


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(
                "train.device is 'cuda' but no CUDA device is visible", hint="use 'auto' or 'cpu'"
            )
        # One GPU per process under torchrun: LOCAL_RANK picks it.
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run in hardware (elsewhere bf16 is emulated and slow)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and torch.backends.mkldnn.is_available()


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> bf16 on Ampere+ CUDA (fp16 on older GPUs) and on CPUs with native bf16, where
    bench_train measured whole training steps 1.6-1.9x faster than fp32; else fp32.
    fp16 is CUDA-only: it needs a gradient scaler."""
    if name == "fp16" and device.type != "cuda":
        raise ConfigError(
            "train.precision fp16 needs a CUDA device", hint="use bf16 or auto on the CPU"
        )
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "bf16-full": None, "fp16": torch.float16}
# Precisions whose steps run on low-precision copies of the networks (Runtime.bind_shadow).
WEIGHT_DTYPES = {"bf16-full": torch.bfloat16}


@dataclass
class Runtime:
    """Everything a train step needs besides the networks, optimisers and the config.

    It holds state (RNG, pools, gradient scaler), never results: losses are returned.
    """

    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False
    batch_calls: bool = True  # one forward over concatenated inputs where the math allows it
    # > 0: CycleGAN's two directions run side by side in two threads with this many intra-op
    # threads each (side_by_side); 0: one after the other in this thread.
    split_threads: int = 0
    world: World = field(default_factory=World)
    rng: torch.Generator = field(default_factory=torch.Generator)  # patch ids, pool, flips (CPU)
    pools: dict[str, ImagePool] = field(default_factory=dict)
    scaler: torch.amp.GradScaler | None = None
    # bf16-full: the networks a step runs (objectives.compute_nets makes them), and for each of
    # their parameters the fp32 master parameter that the optimiser steps.
    shadow: Any = None
    master_of: dict[nn.Parameter, nn.Parameter] = field(default_factory=dict)
    shadow_pairs: list[tuple[nn.Module, nn.Module]] = field(default_factory=list)

    @property
    def weights_dtype(self) -> torch.dtype | None:
        """The dtype of the networks' own weights in a step, if not those of the masters."""
        return WEIGHT_DTYPES.get(self.precision)

    def bind_shadow(self, shadow: Any, masters: list[nn.Module], copies: list[nn.Module]) -> None:
        """Make `copies` (low-precision deep copies of `masters`, module by module) the networks
        that steps run; backward_step hands their gradients to the masters' parameters."""
        self.shadow = shadow
        self.shadow_pairs = list(zip(masters, copies, strict=True))
        self.master_of = {
            c: m
            for master, copy in self.shadow_pairs
            for m, c in zip(master.parameters(), copy.parameters(), strict=True)
        }

    def unbind_shadow(self) -> None:
        """Forget the copies (after the masters were loaded from a checkpoint): the next step
        makes them again from the masters."""
        self.shadow, self.master_of, self.shadow_pairs = None, {}, []

    @torch.no_grad()
    def sync_buffers(self) -> None:
        """Buffers (BatchNorm statistics) that a step updated in the copies, back to the masters."""
        for master, copy in self.shadow_pairs:
            for b_m, b_c in zip(master.buffers(), copy.buffers(), strict=True):
                b_m.copy_(b_c)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        dtype = AUTOCAST_DTYPES[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        # Side by side, no weight-cast cache: it is one map for all threads, and a thread leaving
        # autocast clears it under a lock while the other thread may be casting through it.
        return torch.autocast(self.device.type, dtype=dtype, cache_enabled=not self.split_threads)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, dtype=self.weights_dtype or x.dtype, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def backward_step(
        self, loss: torch.Tensor, opt: Optimizer, modules: list[nn.Module]
    ) -> None:
        """Backward, average gradients over ranks, optimiser step (through the scaler for fp16)."""
        self.backward(loss, modules)
        self.optimizer_step(opt, modules)

    def backward(self, loss: torch.Tensor, modules: list[nn.Module]) -> None:
        """Add the gradients of `loss` (scaled for fp16) to the parameters of `modules`.

        Gradients go only to the parameters of `modules` that require grad: the R1 penalty's
        input leaf (and any other leaf) gets none, so autograd skips the work of computing it.
        Two threads may run this at once on separate graphs (side_by_side): autograd locks each
        parameter's accumulation, and a sum of two terms is the same in either order.
        """
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward(inputs=trainable(modules))

    def optimizer_step(self, opt: Optimizer, modules: list[nn.Module]) -> None:
        """Average the gradients of `modules` over ranks and step `opt` on them."""
        self.world.all_reduce_grads(modules)
        if self.scaler is not None:
            self.scaler.step(opt)
        elif self.master_of:
            # bf16-full: Adam steps the fp32 masters on the copies' gradients, and the copies
            # take the new weights, rounded to their dtype. Slice by slice of about a million
            # weights, so that only one slice's fp32 gradients exist at a time (20 MB less peak
            # memory at issue 13's 64 px config, docs/benchmarks.md): Adam acts weight by weight,
            # so the update is bit for bit that of one step over all of them.
            for params in _slices(trainable(modules), MASTER_STEP_SLICE):
                for p in params:
                    master = self.master_of[p]
                    master.grad = None if p.grad is None else p.grad.to(master.dtype)
                    p.grad = None
                opt.step()
                with torch.no_grad():
                    for p in params:
                        master = self.master_of[p]
                        master.grad = None
                        p.copy_(master)
        else:
            opt.step()

    def pool_query(self, name: str, fakes: torch.Tensor) -> torch.Tensor:
        """The pool acts on the global batch with the shared RNG, so all ranks stay identical."""
        pool = self.pools[name]
        if pool.size == 0:
            return fakes.detach()
        return self.world.local(pool.query(self.world.gather(fakes.detach().float()), self.rng)).to(
            fakes.dtype
        )

    def side_by_side(self, f: Callable[[], Any], g: Callable[[], Any]) -> tuple[Any, Any]:
        """(f(), g()): at once in a worker thread and this one when split_threads > 0, each with
        split_threads intra-op threads (this thread's count is restored after), else in turn.

        For small networks on a CPU, two single-threaded halves of a step keep two cores busier
        than one step whose every operator is split over both (docs/benchmarks.md). f and g must
        not share mutable state other than gradient accumulation, nor draw from a shared RNG:
        their order in time is not fixed.
        """
        n = self.split_threads
        if n <= 0:
            return f(), g()

        def in_worker() -> Any:
            torch.set_num_threads(n)
            return f()

        before = torch.get_num_threads()
        pending = _side_worker().submit(in_worker)
        torch.set_num_threads(n)
        try:
            b = g()
        except BaseException:
            pending.exception()  # let the worker finish before the error leaves the step
            raise
        finally:
            torch.set_num_threads(before)
        return pending.result(), b


_SIDE_WORKER: tuple[int, ThreadPoolExecutor] | None = None


def _side_worker() -> ThreadPoolExecutor:
    """The one thread that runs the other half of side_by_side calls, made on first use in each
    process: a process forked after training has no copy of its parent's thread, so it makes its
    own rather than queueing work for a thread that does not exist there."""
    global _SIDE_WORKER
    if _SIDE_WORKER is None or _SIDE_WORKER[0] != os.getpid():
        _SIDE_WORKER = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="culturegan-side"))
    return _SIDE_WORKER[1]


def make_optimizer(
    params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float], fast: bool
) -> Optimizer:
    """Adam. `fast`: torch's fused kernel (one kernel for all parameters) through FusedAdam,
    which leaves torch.optim (and the ~150 MB that its first use imports) out of the process;
    else the plain per-parameter torch.optim.Adam, as in the reference code."""
    params = list(params)
    if fast and params and fused_adam_supported(params[0].device):
        return FusedAdam(params, lr=lr, betas=betas)
    if fast:
        return torch.optim.Adam(params, lr=lr, betas=betas, foreach=True)
    return torch.optim.Adam(params, lr=lr, betas=betas, foreach=False)


def linear_decay(steps: int, decay_start: float) -> Callable[[int], float]:
    """lr factor: 1 for the first `decay_start` share of steps, then linear down to 0 at `steps`."""
    constant = round(decay_start * steps)
    decay = max(1, steps - constant)

    def factor(step: int) -> float:
        return 1.0 - max(0, step - constant) / decay

    return factor


MASTER_STEP_SLICE = 1_000_000  # weights whose fp32 gradients bf16-full's optimiser step holds at once


def _slices(params: list[nn.Parameter], size: int) -> list[list[nn.Parameter]]:
    """`params` in order, cut into consecutive runs of about `size` elements (a larger one alone)."""
    out: list[list[nn.Parameter]] = [[]]
    total = 0
    for p in params:
        if out[-1] and total + p.numel() > size:
            out.append([])
            total = 0
        out[-1].append(p)
        total += p.numel()
    return out if out[0] else []


def trainable(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    """The parameters of `modules` that require grad: those a backward and a step act on."""
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def set_requires_grad(modules: Iterable[nn.Module], flag: bool) -> None:
    # D's weights need no gradient while G learns: skips computing and storing them.
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


@contextlib.contextmanager
def eval_mode(modules: Iterable[nn.Module]) -> Iterator[None]:
    modules = list(modules)
    states = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, s in zip(modules, states, strict=True):
            m.train(s)
