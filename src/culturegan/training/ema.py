"""Exponential moving average of generator weights (as StyleGAN, StarGAN v2 and joliGEN keep).

GAN weights oscillate around the equilibrium from step to step; their running average sits
nearer its centre, so the averaged generator's outputs are steadier and less speckled than the
last iterate's. Training updates the live weights; the outputs are written from the average.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of `module` whose parameters follow the live ones with factor `decay`.

    The effective decay warms up as min(decay, (1 + t) / (10 + t)), so early averages are not
    dominated by the random initialisation in short runs. Buffers (BatchNorm statistics) are
    copied, not averaged.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, live: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for p_ema, p in zip(self.module.parameters(), live.parameters(), strict=True):
            p_ema.lerp_(p.detach(), 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), live.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, object]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.module.load_state_dict(state["module"])  # type: ignore[arg-type]
        self.updates = int(state["updates"])  # type: ignore[arg-type]
