"""Image operations shared by metrics, baselines and cultural-distance views.

Colour conversion is scikit-image's; SSIM computes what scikit-image's structural_similarity does,
for a whole batch at once; the rest is numpy/scipy.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage
from skimage import color


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float64 in [0, 1]."""
    return np.asarray(images, dtype=np.float64) / 255.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float images in [0, 1] -> uint8, rounded and clipped."""
    return np.clip(np.rint(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)


def rgb_to_lab(images: np.ndarray) -> np.ndarray:
    """uint8 sRGB (..., 3) -> CIE Lab (D65, 2 degree observer), float64: L in [0, 100]."""
    return color.rgb2lab(to_unit(images))


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab (..., 3) -> uint8 sRGB; colours outside the sRGB gamut are clipped.

    skimage clips twice: f(Z) = (L + 16) / 116 - b / 200 at 0 (b far above what L allows: very
    saturated yellows), then linear RGB to [0, 1]. Before it used skimage, this function let f(Z)
    go negative: the two differ for those yellows only (some of Reinhard's outputs into gold ground,
    dot painting and photo).
    """
    with warnings.catch_warnings():
        # skimage warns on every call that clips f(Z); Reinhard's stretched statistics do that
        # routinely, and the clipping is the documented behaviour here.
        warnings.filterwarnings("ignore", "Conversion from CIE-LAB", UserWarning)
        return to_uint8(color.lab2rgb(np.asarray(lab, dtype=np.float64)))


def luminance(images: np.ndarray) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) -> luma (ITU-R BT.601, as PIL's 'L') in [0, 1], (N, H, W)."""
    return to_unit(images) @ np.array([0.299, 0.587, 0.114])


def sobel_magnitude(gray: np.ndarray) -> np.ndarray:
    """Gradient magnitude of (N, H, W) images; divided by 4 so a unit step scores 1."""
    gx = ndimage.sobel(gray, axis=-1, mode="reflect")
    gy = ndimage.sobel(gray, axis=-2, mode="reflect")
    return np.hypot(gx, gy) / 4.0


SSIM_SIGMA, SSIM_TRUNCATE = 1.5, 3.5  # gaussian window of 2 * round(3.5 * 1.5) + 1 = 11 pixels


def ssim_window(sigma: float = SSIM_SIGMA) -> int:
    """Side of the SSIM window: images must be at least this large."""
    return 2 * int(SSIM_TRUNCATE * sigma + 0.5) + 1


def _check_ssim(x: np.ndarray, y: np.ndarray, ndim: int, sigma: float) -> None:
    if x.shape != y.shape or x.ndim != ndim:
        shape = "(N, H, W)" if ndim == 3 else "(N, H, W, C)"
        raise ValueError(f"ssim needs two {shape} batches of one shape, got {x.shape} and {y.shape}")
    if min(x.shape[1:3]) < ssim_window(sigma):
        raise ValueError(
            f"images of {x.shape[1:3]} are smaller than the {ssim_window(sigma)}-pixel SSIM window"
        )


def _ssim_maps(x: np.ndarray, y: np.ndarray, data_range: float, sigma: float) -> np.ndarray:
    """SSIM maps of (N, C, H, W) float64 batches, filtered over H and W only: the arithmetic of
    skimage's structural_similarity (Wang et al. 2004; gaussian window truncated at 3.5 sigma as
    SSIM_TRUNCATE, reflect mode, population covariances), done for the whole batch in five
    filter calls instead of five per image and channel."""

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma, mode="reflect", truncate=SSIM_TRUNCATE, axes=(2, 3))

    ux, uy = blur(x), blur(y)
    uxx, uyy, uxy = blur(x * x), blur(y * y), blur(x * y)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    a1, a2 = 2 * ux * uy + c1, 2 * vxy + c2
    b1, b2 = ux**2 + uy**2 + c1, vx + vy + c2
    return (a1 * a2) / (b1 * b2)


def _ssim_means(maps: np.ndarray, sigma: float) -> np.ndarray:
    """(N, C) means of SSIM maps without the border of one window radius, each taken as skimage
    takes it (a crop of one contiguous map), so the scores equal its to the last bit."""
    pad = (ssim_window(sigma) - 1) // 2
    return np.array(
        [[m[pad:-pad, pad:-pad].mean(dtype=np.float64) for m in image] for image in maps]
    ).reshape(maps.shape[:2])


SSIM_CHUNK_VALUES = 1 << 22  # float64 values per image chunk: the maps' ~15 temporaries stay near 0.5 GB


def _ssim_batch(x: np.ndarray, y: np.ndarray, data_range: float, sigma: float) -> np.ndarray:
    """(N, C) SSIM scores of (N, C, H, W) batches, in chunks of images so that memory does not
    grow with the number of images."""
    per_image = max(1, int(np.prod(x.shape[1:])))
    step = max(1, SSIM_CHUNK_VALUES // per_image)
    parts = [
        _ssim_means(_ssim_maps(x[i : i + step], y[i : i + step], data_range, sigma), sigma)
        for i in range(0, len(x), step)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, x.shape[1]))


def ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Per-image SSIM of (N, H, W) float batches: skimage's structural_similarity of each pair
    (Wang et al. 2004, gaussian window, population covariances, the border of one window radius
    left out), computed for the batch at once."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    _check_ssim(x, y, 3, sigma)
    return _ssim_batch(x[:, None], y[:, None], data_range, sigma)[:, 0]


def ssim_rgb(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-image SSIM of uint8 RGB batches (N, H, W, 3): the mean over the three channels."""
    xs, ys = to_unit(x), to_unit(y)
    _check_ssim(xs, ys, 4, SSIM_SIGMA)
    # channels first and contiguous, so each channel's map is laid out as skimage's is
    xs, ys = (np.ascontiguousarray(a.transpose(0, 3, 1, 2)) for a in (xs, ys))
    per_channel = _ssim_batch(xs, ys, 1.0, SSIM_SIGMA)
    return np.array([channels.mean() for channels in per_channel])


def downsample(images: np.ndarray, factor: int) -> np.ndarray:
    """Area-average each `factor` x `factor` block of uint8 (N, H, W, C) images, rounded back to
    uint8: (N, H // factor, W // factor, C). A remainder row or column is cut off."""
    n, h, w, c = images.shape
    h, w = h // factor * factor, w // factor * factor
    if h == 0 or w == 0:
        raise ValueError(f"cannot shrink {images.shape[1]}x{images.shape[2]} images by {factor}")
    blocks = images[:, :h, :w].reshape(n, h // factor, factor, w // factor, factor, c)
    return np.round(blocks.mean(axis=(2, 4), dtype=np.float64)).astype(np.uint8)


def edge_map(images: np.ndarray) -> np.ndarray:
    """Sobel magnitude of luminance, scaled per image by its 99th percentile and clipped to [0, 1].

    The per-image scale makes the map about where edges are, not how strong: styles change
    contrast (ink on paper, flat prints) and that should not count as losing the content.
    """
    mag = sobel_magnitude(luminance(images))
    scale = np.percentile(mag.reshape(len(mag), -1), 99, axis=1)
    return np.clip(mag / np.maximum(scale, 1e-6)[:, None, None], 0.0, 1.0)


def rgb_histograms(images: np.ndarray, bins: int) -> np.ndarray:
    """Normalised joint RGB histograms, (N, bins**3), one per uint8 image."""
    q = (np.asarray(images, dtype=np.int64) * bins) // 256  # (N, H, W, 3) bin per channel
    index = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    n = len(images)
    flat = index.reshape(n, -1) + (np.arange(n) * bins**3)[:, None]
    counts = np.bincount(flat.ravel(), minlength=n * bins**3).reshape(n, bins**3)
    return counts / counts.sum(axis=1, keepdims=True)


def hellinger(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hellinger distance in [0, 1] between rows of two normalised histogram arrays."""
    bc = np.sqrt(np.asarray(p) * np.asarray(q)).sum(axis=-1)
    return np.sqrt(np.clip(1.0 - bc, 0.0, None))


def high_frequency_share(images: np.ndarray, band: float = 0.75) -> np.ndarray:
    """Per-image share of luminance spectral energy (mean removed) above `band` x Nyquist.

    Checkerboard and speckle put their energy at the top of the spectrum (a period-2 pattern sits
    at Nyquist itself), where painted or photographed scenes have little: a generator's share well
    above the target style's is a sign of artefacts, not of style.
    """
    gray = luminance(images)  # (N, H, W)
    gray = gray - gray.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(gray)) ** 2
    fy = np.abs(np.fft.fftfreq(gray.shape[1]))[:, None] / 0.5  # 1.0 at Nyquist
    fx = np.abs(np.fft.fftfreq(gray.shape[2]))[None, :] / 0.5
    high = np.maximum(fy, fx) >= band  # the outer square ring of the spectrum
    total = power.sum(axis=(1, 2))
    return power[:, high].sum(axis=1) / np.maximum(total, 1e-12)


def tiles(images: np.ndarray, size: int | None) -> np.ndarray:
    """The non-overlapping `size` x `size` tiles of every image, row by row, image after image:
    (N, H, W, C) -> (N * (H // size) * (W // size), size, size, C). A remainder is cut off.
    `size` None (evaluation.tile_size null) keeps the whole images: they are the units scored."""
    if size is None:
        return images
    n, h, w, c = images.shape
    ny, nx = h // size, w // size
    if ny == 0 or nx == 0:
        raise ValueError(f"tile size {size} is larger than the {h}x{w} images")
    cut = images[:, : ny * size, : nx * size]
    return (
        cut.reshape(n, ny, size, nx, size, c).transpose(0, 1, 3, 2, 4, 5).reshape(-1, size, size, c)
    )
