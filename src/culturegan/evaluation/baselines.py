"""Non-GAN baselines, each `(sources, target_refs) -> outputs` on uint8 (N, H, W, 3) arrays.

The references are TRAIN images of the target style only, so no baseline sees the test set.
Gatys et al. (2016) needs VGG-19 weights and runs only when `evaluation.vgg_weights` is a local file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from skimage import exposure

from culturegan.config import EvaluationConfig, GatysConfig
from culturegan.evaluation import imageops
from culturegan.evaluation.weights import load_local_weights

if TYPE_CHECKING:  # torch is imported lazily: only Gatys needs it
    import torch

log = logging.getLogger(__name__)

Baseline = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _check(sources: np.ndarray, refs: np.ndarray) -> None:
    for name, a in (("sources", sources), ("target_refs", refs)):
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3 or len(a) == 0:
            raise ValueError(
                f"{name} must be a non-empty uint8 (N, H, W, 3) array, got {a.dtype} {a.shape}"
            )


def identity(sources: np.ndarray, target_refs: np.ndarray) -> np.ndarray:
    """The source itself: the score of doing nothing, against which every gain is measured."""
    _check(sources, target_refs)
    return sources.copy()


def reinhard(sources: np.ndarray, target_refs: np.ndarray) -> np.ndarray:
    """Reinhard et al. (2001) colour transfer: match each source's Lab mean and std to the target's.

    The target statistics are the averages of the per-image means and stds of the references,
    i.e. those of a typical target image (pooling all pixels would add between-image spread).
    """
    _check(sources, target_refs)
    src = imageops.rgb_to_lab(sources)  # (N, H, W, 3)
    ref = imageops.rgb_to_lab(target_refs)
    mu_t = ref.mean(axis=(1, 2)).mean(axis=0)
    sd_t = ref.std(axis=(1, 2)).mean(axis=0)
    mu_s = src.mean(axis=(1, 2), keepdims=True)
    sd_s = src.std(axis=(1, 2), keepdims=True)
    out = (src - mu_s) / np.maximum(sd_s, 1e-6) * sd_t + mu_t
    return imageops.lab_to_rgb(out)


def histogram_matching(sources: np.ndarray, target_refs: np.ndarray) -> np.ndarray:
    """Per-channel histogram matching of each source to the pooled histogram of all references.

    skimage.exposure.match_histograms, channel by channel: each source value goes to the target
    value at the same cumulative share, interpolated between the target's values, then rounded.
    (On a uint8 RGB image with channel_axis, skimage writes the interpolated values into a uint8
    array, i.e. truncates them; one grey channel comes back as float, which is rounded here.)
    skimage counts the pooled references again for every source: about 0.25 s for 60 sources
    against 240 references of 64 px, where a shared lookup table took 0.01 s.
    """
    _check(sources, target_refs)
    out = np.empty_like(sources)
    for c in range(3):
        # One tall grey image holding every reference pixel of this channel (contiguous: skimage
        # flattens it for every source).
        pooled = np.ascontiguousarray(target_refs[..., c]).reshape(-1, target_refs.shape[2])
        for i, src in enumerate(sources[..., c]):
            matched = exposure.match_histograms(src, pooled)  # float64
            out[i, ..., c] = np.clip(np.rint(matched), 0, 255).astype(np.uint8)
    return out


# VGG-19 `features` indices (torchvision layout): relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 for
# style, relu4_2 for content, as in Gatys et al.
_STYLE_LAYERS = (1, 6, 11, 20, 29)
_CONTENT_LAYER = 22
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def load_vgg19_features(weights: Path) -> torch.nn.Sequential:
    """VGG-19 conv layers up to relu5_1 from a LOCAL torchvision vgg19 state_dict (never downloaded).

    A full vgg19 state_dict works, and so does one holding only its `features.*` tensors.
    """
    from torchvision.models.vgg import cfgs, make_layers

    features = load_local_weights(
        lambda: make_layers(cfgs["E"], batch_norm=False),
        weights,
        "evaluation.vgg_weights",
        "vgg19",
        missing_hint="point it at a local torchvision vgg19 state_dict file, or set it to null to skip Gatys",
        wrong_hint="save one with torch.save(torchvision.models.vgg19(...).state_dict(), path)",
        select=lambda state: {
            k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
        },
    )
    net = features[: _STYLE_LAYERS[-1] + 1].eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class GatysTransfer:
    """Gatys et al. (2016): optimise the output image for VGG content and Gram-matrix style losses.

    Starts from the source image (keeps the scene with few steps); the style target is the mean
    Gram matrix over up to `max_refs` reference images, i.e. the style of the set, not one painting.
    """

    def __init__(self, weights: Path, cfg: GatysConfig, seed: int = 0) -> None:
        self.net = load_vgg19_features(weights)
        self.cfg = cfg
        self.seed = seed

    def _features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        import torch

        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        h = (x - mean) / std
        style, content = [], None
        for i, layer in enumerate(self.net):
            h = layer(h)
            if i in _STYLE_LAYERS:
                style.append(self._gram(h))
            if i == _CONTENT_LAYER:
                content = h
        return style, content

    @staticmethod
    def _gram(h: torch.Tensor) -> torch.Tensor:
        b, c, height, width = h.shape
        f = h.reshape(b, c, height * width)
        return f @ f.transpose(1, 2) / (c * height * width)  # (B, C, C)

    def __call__(self, sources: np.ndarray, target_refs: np.ndarray) -> np.ndarray:
        import torch
        from torch.nn import functional as F

        _check(sources, target_refs)
        torch.manual_seed(self.seed)
        cfg = self.cfg

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255.0

        pick = (
            np.linspace(0, len(target_refs) - 1, min(cfg.max_refs, len(target_refs)))
            .round()
            .astype(int)
        )
        with torch.no_grad():
            style_grams = [
                g.mean(0, keepdim=True) for g in self._features(tensor(target_refs[pick]))[0]
            ]
        out = []
        for i in range(0, len(sources), cfg.batch_size):
            src = tensor(sources[i : i + cfg.batch_size])
            with torch.no_grad():
                content_target = self._features(src)[1]
            x = src.clone().requires_grad_(True)
            opt = torch.optim.Adam([x], lr=cfg.lr)
            for _ in range(cfg.steps):
                grams, content = self._features(x)
                style_loss = sum(
                    F.mse_loss(g, t.expand_as(g)) for g, t in zip(grams, style_grams, strict=True)
                )
                loss = (
                    cfg.content_weight * F.mse_loss(content, content_target)
                    + cfg.style_weight * style_loss
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.clamp_(0.0, 1.0)
            out.append(x.detach().permute(0, 2, 3, 1).numpy())
        return imageops.to_uint8(np.concatenate(out))


BASELINES: dict[str, Baseline] = {
    "identity": identity,
    "reinhard": reinhard,
    "histogram": histogram_matching,
}


def make_baselines(
    cfg: EvaluationConfig, seed: int = 0
) -> tuple[dict[str, Baseline], dict[str, str]]:
    """The baselines listed in `cfg.baselines`, and {name: why} for those that cannot run here."""
    methods: dict[str, Baseline] = {}
    skipped: dict[str, str] = {}
    for name in cfg.baselines:
        if name == "gatys":
            if cfg.vgg_weights is None:
                skipped[name] = (
                    "evaluation.vgg_weights is not set (VGG-19 weights are never downloaded)"
                )
                continue
            methods[name] = GatysTransfer(cfg.vgg_weights, cfg.gatys, seed)
        else:
            methods[name] = BASELINES[name]
    return methods, skipped
