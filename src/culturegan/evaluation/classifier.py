"""A small CNN style classifier trained in the pipeline; its penultimate layer is the FID/KID feature space.

No downloaded weights: the feature space is learnt from the TRAIN split of the styles themselves,
so it is about these styles (Inception's ImageNet classes are not; RESEARCH.md).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from culturegan.config import ClassifierConfig, Params
from culturegan.errors import CheckpointError, ValidationFailed
from culturegan.evaluation.imageops import tiles
from culturegan.evaluation.imageset import load_split, manifest_styles
from culturegan.fileio import atomic_write_text
from culturegan.torchfile import save_torch_file

log = logging.getLogger(__name__)

CLASSIFIER_FILE = "classifier.pt"
CLASSIFIER_REPORT = "classifier.json"
FORMAT_VERSION = 1


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class StyleNet(nn.Module):
    """Five 3x3 conv layers, global average pooling, a feature layer and a linear head.

    The first layer keeps full resolution because style lives in fine texture (paper grain,
    dry-brush fibre, brush dabs); pooling over the whole image throws the scene layout away.
    """

    def __init__(self, n_styles: int, width: int = 32, feature_dim: int = 128) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            _conv(3, w, 1),  # (B, w, S, S)
            _conv(w, w, 2),  # (B, w, S/2, S/2)
            _conv(w, 2 * w, 2),  # (B, 2w, S/4, S/4)
            _conv(2 * w, 4 * w, 2),  # (B, 4w, S/8, S/8)
            _conv(4 * w, 4 * w, 2),  # (B, 4w, S/16, S/16)
        )
        self.embed = nn.Sequential(nn.Linear(4 * w, feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(feature_dim, n_styles)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, feature_dim) penultimate activations."""
        return self.embed(self.body(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def to_input(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, size, size) in [-1, 1] (antialiased resize if needed)."""
    x = (
        torch.from_numpy(np.ascontiguousarray(images))
        .permute(0, 3, 1, 2)
        .float()
        .div(127.5)
        .sub(1.0)
    )
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    return x


@dataclass
class StyleClassifier:
    """Trained StyleNets (one, or an ensemble of seeds) with their style list: features and
    probabilities of uint8 image batches. An ensemble's features are its members' side by side and
    its probabilities their mean."""

    nets: list[StyleNet]
    styles: list[str]
    input_size: int
    batch_size: int = 64
    name: str = "classifier"
    seeds: list[int] | None = None  # the members' training seeds, when known

    def member_columns(self) -> list[slice]:
        """Each member's columns in `features`: its own feature space. Empty for a single net."""
        if len(self.nets) < 2:
            return []
        ends = np.cumsum([0] + [net.head.in_features for net in self.nets])
        return [slice(int(a), int(b)) for a, b in itertools.pairwise(ends)]

    @torch.no_grad()
    def _run(self, images: np.ndarray, head: bool) -> torch.Tensor:
        """Features (N, members × feature_dim), or each member's softmax (members, N, n_styles)."""
        out = []
        for net in self.nets:
            net.eval()
        for i in range(0, len(images), self.batch_size):
            x = to_input(images[i : i + self.batch_size], self.input_size)
            feats = [net.features(x) for net in self.nets]
            if head:
                out.append(torch.stack([F.softmax(net.head(f), dim=1) for net, f in zip(self.nets, feats, strict=True)]))
            else:
                out.append(torch.cat(feats, dim=1))
        if head:
            return torch.cat(out, dim=1) if out else torch.zeros((len(self.nets), 0, len(self.styles)))
        return torch.cat(out) if out else torch.zeros((0, sum(net.head.in_features for net in self.nets)))

    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, members × feature_dim) float64 penultimate-layer features: the 'classifier' space."""
        return self._run(images, head=False).double().numpy()

    __call__ = features

    def member_proba(self, images: np.ndarray) -> torch.Tensor:
        """(members, N, n_styles) float32 softmax probabilities of each member alone."""
        return self._run(images, head=True)

    @staticmethod
    def mean_proba(member_proba: torch.Tensor) -> np.ndarray:
        """The ensemble's (N, n_styles) float64 probabilities from `member_proba`: the members' mean."""
        return member_proba.mean(0).double().numpy()

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """(N, n_styles) softmax probabilities (the members' mean), columns in the order of `styles`."""
        return self.mean_proba(self.member_proba(images))


def _augment(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and translations: both keep every style cue (colour, strokes, grain)."""
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if max_shift == 0:
        return x
    size = x.shape[-1]
    padded = F.pad(x, (max_shift,) * 4, mode="reflect")
    offsets = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=gen).tolist()
    return torch.stack(
        [padded[i, :, dy : dy + size, dx : dx + size] for i, (dy, dx) in enumerate(offsets)]
    )


def _swap_histograms(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """With probability `p` per image, give it the per-channel value histograms of another image
    of the batch (exact histogram matching: each pixel keeps its rank, takes the other image's value
    at that rank). Texture, strokes and outlines survive; the colour statistics become another
    style's, so the classifier cannot learn that colour alone decides (RESEARCH.md, trap 7)."""
    if p <= 0:
        return x
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1)  # (B, C, HW)
    ref = flat[torch.randperm(b, generator=gen)].sort(dim=-1).values
    matched = ref.gather(-1, flat.argsort(dim=-1).argsort(dim=-1)).reshape(x.shape)
    take = torch.rand(b, generator=gen) < p
    return torch.where(take[:, None, None, None], matched, x)


def _damage(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """With probability `p` per image, damage it while it keeps its label: half of those are
    blurred (Gaussian, sigma 0.5-2 px), half get Gaussian noise (sigma 0.05-0.2 of the range).
    Without this, a blurred photo can sit nearer the impressionist tiles than the photo ones in the
    feature space, and KID then rewards a generator for losing detail (docs/quality.md, "Real art")."""
    if p <= 0:
        return x
    b = len(x)
    take = torch.rand(b, generator=gen) < p
    blur = torch.rand(b, generator=gen) < 0.5
    sigma = 0.5 + 1.5 * torch.rand(b, generator=gen)
    radius = 6
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernels = torch.exp(-(t[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    kernels = kernels / kernels.sum(dim=1, keepdim=True)  # (B, 2r+1)
    c = x.shape[1]
    padded = F.pad(x, (radius,) * 4, mode="reflect").reshape(1, b * c, *[s + 2 * radius for s in x.shape[2:]])
    kx = kernels.repeat_interleave(c, dim=0)  # (B*C, 2r+1), one kernel per image, per channel
    blurred = F.conv2d(padded, kx[:, None, None, :], groups=b * c)
    blurred = F.conv2d(blurred, kx[:, None, :, None], groups=b * c).reshape(x.shape)
    level = (0.1 + 0.3 * torch.rand(b, generator=gen))[:, None, None, None]  # 0.05-0.2 of [0, 1] in [-1, 1] units
    noisy = (x + level * torch.randn(x.shape, generator=gen, dtype=x.dtype)).clamp(-1.0, 1.0)
    damaged = torch.where(blur[:, None, None, None], blurred, noisy)
    return torch.where(take[:, None, None, None], damaged, x)


def _confusion(true: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(true * n + pred, minlength=n * n).reshape(n, n)


def train_style_classifier(params: Params, data_root: Path, out_dir: Path) -> dict[str, Any]:
    """Train the style classifier on the TRAIN split of every style; score it on the TEST split.

    Writes `out_dir/classifier.pt` (loadable with torch.load(weights_only=True)) and
    `out_dir/classifier.json` (test accuracy per style and the confusion matrix).
    """
    start = time.perf_counter()
    cfg: ClassifierConfig = params.evaluation.classifier
    data_root, out_dir = Path(data_root), Path(out_dir)
    styles = manifest_styles(data_root, "train")
    if len(styles) < 2:
        raise ValidationFailed(
            f"the style classifier needs at least two styles with train images in {data_root}, found {styles}",
            hint="prepare data with two or more styles",
        )
    tile = params.evaluation.tile_size

    def samples(split: str) -> list[np.ndarray]:
        """Per style: its images, or their fixed tiles when evaluation scores tiles (same scale)."""
        return [tiles(load_split(data_root, s, split).images, tile) for s in styles]

    train, test = samples("train"), samples("test")
    x_train = to_input(np.concatenate(train), cfg.input_size)
    y_train = torch.cat([torch.full((len(t),), k, dtype=torch.long) for k, t in enumerate(train)])

    seeds = [params.seed + k for k in range(cfg.ensemble)]
    members = [_train_net(cfg, len(styles), x_train, y_train, seed) for seed in seeds]
    nets = [net for net, _ in members]
    train_accuracy = float(np.mean([acc for _, acc in members]))

    clf = StyleClassifier(nets, styles, cfg.input_size, cfg.batch_size)
    y_true = np.concatenate([np.full(len(t), k) for k, t in enumerate(test)])
    members_proba = clf.member_proba(np.concatenate(test))  # one pass of every member
    y_pred = clf.mean_proba(members_proba).argmax(1)
    member_accuracy = [  # each member alone, when there are several
        float((proba.argmax(1).numpy() == y_true).mean()) for proba in (members_proba if len(nets) > 1 else [])
    ]
    confusion = _confusion(y_true, y_pred, len(styles))
    per_style = {
        s: float(confusion[k, k] / max(confusion[k].sum(), 1)) for k, s in enumerate(styles)
    }
    seconds = time.perf_counter() - start

    checkpoint: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "styles": styles,
        "config": cfg.model_dump(mode="json"),
        "seed": params.seed,
    }
    if len(nets) == 1:  # one classifier: the layout of the files written before ensembles
        checkpoint["state_dict"] = nets[0].state_dict()
    else:
        checkpoint["state_dicts"] = [n.state_dict() for n in nets]
    out_dir.mkdir(parents=True, exist_ok=True)
    save_torch_file(out_dir / CLASSIFIER_FILE, checkpoint)  # same weights, same bytes (DVC)
    report = {
        "styles": styles,
        "test_accuracy": float((y_pred == y_true).mean()),
        "test_accuracy_per_style": per_style,
        "confusion": {
            "rows": "true style",
            "columns": "predicted style",
            "matrix": confusion.tolist(),
        },
        "train_accuracy_last_epoch": train_accuracy,
        "n_train": {s: len(t) for s, t in zip(styles, train, strict=True)},
        "n_test": {s: len(t) for s, t in zip(styles, test, strict=True)},
        "tile_size": tile,
        "feature_dim": cfg.feature_dim,
        "epochs": cfg.epochs,
        "seed": params.seed,
        "seconds": round(seconds, 3),
    }
    if len(nets) > 1:
        report["ensemble_seeds"] = seeds
        report["test_accuracy_members"] = member_accuracy
    atomic_write_text(out_dir / CLASSIFIER_REPORT, json.dumps(report, indent=2) + "\n")
    log.info("style classifier: test accuracy %.3f in %.1f s", report["test_accuracy"], seconds)
    return {
        "classifier": str(out_dir / CLASSIFIER_FILE),
        "report": str(out_dir / CLASSIFIER_REPORT),
        "test_accuracy": report["test_accuracy"],
        "test_accuracy_per_style": per_style,
        "seconds": report["seconds"],
    }


def load_classifier(path: Path, batch_size: int = 64) -> StyleClassifier:
    """Load `classifier.pt` written by train_style_classifier (weights only: no code is unpickled)."""
    path = Path(path)
    hint = "run the classifier stage (`culturegan classifier`, or `dvc repro classifier`) to write it"
    if not path.is_file():
        raise CheckpointError(f"style classifier {path} not found", hint=hint)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path} has format {ckpt.get('format_version')}, expected {FORMAT_VERSION}",
                hint=hint,
            )
        cfg = ClassifierConfig.model_validate(ckpt["config"])
        nets = []
        for state in ckpt["state_dicts"] if "state_dicts" in ckpt else [ckpt["state_dict"]]:
            net = StyleNet(len(ckpt["styles"]), cfg.width, cfg.feature_dim)
            net.load_state_dict(state)
            nets.append(net.eval())
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 (a truncated or foreign file fails in many ways; all mean "rewrite it")
        raise CheckpointError(
            f"{path} is not a readable style classifier: {err}", hint=hint
        ) from None
    seed = ckpt.get("seed")
    seeds = [int(seed) + k for k in range(len(nets))] if isinstance(seed, int) else None
    return StyleClassifier(nets, list(ckpt["styles"]), cfg.input_size, batch_size, seeds=seeds)


def _train_net(
    cfg: ClassifierConfig, n_styles: int, x_train: torch.Tensor, y_train: torch.Tensor, seed: int
) -> tuple[StyleNet, float]:
    """One StyleNet trained from `seed`: (the net in eval mode, its last epoch's train accuracy)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = StyleNet(n_styles, cfg.width, cfg.feature_dim)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(x_train) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch
    )
    net.train()
    correct = seen = 0
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(x_train), generator=gen)
        correct = seen = 0
        loss_sum = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples; a lone last image is dropped this epoch
                continue
            x = _swap_histograms(_augment(x_train[idx], cfg.max_shift, gen), cfg.colour_augment, gen)
            x = _damage(x, cfg.damage_augment, gen)
            logits = net(x)
            loss = F.cross_entropy(logits, y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.detach().argmax(1) == y_train[idx]).sum())
            seen += len(idx)
        log.info(
            "classifier epoch %d/%d: loss %.4f, train accuracy %.3f",
            epoch + 1,
            cfg.epochs,
            loss_sum / max(seen, 1),
            correct / max(seen, 1),
        )

    return net.eval(), correct / max(seen, 1)
