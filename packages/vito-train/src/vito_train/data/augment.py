"""Per-view augmentations of BYOL-style training, with VITO's gentler crops.

The two views get the asymmetric BYOL probabilities (Grill et al. 2020, table 6): blur 1.0 / 0.1,
solarize 0.0 / 0.2; both get a random resized crop (``min_scale`` instead of the image-SSL 0.08),
a horizontal flip, colour jitter (0.4, 0.4, 0.2, 0.1) with p=0.8 and grayscale with p=0.2.
Views stay uint8; normalisation happens on the training device (4x less to copy).

Randomness comes only from the seed passed in, so a sample's augmentations depend on
(seed, sample index) alone: torchvision's transforms draw from the global torch generator, which
is forked and re-seeded around each call and left as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViewAugmentation:
    blur_p: float
    solarize_p: float


# BYOL's asymmetric pair
VIEW_1 = ViewAugmentation(blur_p=1.0, solarize_p=0.0)
VIEW_2 = ViewAugmentation(blur_p=0.1, solarize_p=0.2)


def pair_views(blur_p_scale: float = 1.0) -> tuple[ViewAugmentation, ViewAugmentation]:
    """BYOL's asymmetric pair with both blur probabilities scaled (0: no blur, e.g. for 28 px images,
    where SimCLR and solo-learn drop blur on CIFAR-size data)."""
    return tuple(  # type: ignore[return-value]
        ViewAugmentation(blur_p=v.blur_p * blur_p_scale, solarize_p=v.solarize_p) for v in (VIEW_1, VIEW_2)
    )


def blur_kernel_size(image_size: int) -> int:
    """BYOL blurs with a kernel of about 10% of the image side (23 px at 224), odd."""
    return max(3, int(0.1 * image_size) // 2 * 2 + 1)


def build_view_transform(image_size: int, min_scale: float, view: ViewAugmentation) -> v2.Compose:
    """uint8 (3, H, W) tensor -> uint8 (3, size, size) tensor."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(blur_kernel_size(image_size), sigma=(0.1, 2.0))], p=view.blur_p),
            v2.RandomSolarize(threshold=128, p=view.solarize_p),
        ]
    )


def chw_tensor(frame: np.ndarray | torch.Tensor) -> torch.Tensor:
    """An (H, W, 3) uint8 frame as a (3, H, W) tensor, sharing its memory where the strides allow
    (a cached frame arrives as an HWC view of a decoded CHW tensor: this gives that tensor back)."""
    if isinstance(frame, torch.Tensor):  # already (3, H, W)
        return frame
    if any(stride < 0 for stride in frame.strides):  # torch.from_numpy refuses negative strides
        frame = np.ascontiguousarray(frame)
    return torch.from_numpy(frame).permute(2, 0, 1)


class PairAugmentation:
    """Two differently augmented views of two frames, reproducible from a seed."""

    def __init__(self, image_size: int, min_scale: float, blur_p_scale: float = 1.0) -> None:
        self.views = tuple(build_view_transform(image_size, min_scale, v) for v in pair_views(blur_p_scale))

    def __call__(
        self, frame_1: np.ndarray | torch.Tensor, frame_2: np.ndarray | torch.Tensor, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images = [chw_tensor(frame_1), chw_tensor(frame_2)]
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only, as CropPairAugmentation: torch.manual_seed also queues lazy seeding
            # of every accelerator backend, formatting a stack trace each time (a third of a 32 px
            # sample's augmentation time on CPU), and would re-seed a GPU's generator outside this fork
            torch.default_generator.manual_seed(seed)
            return self.views[0](images[0]), self.views[1](images[1])


def normalize_on_device(views: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> ImageNet-normalised float, on whatever device ``views`` lives."""
    mean = torch.tensor(IMAGENET_MEAN, device=views.device, dtype=dtype).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=views.device, dtype=dtype).view(1, 3, 1, 1) * 255
    return (views.to(dtype) - mean) / std
