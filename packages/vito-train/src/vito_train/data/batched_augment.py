"""BYOL photometric augmentation computed for a whole batch at once, on the training device.

The CPU workers only decode, crop and flip (``CropPairAugmentation``) and draw each sample's
photometric parameters from its own generator (``draw_photometric_params``); the training step
applies colour jitter, grayscale, Gaussian blur and solarize to the batch with plain tensor ops.
The distributions are those of the per-sample torchvision pipeline in ``augment.py``:
ColorJitter(0.4, 0.4, 0.2, 0.1) with p=0.8 in a random order per sample, grayscale p=0.2,
blur with sigma ~ U(0.1, 2.0) (kernel 10% of the side) and solarize at 128 with the per-view
probabilities of BYOL. Per-sample randomness is a function of (seed, global sample index) only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from vito_train.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ViewAugmentation,
    chw_tensor,
    pair_views,
)

# Column layout of one sample's parameter vector (float32; booleans as 0/1, order as 0..3).
JITTER, BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3, 4
ORDER = slice(5, 9)  # which of brightness(0)/contrast(1)/saturation(2)/hue(3) runs at positions 0..3
GRAY, BLUR, SIGMA, SOLARIZE = 9, 10, 11, 12
N_PARAMS = 13


@dataclass(frozen=True)
class PhotometricDistribution:
    """The BYOL/torchvision parameter ranges (Grill et al. 2020, appendix B)."""

    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    gray_p: float = 0.2
    sigma_min: float = 0.1
    sigma_max: float = 2.0
    solarize_threshold: int = 128  # on the uint8 scale, as RandomSolarize(threshold=128) on uint8


BYOL = PhotometricDistribution()


def draw_photometric_params(
    rng: np.random.Generator, view: ViewAugmentation, dist: PhotometricDistribution = BYOL
) -> np.ndarray:
    """One sample's photometric parameters (a float32 vector laid out as the constants above)."""
    p = np.zeros(N_PARAMS, dtype=np.float32)
    p[JITTER] = rng.random() < dist.jitter_p
    p[BRIGHTNESS] = rng.uniform(1 - dist.brightness, 1 + dist.brightness)
    p[CONTRAST] = rng.uniform(1 - dist.contrast, 1 + dist.contrast)
    p[SATURATION] = rng.uniform(1 - dist.saturation, 1 + dist.saturation)
    p[HUE] = rng.uniform(-dist.hue, dist.hue)
    p[ORDER] = rng.permutation(4)
    p[GRAY] = rng.random() < dist.gray_p
    p[BLUR] = rng.random() < view.blur_p
    p[SIGMA] = rng.uniform(dist.sigma_min, dist.sigma_max)
    p[SOLARIZE] = rng.random() < view.solarize_p
    return p


def random_photometric_params(
    n: int,
    view: ViewAugmentation,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dist: PhotometricDistribution = BYOL,
) -> torch.Tensor:
    """(n, N_PARAMS) parameters drawn with torch ops (benchmarks; training uses the per-sample draw)."""
    u = torch.rand(n, N_PARAMS, generator=generator, device=device)
    p = torch.empty_like(u)
    p[:, JITTER] = (u[:, JITTER] < dist.jitter_p).float()
    p[:, BRIGHTNESS] = 1 - dist.brightness + 2 * dist.brightness * u[:, BRIGHTNESS]
    p[:, CONTRAST] = 1 - dist.contrast + 2 * dist.contrast * u[:, CONTRAST]
    p[:, SATURATION] = 1 - dist.saturation + 2 * dist.saturation * u[:, SATURATION]
    p[:, HUE] = dist.hue * (2 * u[:, HUE] - 1)
    p[:, ORDER] = torch.rand(n, 4, generator=generator, device=device).argsort(dim=1).float()
    p[:, GRAY] = (u[:, GRAY] < dist.gray_p).float()
    p[:, BLUR] = (u[:, BLUR] < view.blur_p).float()
    p[:, SIGMA] = dist.sigma_min + (dist.sigma_max - dist.sigma_min) * u[:, SIGMA]
    p[:, SOLARIZE] = (u[:, SOLARIZE] < view.solarize_p).float()
    return p


def _luma(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma as torchvision's rgb_to_grayscale: (N, 3, H, W) -> (N, 1, H, W)."""
    r, g, b = x.unbind(dim=1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> HSV in [0, 1] (the hexcone model, as torchvision/PIL), batched over N."""
    r, g, b = x.unbind(dim=1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    flat = delta == 0
    s = delta / torch.where(flat, torch.ones_like(maxc), maxc)
    d = torch.where(flat, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(flat, torch.zeros_like(h), h)
    h = torch.remainder(h / 6.0, 1.0)
    return torch.stack((h, s, maxc), dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] -> RGB in [0, 1], batched; the inverse of ``rgb_to_hsv``."""
    h, s, v = x.unbind(dim=1)
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = torch.remainder(i, 6.0)
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    # sector i -> (r, g, b) = (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q)
    sectors = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros_like(x)
    for k, (rk, gk, bk) in enumerate(sectors):
        m = (i == k).unsqueeze(1)
        out = torch.where(m, torch.stack((rk, gk, bk), dim=1), out)
    return out


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image by ``shift[n]`` (fraction of a turn), torchvision's adjust_hue."""
    hsv = rgb_to_hsv(x.float())
    h = torch.remainder(hsv[:, 0] + shift.float().view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1)).to(x.dtype)


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int, dtype: torch.dtype) -> torch.Tensor:
    """Per-sample 1-D kernels ``w_n(i) = exp(-i^2 / (2 sigma_n^2)) / Z`` for i in [-K//2, K//2]: (N, K)."""
    half = kernel_size // 2
    x = torch.arange(-half, half + 1, device=sigma.device, dtype=torch.float32)
    w = torch.softmax(-(x.view(1, -1) ** 2) / (2 * sigma.float().view(-1, 1) ** 2), dim=1)
    return w.to(dtype)


def separable_gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Blur image ``n`` of (N, C, H, W) with its own sigma: a horizontal then a vertical depthwise
    conv (2K instead of K^2 taps), reflect padding as torchvision's gaussian_blur."""
    n, c, h, w = x.shape
    half = kernel_size // 2
    k = gaussian_kernels(sigma, kernel_size, x.dtype).repeat_interleave(c, dim=0)  # (N*C, K)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (half, half, 0, 0), mode="reflect"), k.view(n * c, 1, 1, kernel_size), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, half, half), mode="reflect"), k.view(n * c, 1, kernel_size, 1), groups=n * c)
    return y.reshape(n, c, h, w)


def reflect_blur_matrices(
    sigma: torch.Tensor, blur: torch.Tensor, size: int, kernel_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """(N, size, size) matrices ``B_n`` with ``(B_n x)_i = sum_k w_n(k) x_reflect(i + k - K//2)``: the
    1-D Gaussian blur of sample ``n`` with reflect padding as a matrix (identity where ``blur`` is
    False), so a separable blur is two batched matmuls on tensor cores: ``B_n X B_n^T``."""
    half = kernel_size // 2
    n = sigma.shape[0]
    w = gaussian_kernels(sigma, kernel_size, torch.float32)
    delta = torch.zeros(kernel_size, device=sigma.device)
    delta[half] = 1
    w = torch.where(blur.view(-1, 1), w, delta.view(1, -1))
    pos = (
        torch.arange(size, device=sigma.device).view(-1, 1)
        + torch.arange(kernel_size, device=sigma.device)
        - half
    )
    pos = pos.abs()
    pos = torch.where(pos > size - 1, 2 * (size - 1) - pos, pos)  # reflect without repeating the edge
    matrices = torch.zeros(n, size, size, device=sigma.device)
    matrices.scatter_add_(
        2, pos.expand(n, size, kernel_size), w.view(n, 1, kernel_size).expand(n, size, kernel_size)
    )
    return matrices.to(dtype)


def _blend_at_position(
    x: torch.Tensor, params: torch.Tensor, active: torch.Tensor, op: torch.Tensor
) -> torch.Tensor:
    """Brightness, contrast or saturation for the samples whose order puts it at this position, as the
    blend ``x' = clamp(f x + (1 - f) d)`` with d = 0, mean(luma), luma; other samples get f = 1."""
    ones = torch.ones_like(params[:, BRIGHTNESS])
    factor = torch.where(active & (op == 0), params[:, BRIGHTNESS], ones)
    factor = torch.where(active & (op == 1), params[:, CONTRAST], factor)
    factor = torch.where(active & (op == 2), params[:, SATURATION], factor)
    luma = _luma(x)
    mean = luma.mean(dim=(1, 2, 3), keepdim=True)
    is_contrast = (op == 1).view(-1, 1, 1, 1)
    is_saturation = (op == 2).view(-1, 1, 1, 1)
    degenerate = torch.where(is_contrast, mean, torch.where(is_saturation, luma, torch.zeros_like(luma)))
    f = factor.view(-1, 1, 1, 1).to(x.dtype)
    return (f * x + (1 - f) * degenerate).clamp(0, 1)


def _color_jitter_masked(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """``_color_jitter`` without data-dependent shapes (hue computed for all, kept where due): more
    arithmetic, but one static graph that torch.compile fuses into a few memory-bound kernels."""
    active = params[:, JITTER] > 0.5
    order = params[:, ORDER].long()
    for position in range(4):
        op = order[:, position]
        x = _blend_at_position(x, params, active, op)
        hue = (active & (op == 3)).view(-1, 1, 1, 1)
        x = torch.where(hue, adjust_hue(x, params[:, HUE]), x)
    return x


def apply_photometric_static(
    images: torch.Tensor,
    params: torch.Tensor,
    *,
    kernel_size: int,
    dtype: torch.dtype = torch.float32,
    solarize_threshold: float = 128 / 255,
) -> torch.Tensor:
    """``apply_photometric`` as one static graph (no subsets, no host syncs; blur as matmuls):
    the GPU path, meant to run under torch.compile. Same results up to float rounding."""
    x = images.to(dtype) / 255 if not images.is_floating_point() else images.to(dtype)
    params = params.to(device=x.device, dtype=torch.float32)
    x = _color_jitter_masked(x, params)
    x = torch.where((params[:, GRAY] > 0.5).view(-1, 1, 1, 1), _luma(x).expand_as(x), x)
    blur = params[:, BLUR] > 0.5
    h, w = x.shape[-2:]
    rows = reflect_blur_matrices(params[:, SIGMA], blur, h, kernel_size, x.dtype).unsqueeze(1)
    cols = (
        rows
        if w == h
        else reflect_blur_matrices(params[:, SIGMA], blur, w, kernel_size, x.dtype).unsqueeze(1)
    )
    x = torch.matmul(torch.matmul(rows, x), cols.transpose(-1, -2))
    solarize = (params[:, SOLARIZE] > 0.5).view(-1, 1, 1, 1)
    return torch.where(solarize & (x >= solarize_threshold), 1 - x, x)


def _color_jitter(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation and hue in each sample's own order (torchvision ColorJitter).

    The first three are blends ``x' = clamp(f x + (1 - f) d)`` with d = 0, mean(luma), luma, so one
    pass per position serves every sample whichever of them it runs there; hue runs on the subset
    of samples whose order puts it at that position (HSV is the costly part, done once per sample).
    """
    active = params[:, JITTER] > 0.5
    order = params[:, ORDER].long()
    for position in range(4):
        op = order[:, position]
        x = _blend_at_position(x, params, active, op)
        hue_rows = torch.nonzero(active & (op == 3)).flatten()
        if hue_rows.numel():
            x = x.index_copy(0, hue_rows, adjust_hue(x.index_select(0, hue_rows), params[hue_rows, HUE]))
    return x


def apply_photometric(
    images: torch.Tensor,
    params: torch.Tensor,
    *,
    kernel_size: int,
    dtype: torch.dtype = torch.float32,
    dist: PhotometricDistribution = BYOL,
) -> torch.Tensor:
    """uint8 or [0, 1] float (N, 3, H, W) + (N, N_PARAMS) parameters -> augmented float in [0, 1].

    Order as the per-sample pipeline: colour jitter, grayscale, blur, solarize.
    """
    x = images.to(dtype) / 255 if not images.is_floating_point() else images.to(dtype)
    params = params.to(device=x.device, dtype=torch.float32)
    x = _color_jitter(x, params)
    gray = (params[:, GRAY] > 0.5).view(-1, 1, 1, 1)
    x = torch.where(gray, _luma(x).expand_as(x), x)
    blur_rows = torch.nonzero(params[:, BLUR] > 0.5).flatten()
    if blur_rows.numel():
        blurred = separable_gaussian_blur(x.index_select(0, blur_rows), params[blur_rows, SIGMA], kernel_size)
        x = x.index_copy(0, blur_rows, blurred)
    threshold = dist.solarize_threshold / 255
    solarize = (params[:, SOLARIZE] > 0.5).view(-1, 1, 1, 1)
    return torch.where(solarize & (x >= threshold), 1 - x, x)


def _static_and_normalize(
    views: torch.Tensor, params: torch.Tensor, kernel_size: int, dtype: torch.dtype
) -> torch.Tensor:
    x = apply_photometric_static(views, params, kernel_size=kernel_size, dtype=dtype)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=dtype).view(1, 3, 1, 1)
    return (x - mean) / std


@functools.cache
def _compiled_static_and_normalize() -> Callable[..., torch.Tensor]:
    # built on first use: importing this module should not pull in the compiler
    # default (automatic) dynamic shapes: a batch that lost samples recompiles once for any size,
    # instead of once per distinct size
    return torch.compile(_static_and_normalize)


def augment_and_normalize(
    views: torch.Tensor,
    params: torch.Tensor,
    *,
    kernel_size: int,
    dtype: torch.dtype = torch.float32,
    compiled: bool | None = None,
) -> torch.Tensor:
    """Photometric augmentation then ImageNet normalisation, on the device ``views`` live on.

    On CUDA (``compiled`` None -> True) the static graph runs compiled: fused elementwise kernels
    and matmul blur. Elsewhere the eager version with subsets (less arithmetic, CPU-friendly).
    """
    compiled = views.is_cuda if compiled is None else compiled
    if compiled:
        return _compiled_static_and_normalize()(views, params, kernel_size, dtype)
    x = apply_photometric(views, params, kernel_size=kernel_size, dtype=dtype)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=dtype).view(1, 3, 1, 1)
    return (x - mean) / std


class CropPairAugmentation:
    """The geometric half of the per-view pipeline (random resized crop + flip), uint8 in, uint8 out.

    Called as ``PairAugmentation`` is (two HWC frames or CHW tensors and a seed), with the same
    crop distribution; the photometric half runs later, batched, from ``draw_photometric_params``.
    """

    def __init__(self, image_size: int, min_scale: float) -> None:
        self.image_size = image_size
        self.transform = v2.Compose(
            [
                v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
            ]
        )

    def __call__(
        self, frame_1: np.ndarray | torch.Tensor, frame_2: np.ndarray | torch.Tensor, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images = [chw_tensor(frame_1), chw_tensor(frame_2)]
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed also queues lazy seeding of every accelerator
            # backend, formatting a stack trace each time (~0.2 ms a sample where CUDA is not initialised)
            torch.default_generator.manual_seed(seed)
            return self.transform(images[0]), self.transform(images[1])


def params_generator(seed: int, index: int) -> np.random.Generator:
    """The photometric random source of global sample ``index`` (independent of its crop source)."""
    return np.random.default_rng([seed, index, 0xC01])


def draw_pair_params(seed: int, index: int, blur_p_scale: float = 1.0) -> np.ndarray:
    """(2, N_PARAMS): view 1 and view 2 parameters of global sample ``index`` (BYOL's asymmetric pair,
    blur probabilities times ``blur_p_scale``)."""
    rng = params_generator(seed, index)
    return np.stack([draw_photometric_params(rng, view) for view in pair_views(blur_p_scale)])


__all__ = [
    "N_PARAMS",
    "PhotometricDistribution",
    "BYOL",
    "draw_photometric_params",
    "random_photometric_params",
    "rgb_to_hsv",
    "hsv_to_rgb",
    "adjust_hue",
    "gaussian_kernels",
    "separable_gaussian_blur",
    "apply_photometric",
    "augment_and_normalize",
    "apply_photometric_static",
    "reflect_blur_matrices",
    "CropPairAugmentation",
    "draw_pair_params",
    "params_generator",
]
