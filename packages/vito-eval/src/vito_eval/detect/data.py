"""Training data for detection: images + targets, and a batch order that is a pure function of
(seed, iteration), so a resumed run sees exactly the batches the uninterrupted run would have.

Multi-scale resizing happens inside torchvision's `GeneralizedRCNNTransform` (a shorter side drawn from
the schedule's sizes per image); here only decoding and the horizontal flip (decided by the sampler, not
by a worker's RNG) happen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vito_eval.datasets.coco import DetectionSplit, epoch_indices, training_target

SampleKey = tuple[int, bool]  # (image index, flip)


def read_rgb(path) -> torch.Tensor:
    """(3, H, W) float in 0..1."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def hflip_sample(image: torch.Tensor, target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes, "masks": target["masks"].flip(-1)}


class DetectionTrainSet(Dataset):
    """Indexed by `SampleKey`s from `ResumableBatches`."""

    def __init__(self, split: DetectionSplit, images: list[dict[str, Any]]) -> None:
        self.split, self.images = split, images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index, flip = key
        record = self.images[index]
        image = read_rgb(record["path"])
        target = training_target(self.split, record)
        if flip:
            image, target = hflip_sample(image, target)
        return image, target


def collate_lists(batch):
    return tuple(zip(*batch))


class ResumableBatches:
    """Batches of `SampleKey`s for one process: epochs of `epoch_indices` (repeat factors applied),
    concatenated, cut into global batches of ``batch_size``, of which this rank takes its slice.

    Starting at ``start_iter`` regenerates the stream and skips, so it costs only a few permutations.
    """

    def __init__(
        self,
        factors: np.ndarray,
        batch_size: int,
        seed: int,
        start_iter: int,
        total_iters: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.factors, self.batch_size, self.seed = factors, batch_size, seed
        self.start_iter, self.total_iters = start_iter, total_iters
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return self.total_iters - self.start_iter

    def _stream(self) -> Iterator[SampleKey]:
        epoch = 0
        while True:
            indices = epoch_indices(self.factors, self.seed, epoch)
            flips = np.random.default_rng([self.seed, epoch, 1]).random(len(indices)) < 0.5
            yield from zip(indices.tolist(), flips.tolist())
            epoch += 1

    def __iter__(self) -> Iterator[list[SampleKey]]:
        stream = self._stream()
        per_rank = self.batch_size // self.world_size
        for it in range(self.total_iters):
            batch = [next(stream) for _ in range(self.batch_size)]
            if it >= self.start_iter:
                yield batch[self.rank * per_rank : (self.rank + 1) * per_rank]


def lr_at(
    iteration: int,
    base_lr: float,
    total_iters: int,
    step_iters: tuple[int, ...],
    warmup_iters: int,
    warmup_factor: float,
) -> float:
    """Detectron2's WarmupMultiStepLR: linear warmup from ``warmup_factor`` to 1, then x0.1 at each step."""
    lr = base_lr * 0.1 ** sum(iteration >= s for s in step_iters)
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        lr *= warmup_factor * (1 - alpha) + alpha
    return lr
