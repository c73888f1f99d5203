"""Differentiable augmentation of discriminator inputs (DiffAugment, Zhao et al. NeurIPS 2020).

With a few hundred images per style the discriminator memorises the training set and its
gradients stop teaching the generator. Every image shown to D, real or generated, goes through
the same random, differentiable transforms, so D cannot overfit them and G's gradient flows
through them. Randomness comes from the trainer's checkpointed torch.Generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

POLICIES = ("translation", "cutout", "color")


def _uniform(n: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=rng).to(device)


def color(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Random brightness, saturation and contrast per image (the DiffAugment ranges)."""
    n, dev = x.shape[0], x.device
    x = x + (_uniform(n, rng, dev) - 0.5).view(n, 1, 1, 1).to(x.dtype)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform(n, rng, dev) * 2).view(n, 1, 1, 1).to(x.dtype) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(n, rng, dev) + 0.5).view(n, 1, 1, 1).to(x.dtype) + mean


def translation(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its size, filling with reflected content."""
    n, _, h, w = x.shape
    sy, sx = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    dy = torch.randint(-sy, sy + 1, (n,), generator=rng).tolist()
    dx = torch.randint(-sx, sx + 1, (n,), generator=rng).tolist()
    padded = F.pad(x, (sx, sx, sy, sy), mode="reflect")  # (B, C, H + 2sy, W + 2sx)
    return torch.stack(
        [padded[i, :, sy + dy[i] : sy + dy[i] + h, sx + dx[i] : sx + dx[i] + w] for i in range(n)]
    )


def cutout(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.25) -> torch.Tensor:
    """Blank one random square of `ratio` of the side per image (to 0, mid-grey in [-1, 1])."""
    n, _, h, w = x.shape
    ch, cw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    cy = torch.randint(0, h - ch + 1, (n,), generator=rng).to(x.device)
    cx = torch.randint(0, w - cw + 1, (n,), generator=rng).to(x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= cy.view(n, 1, 1)) & (ys < (cy + ch).view(n, 1, 1))
    inside = inside & (xs >= cx.view(n, 1, 1)) & (xs < (cx + cw).view(n, 1, 1))
    return x * (~inside).unsqueeze(1).to(x.dtype)  # (B, C, H, W)


_OPS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policies: Sequence[str], rng: torch.Generator) -> torch.Tensor:
    """Apply each policy in order (colour first, as DiffAugment does); no policies: x unchanged."""
    for name in sorted(policies, key=POLICIES.index):
        x = _OPS[name](x, rng)
    return x
