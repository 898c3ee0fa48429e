"""A map-style dataset of augmented frame pairs indexed by global sample index (see pairs.py)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import Dataset

from videonet_curate.video import VideoError
from vito_train.data.augment import PairAugmentation
from vito_train.data.decode import read_frames_at
from vito_train.data.pairs import Clip, clip_for_index, sample_generator, sample_pair_times

log = logging.getLogger(__name__)


class FramePairDataset(Dataset):
    """Sample ``g``: two frames of one clip up to ``max_gap_s`` apart, each with its own augmentation.

    A clip that fails to decode is recorded and replaced by another drawn from the same sample
    generator (so the stream stays deterministic); after ``retries`` failures the sample is None
    and the collate function drops it.
    """

    def __init__(
        self,
        clips: list[Clip],
        *,
        seed: int,
        image_size: int,
        min_scale: float,
        max_gap_s: float,
        decode_short_side: int,
        retries: int = 3,
    ) -> None:
        self.clips, self.seed, self.max_gap_s = clips, seed, max_gap_s
        self.decode_short_side, self.retries = decode_short_side, retries
        self.augment = PairAugmentation(image_size, min_scale)

    def __len__(self) -> int:  # the stream is endless; a DataLoader only sees our batch sampler
        return 2**62

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        rng = sample_generator(self.seed, index)
        clip_index = clip_for_index(self.seed, index, len(self.clips))
        failures: list[str] = []
        for _attempt in range(self.retries + 1):
            clip = self.clips[clip_index]
            t1, t2 = sample_pair_times(rng.random(), rng.random(), clip.start_s, clip.end_s, self.max_gap_s)
            try:
                frame_1, frame_2 = read_frames_at(clip.path, [t1, t2], short_side=self.decode_short_side)
            except VideoError as exc:
                log.warning("skipping clip %s: %s", clip.clip_id, exc)
                failures.append(clip.clip_id)
                clip_index = int(rng.integers(len(self.clips)))
                continue
            view_1, view_2 = self.augment(frame_1, frame_2, seed=int(rng.integers(2**62)))
            return {"view_1": view_1, "view_2": view_2, "index": index, "failed": failures}
        return {"view_1": None, "index": index, "failed": failures}


def collate_pairs(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the good samples; report the failed clips and the samples lost."""
    good = [s for s in samples if s["view_1"] is not None]
    failed = [clip for s in samples for clip in s["failed"]]
    if not good:
        return {"view_1": None, "view_2": None, "failed": failed, "dropped": len(samples)}
    return {
        "view_1": torch.stack([s["view_1"] for s in good]),
        "view_2": torch.stack([s["view_2"] for s in good]),
        "failed": failed,
        "dropped": len(samples) - len(good),
    }
