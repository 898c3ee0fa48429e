"""Batched photometric augmentation: exact against torchvision per op, same statistics as the CPU pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from scipy.stats import ks_2samp
from torchvision.transforms import v2

from videonet_curate.video import read_frames_at
from vito_train.data.augment import VIEW_1, VIEW_2, build_view_transform
from vito_train.data.batched_augment import (
    BLUR,
    BRIGHTNESS,
    CONTRAST,
    GRAY,
    HUE,
    JITTER,
    N_PARAMS,
    ORDER,
    SATURATION,
    SIGMA,
    SOLARIZE,
    CropPairAugmentation,
    apply_photometric,
    apply_photometric_static,
    draw_pair_params,
    draw_photometric_params,
    hsv_to_rgb,
    random_photometric_params,
    reflect_blur_matrices,
    rgb_to_hsv,
    separable_gaussian_blur,
)

SIZE = 48
KERNEL = 5  # BYOL's 10% of the side, odd, at 48 px


@pytest.fixture(scope="module")
def real_crops(sample_videos) -> torch.Tensor:
    """(16, 3, SIZE, SIZE) uint8 crops of real frames from two sample clips."""
    frames = list(
        read_frames_at(
            sample_videos / "cockatoo.mp4", [0.5, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 13.0], max_side=256
        )
    )
    frames += list(
        read_frames_at(sample_videos / "bikes.mp4", [0.5, 1.5, 3.0, 4.5, 6.0, 7.5, 8.5, 9.5], max_side=256)
    )
    images = [torch.from_numpy(f).permute(2, 0, 1) for f in frames]
    return torch.stack(
        [
            v2.functional.resize(v2.functional.center_crop(x, min(x.shape[1:])), [SIZE, SIZE], antialias=True)
            for x in images
        ]
    )


def _reference(image: torch.Tensor, p: np.ndarray) -> torch.Tensor:
    """Apply the parameters with torchvision's functional ops, one image at a time."""
    x = image.float() / 255
    if p[JITTER]:
        ops = {
            0: lambda y: TF.adjust_brightness(y, float(p[BRIGHTNESS])),
            1: lambda y: TF.adjust_contrast(y, float(p[CONTRAST])),
            2: lambda y: TF.adjust_saturation(y, float(p[SATURATION])),
            3: lambda y: TF.adjust_hue(y, float(p[HUE])),
        }
        for op in p[ORDER].astype(int):
            x = ops[int(op)](x)
    if p[GRAY]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if p[BLUR]:
        x = TF.gaussian_blur(x, [KERNEL, KERNEL], [float(p[SIGMA])] * 2)
    if p[SOLARIZE]:
        x = TF.solarize(x, 128 / 255)
    return x


def test_each_sample_matches_torchvision_functional_ops(real_crops):
    rng = np.random.default_rng(3)
    params = np.stack([draw_photometric_params(rng, VIEW_2) for _ in real_crops])
    params[:, JITTER] = 1  # exercise every op in every sample's own order
    params[::2, GRAY] = 0
    params[::3, BLUR] = 1
    params[1::2, SOLARIZE] = 1
    out = apply_photometric(real_crops, torch.from_numpy(params), kernel_size=KERNEL)
    expected = torch.stack([_reference(img, p) for img, p in zip(real_crops, params, strict=True)])
    assert len({tuple(p[ORDER]) for p in params}) > 4  # several orders in one batch
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=0)


def test_static_gpu_graph_equals_the_subset_version(real_crops):
    """The compile-friendly path (all rows, masks, blur as matmuls) gives the same images."""
    g = torch.Generator().manual_seed(4)
    params = torch.cat(
        [random_photometric_params(8, VIEW_1, generator=g), random_photometric_params(8, VIEW_2, generator=g)]
    )
    assert params[:, BLUR].sum() >= 8 and params[:, JITTER].sum() >= 8
    torch.testing.assert_close(
        apply_photometric_static(real_crops, params, kernel_size=KERNEL),
        apply_photometric(real_crops, params, kernel_size=KERNEL),
        atol=1e-5,
        rtol=0,
    )


def test_blur_matrices_match_the_reflect_padded_convolution():
    x = torch.rand(3, 3, 21, 21)
    sigma = torch.tensor([0.3, 1.0, 2.0])
    rows = reflect_blur_matrices(sigma, torch.tensor([True, True, False]), 21, 9, torch.float32).unsqueeze(1)
    by_matmul = rows @ x @ rows.transpose(-1, -2)
    torch.testing.assert_close(by_matmul[:2], separable_gaussian_blur(x[:2], sigma[:2], 9), atol=1e-6, rtol=0)
    torch.testing.assert_close(by_matmul[2], x[2])  # blur off: identity


def test_hsv_round_trip_is_identity():
    x = torch.rand(4, 3, 17, 19)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5, rtol=0)


def test_identity_parameters_change_nothing(real_crops):
    params = torch.zeros(len(real_crops), N_PARAMS)
    out = apply_photometric(real_crops, params, kernel_size=KERNEL)
    torch.testing.assert_close(out, real_crops.float() / 255)


def _image_stats(x: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image statistics sensitive to each op: brightness, contrast, saturation, hue, sharpness."""
    x = x.float()
    x = x / 255 if x.max() > 1.5 else x
    luma = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    hsv = rgb_to_hsv(x)
    return {
        "mean": luma.mean(dim=(1, 2)).numpy(),
        "std": luma.std(dim=(1, 2)).numpy(),
        "saturation": hsv[:, 1].mean(dim=(1, 2)).numpy(),
        "red_share": (x[:, 0].mean(dim=(1, 2)) / x.mean(dim=(1, 2, 3)).clamp_min(1e-3)).numpy(),
        "sharpness": (luma[:, :, 1:] - luma[:, :, :-1]).abs().mean(dim=(1, 2)).numpy(),
    }


REPEATS = 40  # 640 augmented images per pipeline and view


@pytest.fixture(scope="module")
def cpu_reference(real_crops, one_torch_thread) -> dict[str, torch.Tensor]:
    """augment.py's per-view transform on the same crops, with a crop that keeps the whole square
    image (scale 1.0: RandomResizedCrop returns it unchanged), so only the photometric ops act."""
    out = {}
    for name, view in (("view1", VIEW_1), ("view2", VIEW_2)):
        cpu = build_view_transform(SIZE, 1.0, view)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            out[name] = torch.stack([cpu(img) for _ in range(REPEATS) for img in real_crops])
    return out


def _batched(real_crops: torch.Tensor, view, drop_blur: bool = False) -> torch.Tensor:
    rng = np.random.default_rng(1)
    params = torch.from_numpy(
        np.stack([draw_photometric_params(rng, view) for _ in range(REPEATS * len(real_crops))])
    )
    if drop_blur:
        params[:, BLUR] = 0
    return apply_photometric(real_crops.repeat(REPEATS, 1, 1, 1), params, kernel_size=KERNEL)


@pytest.mark.parametrize("name,view", [("view1", VIEW_1), ("view2", VIEW_2)])
def test_batched_statistics_match_the_per_sample_cpu_pipeline(real_crops, cpu_reference, name, view):
    """Same images, many random draws: both pipelines give the same distribution of statistics."""
    reference, batched = _image_stats(cpu_reference[name]), _image_stats(_batched(real_crops, view))
    for stat in reference:
        result = ks_2samp(reference[stat], batched[stat])
        assert result.statistic < 0.09, f"{stat}: KS D={result.statistic:.3f} (p={result.pvalue:.2g})"


def test_statistics_test_detects_a_missing_op(real_crops, cpu_reference):
    """The KS check above can fail: dropping the blur from view 1 is caught by the sharpness statistic."""
    out = _batched(real_crops, VIEW_1, drop_blur=True)
    d = ks_2samp(_image_stats(cpu_reference["view1"])["sharpness"], _image_stats(out)["sharpness"]).statistic
    assert d > 0.2


def test_per_sample_draws_are_deterministic_and_asymmetric():
    a, b = draw_pair_params(7, 123), draw_pair_params(7, 123)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, draw_pair_params(7, 124))
    many = np.stack([draw_pair_params(0, i) for i in range(2000)])
    assert many[:, 0, BLUR].mean() == 1.0 and many[:, 0, SOLARIZE].mean() == 0.0
    assert 0.07 < many[:, 1, BLUR].mean() < 0.13 and 0.17 < many[:, 1, SOLARIZE].mean() < 0.23
    assert 0.77 < many[:, :, JITTER].mean() < 0.83


def test_blur_p_scale_scales_both_views_blur_and_nothing_else():
    base = np.stack([draw_pair_params(0, i) for i in range(500)])
    none = np.stack([draw_pair_params(0, i, blur_p_scale=0.0) for i in range(500)])
    half = np.stack([draw_pair_params(0, i, blur_p_scale=0.5) for i in range(2000)])
    assert none[:, :, BLUR].max() == 0.0
    assert 0.45 < half[:, 0, BLUR].mean() < 0.55 and half[:, 1, BLUR].mean() < 0.08
    others = [c for c in range(base.shape[2]) if c != BLUR]
    np.testing.assert_array_equal(base[:, :, others], none[:, :, others])  # same draws otherwise


def test_per_sample_pipeline_without_blur_keeps_edges(real_crops):
    """blur_p_scale=0 on the worker pipeline: view 1 (always blurred by default) keeps its sharpness."""
    from vito_train.data.augment import PairAugmentation

    frame = real_crops[0]
    sharp = [PairAugmentation(32, 1.0, blur_p_scale=0.0)(frame, frame, seed=s)[0] for s in range(8)]
    blurred = [PairAugmentation(32, 1.0)(frame, frame, seed=s)[0] for s in range(8)]

    def edge_energy(views):
        x = torch.stack(views).float()
        return (x[..., 1:] - x[..., :-1]).abs().mean().item()

    assert edge_energy(sharp) > 1.2 * edge_energy(blurred)


def test_crop_pair_augmentation_is_reproducible(real_crops):
    crop = CropPairAugmentation(32, 0.3)
    frame = real_crops[0]
    a1, a2 = crop(frame, real_crops[1], seed=5)
    b1, b2 = crop(frame, real_crops[1], seed=5)
    assert a1.shape == (3, 32, 32) and a1.dtype == torch.uint8
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, crop(frame, real_crops[1], seed=6)[0])
