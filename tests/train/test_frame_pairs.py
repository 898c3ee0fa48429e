"""FramePairDataset over a source other than video or cache: the seam image sources plug into."""

from __future__ import annotations

import numpy as np
import torch

from vito_train.data.frame_pairs import FramePairDataset, FrameReadError, collate_pair_batch


class InMemoryImages:
    """An image-set source: each item is one image, picked twice; item 1 cannot be read."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(5)]

    def __len__(self) -> int:
        return len(self.images)

    def item_id(self, item: int) -> str:
        return f"image-{item}"

    def pick_pair(self, item: int, rng: np.random.Generator) -> tuple[int, int]:
        return 0, 0

    def read_pair(self, item: int, picks: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        if item == 1:
            raise FrameReadError("unreadable image file")
        return self.images[item], self.images[item]


def test_an_image_source_feeds_the_same_augmentation_and_retries():
    dataset = FramePairDataset(InMemoryImages(), seed=2, image_size=24, min_scale=0.5, retries=3)
    samples = [dataset[g] for g in range(10)]  # two epochs: item 1 is drawn twice
    batch = collate_pair_batch(samples)
    assert batch["failed"] == ["image-1", "image-1"] and batch["dropped"] == 0
    assert batch["view_1"].shape == (10, 3, 24, 24) and batch["view_1"].dtype == torch.uint8
    again = dataset[7]
    assert torch.equal(again["view_1"], samples[7]["view_1"]) and torch.equal(
        again["view_2"], samples[7]["view_2"]
    )
    assert not torch.equal(samples[0]["view_1"], samples[0]["view_2"])  # one image, two different views


def test_photometric_mode_crops_only_and_carries_the_parameters():
    dataset = FramePairDataset(InMemoryImages(), seed=2, image_size=24, min_scale=0.5, photometric=True)
    batch = collate_pair_batch([dataset[g] for g in range(4)])
    assert batch["photometric"].shape == (2, 4, 13)
