"""What a training run writes besides its checkpoint: sample grids and the final generators with
their metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from culturegan.fileio import atomic_path, atomic_write_text
from culturegan.training.checkpoint import save_generator
from culturegan.training.dataset import to_uint8
from culturegan.training.objectives import CycleGANNets, Nets
from culturegan.training.runtime import eval_mode

__all__ = ["write_outputs", "write_sample_grid"]


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


def write_outputs(
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
