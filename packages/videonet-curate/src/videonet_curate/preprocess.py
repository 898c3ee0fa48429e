"""Frames to a model's input size with torch alone: :class:`PreprocessSpec` and :func:`resize_frames`.

The decode stage (stages.DecodeWorker) resizes every clip to the model's input size, so it needs the
model's resize but not the model: this module imports torch and nothing of torchvision, whose import pulls
in ``torch._dynamo`` (via ``torchvision.ops``) and costs each decode actor about 3 CPU s at start-up.
:func:`resize_frames` makes the calls torchvision's tensor ``resize`` + ``center_crop`` make (torchvision
0.29, ``transforms.v2.functional``: ``interpolate`` with ``antialias``, natively on uint8 on the CPU,
through float32 with clamp and round elsewhere), so the frames are identical bit for bit:
tests/curate/test_preprocess.py compares both on decoded sample frames.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from videonet_curate.model_specs import DEFAULT_MODEL


class ModelError(RuntimeError):
    """Base class of the errors raised while building a scorer."""


# the modes torch's interpolate has (torchvision's tensor resize supports these same four)
_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic")


@dataclass(frozen=True)
class PreprocessSpec:
    """How frames become network input: resize the shorter side to ``round(size / crop_pct)`` and
    centre-crop ``size`` x ``size`` (``resize_mode="shortest"``; ``"squash"`` resizes straight to
    ``size`` x ``size``), scale to [0, 1], then ``(x - mean) / std`` per channel."""

    size: int
    crop_pct: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    def __post_init__(self) -> None:
        if self.resize_mode not in ("shortest", "squash"):
            raise ModelError(f"unsupported resize_mode {self.resize_mode!r}: only 'shortest' and 'squash'")
        if self.interpolation not in _MODES:
            raise ModelError(f"unsupported interpolation {self.interpolation!r}: one of {', '.join(_MODES)}")

    @property
    def resize_to(self) -> int:
        return int(round(self.size / self.crop_pct))


# The default scorer's preprocessing (models/efficientnet_lite0.py documents the recipe). Kept here, in
# the torch-only module, so a decode stage can resize to it before (and without) loading the model.
EFFICIENTNET_LITE0_PREPROCESS = PreprocessSpec(
    size=224,
    crop_pct=224 / 256,
    mean=(127 / 255, 127 / 255, 127 / 255),
    std=(128 / 255, 128 / 255, 128 / 255),
    interpolation="bicubic",
)
_KNOWN_SPECS = {DEFAULT_MODEL: EFFICIENTNET_LITE0_PREPROCESS}


def known_preprocess_spec(model: str) -> PreprocessSpec | None:
    """The preprocessing of ``--model`` when it is fixed by the spec alone (the bundled default), else
    None: an open_clip model's comes from its config, which only loading it gives."""
    return _KNOWN_SPECS.get(model.strip())


def resize_frames(
    frames: np.ndarray | torch.Tensor, spec: PreprocessSpec, *, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """uint8 frames ``(N, H, W, 3)`` RGB -> uint8 ``(N, 3, size, size)``: the resize and centre crop of
    the scorers' preprocessing (:func:`videonet_curate.models.base.preprocess_frames`), which a decode
    stage runs to hand the model frames at its input size. Antialiased, as PIL is for the single images
    the models were trained on."""
    batch = torch.as_tensor(frames)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != torch.uint8:
        raise ValueError(
            f"frames must be uint8 RGB of shape (N, H, W, 3), got {tuple(batch.shape)} {batch.dtype}: "
            "decode with PyAV's frame.to_ndarray(format='rgb24')"
        )
    batch = batch.to(device, non_blocking=True).permute(0, 3, 1, 2)
    if spec.resize_mode == "squash":
        return _resize(batch, (spec.size, spec.size), spec.interpolation)
    height, width = batch.shape[-2:]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = spec.resize_to, int(spec.resize_to * long / short)
    size = (new_long, new_short) if width <= height else (new_short, new_long)
    return _center_crop(_resize(batch, size, spec.interpolation), spec.size)


def _native_uint8(mode: str, device: torch.device) -> bool:
    """Whether torch interpolates uint8 directly (torchvision's ``_do_native_uint8_resize_on_cpu``)."""
    if mode.startswith("nearest"):
        return True
    if device.type != "cpu":
        return False
    if mode == "bilinear":
        return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in (
            "aarch64",
            "arm64",
        )
    return True  # bicubic


def _resize(batch: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` -> ``(N, 3, *size)``, as torchvision's ``resize_image`` computes it."""
    if tuple(batch.shape[-2:]) == size:
        return batch
    if batch.numel() == 0:
        return batch.reshape(*batch.shape[:-2], *size)
    smooth = not mode.startswith("nearest")
    image = batch
    if image.is_contiguous(memory_format=torch.channels_last) and image.shape[0] == 1:
        # torchvision restrides a single channels-last image so interpolate keeps it channels-last
        # (pytorch#68430); done here too so the same kernel runs
        strides = list(image.stride())
        if image.numel() != strides[0]:
            strides[0] = image.numel()
            image = image.as_strided(tuple(image.shape), strides)
    cast = not _native_uint8(mode, image.device)
    if cast:
        image = image.to(dtype=torch.float32)
    image = F.interpolate(
        image, size=list(size), mode=mode, align_corners=False if smooth else None, antialias=smooth
    )
    if cast:
        if mode == "bicubic":
            image = image.clamp_(min=0, max=255)
        image = image.round_().to(dtype=torch.uint8)
    return image


def _center_crop(batch: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` of ``(N, 3, H, W)`` (zero-padded first if smaller), as torchvision's
    ``center_crop_image``."""
    height, width = batch.shape[-2:]
    if size > height or size > width:
        pad_w, pad_h = max(0, size - width), max(0, size - height)
        pads: list[Any] = [pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2]
        batch = F.pad(batch, pads, value=0.0)
        height, width = batch.shape[-2:]
        if (height, width) == (size, size):
            return batch
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return batch[..., top : top + size, left : left + size]
