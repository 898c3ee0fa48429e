"""Frame pairs from a frame cache, and the pieces that let either source feed batched augmentation.

``CachedFramePairDataset`` follows ``FramePairDataset``'s contract (sample ``g`` is a function of
``(seed, g)``; same clip order, same pair-time draw) but reads two cached JPEGs instead of seeking
in a video: the pair times are drawn over the clip's cached span and each snaps to the nearest
cached frame (so the temporal offset is quantised to 1 / fps of the cache).

``WithPhotometricParams`` wraps either dataset once its ``augment`` does only the crop, adding each
sample's photometric parameters; ``collate_pair_batch`` stacks them for the training device.
This module imports no PyAV, so cache-mode training runs where PyAV is not installed.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.io import decode_jpeg

from vito_train.data.augment import PairAugmentation
from vito_train.data.batched_augment import CropPairAugmentation, draw_pair_params
from vito_train.data.cache import CachedClip, FrameCache
from vito_train.data.pairs import clip_for_index, sample_generator, sample_pair_times

log = logging.getLogger(__name__)


class CachedFramePairDataset(Dataset):
    """Sample ``g``: two cached frames of one clip up to ``max_gap_s`` apart, each augmented.

    A frame that cannot be read or decoded (corrupt shard, bad bytes) is recorded and the sample
    moves to another clip drawn from its own generator; after ``retries`` failures it is None.
    """

    def __init__(
        self,
        cache: FrameCache,
        *,
        seed: int,
        image_size: int,
        min_scale: float,
        max_gap_s: float,
        retries: int = 3,
        crop_only: bool = False,
    ) -> None:
        self.cache, self.clips = cache, cache.clips
        self.seed, self.max_gap_s, self.retries = seed, max_gap_s, retries
        self.augment = (
            CropPairAugmentation(image_size, min_scale)
            if crop_only
            else PairAugmentation(image_size, min_scale)
        )

    def __len__(self) -> int:  # endless stream; the batch sampler decides what is read
        return 2**62

    def frames_for(self, clip: CachedClip, t1: float, t2: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The two decoded frames (3, H, W) uint8 nearest to ``t1`` and ``t2``."""
        i1, i2 = clip.nearest_frame(t1), clip.nearest_frame(t2)
        first = decode_jpeg(torch.frombuffer(bytearray(self.cache.read_jpeg(clip, i1)), dtype=torch.uint8))
        if i2 == i1:
            return first, first
        return first, decode_jpeg(
            torch.frombuffer(bytearray(self.cache.read_jpeg(clip, i2)), dtype=torch.uint8)
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = sample_generator(self.seed, index)
        clip_index = clip_for_index(self.seed, index, len(self.clips))
        failures: list[str] = []
        for _attempt in range(self.retries + 1):
            clip = self.clips[clip_index]
            t1, t2 = sample_pair_times(rng.random(), rng.random(), clip.start_s, clip.end_s, self.max_gap_s)
            try:
                frame_1, frame_2 = self.frames_for(clip, t1, t2)
            except (OSError, RuntimeError, ValueError) as exc:  # decode_jpeg raises RuntimeError on bad bytes
                log.warning("skipping cached clip %s: %s", clip.clip_id, exc)
                failures.append(clip.clip_id)
                clip_index = int(rng.integers(len(self.clips)))
                continue
            if isinstance(self.augment, PairAugmentation):  # it takes HWC arrays, as PyAV gives them
                frame_1, frame_2 = frame_1.permute(1, 2, 0).numpy(), frame_2.permute(1, 2, 0).numpy()
            view_1, view_2 = self.augment(frame_1, frame_2, seed=int(rng.integers(2**62)))
            return {"view_1": view_1, "view_2": view_2, "index": index, "failed": failures}
        return {"view_1": None, "index": index, "failed": failures}


class WithPhotometricParams(Dataset):
    """Adds ``photometric`` (2, N_PARAMS) to each good sample of ``inner`` (whose augment only crops)."""

    def __init__(self, inner: Dataset, seed: int) -> None:
        self.inner, self.seed = inner, seed

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.inner[index]
        if sample.get("view_1") is not None:
            sample["photometric"] = torch.from_numpy(draw_pair_params(self.seed, index))
        return sample


def collate_pair_batch(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the good samples (and their photometric parameters, when present); count the rest.

    ``photometric`` is (2, B, N_PARAMS): view 1's and view 2's parameters, in batch order.
    """
    good = [s for s in samples if s["view_1"] is not None]
    failed = [clip for s in samples for clip in s["failed"]]
    batch: dict[str, Any] = {
        "view_1": None,
        "view_2": None,
        "failed": failed,
        "dropped": len(samples) - len(good),
        "photometric": None,
    }
    if good:
        batch["view_1"] = torch.stack([s["view_1"] for s in good])
        batch["view_2"] = torch.stack([s["view_2"] for s in good])
        if "photometric" in good[0]:
            batch["photometric"] = torch.stack([s["photometric"] for s in good], dim=1)
    return batch
