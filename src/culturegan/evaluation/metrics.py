"""Transfer-quality metrics: KID and FID on any feature matrix, deception rate, content and ground-truth scores.

Every FID/KID number is returned under a key naming its feature space (`kid_classifier`,
`fid_inception`, ...): numbers from different spaces are not comparable.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import linalg

from culturegan.evaluation import imageops
from culturegan.evaluation.weights import load_local_weights

log = logging.getLogger(__name__)

FeatureFn = Callable[[np.ndarray], np.ndarray]  # uint8 (N, H, W, 3) -> float (N, D)
# KID keeps whole kernel matrices (8 bytes an entry) up to this many entries: 4 096 samples a set.
KID_KERNEL_CACHE_MAX = 4096**2


def _check_features(
    x: np.ndarray, y: np.ndarray, what: str, min_n: int
) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{what} needs two (N, D) feature matrices of one width, got {x.shape} and {y.shape}"
        )
    if len(x) < min_n or len(y) < min_n:
        raise ValueError(
            f"{what} needs at least {min_n} samples per set, got {len(x)} and {len(y)}"
        )
    return x, y


def kid(
    x: np.ndarray, y: np.ndarray, subsets: int = 100, subset_size: int = 100, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018) on feature matrices: (mean, std) over subsets.

    Unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a.b / D + 1)^3, on `subsets` random
    subsets (without replacement) of min(len(x), len(y), subset_size) samples each. The estimate
    is unbiased, so it can be negative when both sets come from one distribution. When both sets
    are no larger than the subset, every subset is the whole set and the std is 0.
    """
    x, y = _check_features(x, y, "KID", 2)
    m = min(len(x), len(y), subset_size)
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    # With sets of up to a few thousand samples, the kernel between every two samples is computed
    # once and each subset takes its rows and columns: three products instead of three per subset
    # (at the texture space's 1 584 dimensions that was most of the evaluate stage's time).
    whole = max(len(x), len(y)) ** 2 <= KID_KERNEL_CACHE_MAX
    if whole:
        kxx_all = (x @ x.T / d + 1.0) ** 3
        kyy_all = (y @ y.T / d + 1.0) ** 3
        kxy_all = (x @ y.T / d + 1.0) ** 3
    for k in range(subsets):
        ix = rng.choice(len(x), m, replace=False)
        iy = rng.choice(len(y), m, replace=False)
        if whole:
            kxx = kxx_all[np.ix_(ix, ix)]
            kyy = kyy_all[np.ix_(iy, iy)]
            kxy = kxy_all[np.ix_(ix, iy)]
        else:
            xs, ys = x[ix], y[iy]
            kxx = (xs @ xs.T / d + 1.0) ** 3
            kyy = (ys @ ys.T / d + 1.0) ** 3
            kxy = (xs @ ys.T / d + 1.0) ** 3
        # The diagonals k(a, a) are what makes the plain V-statistic biased: leave them out.
        values[k] = (
            (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
            + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2.0 * kxy.mean()
        )
    return float(values.mean()), float(values.std())


def fid(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature matrices (Heusel et al. 2017), float64.

    Biased at small N, and the bias depends on N: compare FIDs only at equal sample sizes.
    """
    x, y = _check_features(x, y, "FID", 2)
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    with warnings.catch_warnings():
        # With fewer samples than dimensions the covariances are singular by construction; sqrtm
        # still returns the right root, so its warning would only be noise.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(s1)) * 1e-6
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        # Rounding (worse with singular covariances) gives small imaginary parts; only the trace
        # enters FID, so warn when they are not small against the diagonal they perturb.
        worst = float(np.abs(np.diagonal(covmean).imag).max())
        scale = max(1e-12, float(np.abs(np.diagonal(covmean).real).mean()))
        (log.warning if worst > 0.01 * scale else log.debug)(
            "FID: sqrtm has imaginary parts up to %.3g on its diagonal; the real part is used",
            worst,
        )
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def relative_gain(kid_method: float, kid_identity: float) -> float | None:
    """1 - KID(G(A), B) / KID(A, B): the share of the source-target gap closed (RESEARCH.md, trap 1).

    None when KID(A, B) is not positive: then the two styles are indistinguishable in this space
    and a ratio means nothing.
    """
    if not kid_identity > 0:
        return None
    return 1.0 - kid_method / kid_identity


def real_floor(
    features: np.ndarray,
    subsets: int = 100,
    subset_size: int = 100,
    seed: int = 0,
    with_fid: bool = True,
) -> dict[str, float]:
    """KID and FID between two random halves of the real target set: what a perfect model would score.

    FID here uses half the samples of a full-set FID, so its (positive) bias is larger; it is left
    out when `with_fid` is false.
    """
    features = np.asarray(features, dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(features))
    half = len(features) // 2
    a, b = features[order[:half]], features[order[half : 2 * half]]
    mean, std = kid(a, b, subsets, subset_size, seed)
    floor = {"kid": mean, "kid_std": std, "n_per_half": half}
    if with_fid:
        floor["fid"] = fid(a, b)
    return floor


def style_accuracy(proba: np.ndarray, target_index: int) -> float:
    """Deception rate (Sanakoyeu et al. 2018): share of images the classifier assigns to the target."""
    proba = np.asarray(proba)
    return float((proba.argmax(axis=1) == target_index).mean())


def content_preservation(sources: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """SSIM between each source and its output, on luminance and on Sobel edge maps (higher keeps more)."""
    _same_shape(sources, outputs)
    return {
        "content_ssim": float(
            imageops.ssim(imageops.luminance(sources), imageops.luminance(outputs)).mean()
        ),
        "content_edge_ssim": float(
            imageops.ssim(imageops.edge_map(sources), imageops.edge_map(outputs)).mean()
        ),
    }


def high_frequency(outputs: np.ndarray, reference_share: float) -> dict[str, float]:
    """Mean high-frequency energy share of `outputs`, and its ratio to the target style's
    (`reference_share`): near 1 is the target's own texture, far above 1 is checkerboard/speckle."""
    share = float(imageops.high_frequency_share(outputs).mean())
    return {"hf_share": share, "hf_ratio": share / reference_share if reference_share > 0 else float("nan")}


def ground_truth_metrics(outputs: np.ndarray, truth: np.ndarray, bins: int = 8) -> dict[str, float]:
    """Scores against the true target rendering of the same scene (synthetic benchmark only).

    SSIM (mean over RGB channels; higher is better), PSNR in dB (higher is better) and the
    Hellinger distance between joint RGB histograms with `bins` per channel (lower is better).
    `gt_ssim_coarse` is the SSIM of both at half resolution (2 x 2 area averages): the scene's
    layout and colour areas above the scale of single brush strokes, where a style whose strokes
    fall at random (impressionist) can still be matched; at full resolution a perfect painter with
    another stroke draw scores no better than a colour transfer (docs/quality.md). It is left out
    for images under twice the SSIM window (22 px).
    """
    _same_shape(outputs, truth)
    mse = ((imageops.to_unit(outputs) - imageops.to_unit(truth)) ** 2).mean(axis=(1, 2, 3))
    # An exact copy has mse 0; the floor keeps PSNR finite (and JSON valid) at about 100 dB.
    psnr = 10.0 * np.log10(1.0 / np.maximum(mse, 1e-10))
    hist = imageops.hellinger(
        imageops.rgb_histograms(outputs, bins), imageops.rgb_histograms(truth, bins)
    )
    scores = {
        "gt_ssim": float(imageops.ssim_rgb(outputs, truth).mean()),
        "gt_psnr": float(psnr.mean()),
        "gt_hist_hellinger": float(hist.mean()),
    }
    if min(truth.shape[1:3]) // 2 >= imageops.ssim_window():  # 22 px and up: not on tiny tiles
        half = (imageops.downsample(outputs, 2), imageops.downsample(truth, 2))
        scores["gt_ssim_coarse"] = float(imageops.ssim_rgb(*half).mean())
    return scores


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(
            f"expected two uint8 (N, H, W, 3) batches of one shape, got {a.shape} and {b.shape}"
        )


class InceptionFeatures:
    """2048-d pool features of a torchvision Inception-v3 loaded from a LOCAL state_dict (never downloaded).

    Secondary feature space: ImageNet classes say little about East Asian art (RESEARCH.md).
    """

    name = "inception"

    def __init__(self, weights: Path, batch_size: int = 32) -> None:
        import torch
        from torchvision.models import inception_v3

        # transform_input=False: inputs are fed already scaled to [-1, 1], as the original
        # TF Inception expects; torchvision's transform_input does the same from ImageNet stats.
        net = load_local_weights(
            lambda: inception_v3(
                weights=None, aux_logits=False, init_weights=False, transform_input=False
            ),
            weights,
            "evaluation.inception_weights",
            "inception_v3",
            missing_hint="point it at a local torchvision inception_v3 state_dict file, or set it to null",
            wrong_hint="save one with torch.save(model.state_dict(), path)",
            # The auxiliary classifier is unused here and absent from the model built without it.
            select=lambda state: {k: v for k, v in state.items() if not k.startswith("AuxLogits.")},
        )
        net.fc = torch.nn.Identity()
        self.net = net.eval()
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch
        from torch.nn import functional as F

        out = []
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[i : i + self.batch_size]))
                x = x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
                x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
                out.append(self.net(x).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, 2048))


class TextureFeatures:
    """A training-free texture space: Gram statistics of a fixed random filter bank.

    Each image's luminance is standardised (zero mean, unit std), so palette, brightness and
    contrast say nothing here: a colour transfer moves an image in this space only through the
    shape of its tone curve (histogram matching's, say), not through its colours.
    At each scale (area averages of `scale` x `scale` pixels) `filters` random zero-mean,
    unit-norm `kernel_size` filters are applied (no padding), rectified, and their Gram matrix
    (F x F, averaged over positions; upper triangle) describes which local structures occur
    together: strokes, outlines, flat areas, grain. Random filters with Gram statistics suffice for
    texture synthesis (Ustyuzhaninov et al., ICLR 2017), and nothing here is trained, so unlike
    the style classifier this space has no training run whose seed moves a verdict; `seed` draws
    the filters. Scales whose averaged images are smaller than the kernel are left out.
    Features are (N, n_scales * F * (F + 1) / 2), float64.
    """

    name = "texture"
    # 1 584 dimensions at the defaults: FID's matrix square root would cost seconds a call, and
    # with tens of images a set FID is biased anyway (RESEARCH.md); this space reports KID only.
    with_fid = False

    def __init__(
        self,
        filters: int = 32,
        kernel_size: int = 5,
        scales: tuple[int, ...] = (1, 2, 4),
        seed: int = 0,
        batch_size: int = 32,
    ) -> None:
        import torch

        gen = torch.Generator().manual_seed(int(seed))
        self.banks = []
        for _ in scales:
            w = torch.randn(filters, 1, kernel_size, kernel_size, generator=gen, dtype=torch.float64)
            w = w - w.mean(dim=(2, 3), keepdim=True)
            self.banks.append(w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
        self.scales = tuple(int(s) for s in scales)
        self.kernel_size = kernel_size
        self.upper = torch.triu_indices(filters, filters)
        self.batch_size = batch_size

    def usable_scales(self, height: int, width: int) -> list[int]:
        """The scales at which a `height` x `width` image still holds one whole kernel."""
        return [s for s in self.scales if min(height, width) // s >= self.kernel_size]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch
        from torch.nn import functional as F

        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"texture features need uint8 (N, H, W, 3) images, got {images.shape}")
        usable = self.usable_scales(images.shape[1], images.shape[2])
        if not usable:
            raise ValueError(
                f"{images.shape[1]}x{images.shape[2]} images are smaller than the texture filters"
                f" ({self.kernel_size} px): lower evaluation.texture.kernel_size or set"
                " evaluation.texture to null"
            )
        out = []
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                y = torch.from_numpy(imageops.luminance(images[i : i + self.batch_size]))[:, None]
                y = (y - y.mean(dim=(2, 3), keepdim=True)) / (y.std(dim=(2, 3), keepdim=True) + 1e-3)
                parts = []
                for scale, bank in zip(self.scales, self.banks, strict=True):
                    if scale not in usable:
                        continue
                    a = F.relu(F.conv2d(F.avg_pool2d(y, scale) if scale > 1 else y, bank))
                    gram = torch.einsum("nfhw,nghw->nfg", a, a) / (a.shape[2] * a.shape[3])
                    parts.append(gram[:, self.upper[0], self.upper[1]])
                out.append(torch.cat(parts, 1).numpy())
        width = len(usable) * len(self.upper[0])
        return np.concatenate(out) if out else np.zeros((0, width))


def distribution_metrics(
    space: str,
    out_feats: np.ndarray,
    target_feats: np.ndarray,
    kid_identity: float | None,
    subsets: int,
    subset_size: int,
    seed: int,
    with_fid: bool = True,
) -> dict[str, Any]:
    """KID (mean, std), FID (unless `with_fid` is false) and the relative KID gain of one method's
    outputs in one feature space."""
    mean, std = kid(out_feats, target_feats, subsets, subset_size, seed)
    record: dict[str, Any] = {f"kid_{space}": mean, f"kid_{space}_std": std}
    if with_fid:
        record[f"fid_{space}"] = fid(out_feats, target_feats)
    if kid_identity is not None:
        record[f"kid_{space}_relative_gain"] = relative_gain(mean, kid_identity)
    return record
