"""Adam through torch's fused kernel, and the trainer's lr schedule, without torch.optim.

The first use of any `torch.optim.Optimizer` (constructing one, zero_grad, step, state_dict)
imports torch._dynamo, and with it sympy and triton: about 150 MB of the training process's
peak memory for nothing the trainer uses (docs/benchmarks.md). `FusedAdam` calls the same fused
kernel that `torch.optim.Adam(fused=True)` calls, `torch._fused_adam_`, with the same arguments,
so its updates are bit-identical (tests/test_training.py checks it), and it reads and writes
torch.optim.Adam's state_dict format, so checkpoints move between the two. `LinearDecay` is the
trainer's schedule (constant, then linear to 0) with LambdaLR's state_dict keys.

GradScaler (fp16 on a GPU) works with it as with any optimiser: it unscales the gradients found
through `param_groups` and calls `step()` unless it found inf/NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


def fused_adam_supported(device: torch.device) -> bool:
    """Whether torch's fused Adam kernel runs on this device type (CPU and CUDA here)."""
    return device.type in ("cpu", "cuda", "mps")


def _one_layout(p: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """A parameter, its gradient and its two moments for the fused kernel, in one memory layout.

    The CPU kernel pairs the four tensors' elements in memory order: given a channels-last
    parameter and a gradient in the default layout (or the reverse) it updates each weight with
    another weight's gradient, silently (torch 2.14.1; tests/test_training.py). So the gradient
    (each step) and the moments (once, kept) are brought into the parameter's layout, and
    channels-last ones (channels_last training) go as contiguous views in memory order, which
    the kernel takes without copying them to the default layout and back. Parameters in neither
    layout go as they are."""
    grad = p.grad
    assert grad is not None
    cl = torch.channels_last
    if p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=cl):
        layout = cl
    elif p.is_contiguous():
        layout = torch.contiguous_format
    else:
        return p, grad, state["exp_avg"], state["exp_avg_sq"]
    if not grad.is_contiguous(memory_format=layout):
        grad = grad.contiguous(memory_format=layout)
    for k in ("exp_avg", "exp_avg_sq"):
        if not state[k].is_contiguous(memory_format=layout):
            state[k] = state[k].contiguous(memory_format=layout)
    tensors = (p, grad, state["exp_avg"], state["exp_avg_sq"])
    return tuple(t.permute(0, 2, 3, 1) for t in tensors) if layout is cl else tensors


class FusedAdam:
    """Adam (no weight decay, no amsgrad) over one parameter group, one fused kernel per
    (device, dtype) group of parameters."""

    def __init__(
        self, params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float], eps: float = 1e-8
    ) -> None:
        params = list(params)
        if not params:
            raise ValueError("FusedAdam got no parameters")
        # The keys of torch.optim.Adam's param group, so state_dict() reads like its own.
        self.param_groups: list[dict[str, Any]] = [
            {
                "params": params,
                "lr": lr,
                "betas": betas,
                "eps": eps,
                "weight_decay": 0.0,
                "amsgrad": False,
                "maximize": False,
                "foreach": None,
                "capturable": False,
                "differentiable": False,
                "fused": True,
                "decoupled_weight_decay": False,
            }
        ]
        self.state: dict[nn.Parameter, dict[str, torch.Tensor]] = {}

    @property
    def params(self) -> list[nn.Parameter]:
        return self.param_groups[0]["params"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def _state(self, p: nn.Parameter) -> dict[str, torch.Tensor]:
        st = self.state.get(p)
        if st is None:
            st = self.state[p] = {
                "step": torch.zeros((), dtype=torch.float32, device=p.device),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
        return st

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        buckets: dict[tuple[torch.device, torch.dtype], list[nn.Parameter]] = {}
        for p in self.params:
            if p.grad is not None:
                buckets.setdefault((p.device, p.dtype), []).append(p)
        for ps in buckets.values():
            states = [self._state(p) for p in ps]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            tensors = [_one_layout(p, s) for p, s in zip(ps, states, strict=True)]
            torch._fused_adam_(
                [t[0] for t in tensors],
                [t[1] for t in tensors],
                [t[2] for t in tensors],
                [t[3] for t in tensors],
                [],
                steps,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                amsgrad=False,
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.Adam's format: state by parameter index, the group with its indices."""
        index = {id(p): i for i, p in enumerate(self.params)}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {
            "state": {index[id(p)]: dict(s) for p, s in self.state.items()},
            "param_groups": [{**group, "params": list(range(len(self.params)))}],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a state_dict of this class or of torch.optim.Adam over the same parameters."""
        groups = state["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            got = [len(g["params"]) for g in groups]
            raise ValueError(
                f"optimiser state for parameter groups of sizes {got}, expected one of {len(self.params)}"
            )
        for k in ("lr", "betas", "eps"):
            self.param_groups[0][k] = groups[0][k]
        by_index = dict(zip(groups[0]["params"], self.params, strict=True))
        self.state = {}
        for i, s in state["state"].items():
            p = by_index[int(i)]
            if s["exp_avg"].shape != p.shape:
                raise ValueError(
                    f"optimiser state {i} has shape {tuple(s['exp_avg'].shape)}, the parameter {tuple(p.shape)}"
                )
            # Copies, as torch.optim does: the state_dict's tensors may be another optimiser's.
            self.state[p] = {
                "step": torch.tensor(float(s["step"]), dtype=torch.float32, device=p.device),
                "exp_avg": s["exp_avg"].to(p.device, p.dtype, copy=True),
                "exp_avg_sq": s["exp_avg_sq"].to(p.device, p.dtype, copy=True),
            }


Optimizer = FusedAdam | torch.optim.Optimizer  # what the trainer steps: FusedAdam, or torch's plain Adam


class LinearDecay:
    """lr = base lr × factor(steps taken), for an optimiser with `param_groups` (LambdaLR's
    arithmetic and state_dict keys, without torch.optim)."""

    def __init__(self, optimizer: Any, factor: Callable[[int], float]) -> None:
        self.optimizer = optimizer
        self.factor = factor
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.last_epoch = 0
        self._apply()

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * self.factor(self.last_epoch)

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lrs = list(state["base_lrs"])
        self.last_epoch = int(state["last_epoch"])
        self._apply()
