"""One dataset of augmented frame pairs over any ``FrameSource`` (videos, a frame cache, images).

Sample ``g`` is a pure function of ``(seed, g)`` (see pairs.py): item ``clip_for_index(seed, g, n)``
of the source, the source's two frame picks drawn from ``sample_generator(seed, g)``, then one
augmentation seed from the same generator. An item whose frames cannot be read is recorded and the
sample moves to another item drawn from that generator, so the stream stays deterministic; after
``retries`` failures the sample is None and the collate function counts it as dropped.

A source only says how many items it has, how to pick an item's two frames with a generator, and how
to read them; sources live in ``video_source.py`` and ``cache_source.py`` (images: one image, picked
twice). With ``photometric=True`` the augmentation only crops and flips, and each sample carries its
photometric parameters for the batched augmentation on the training device (batched_augment.py).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from vito_train.data.augment import PairAugmentation
from vito_train.data.batched_augment import CropPairAugmentation, draw_pair_params
from vito_train.data.pairs import clip_for_index, sample_generator

log = logging.getLogger(__name__)


class FrameReadError(RuntimeError):
    """An item's frames could not be read (undecodable video, corrupt cached JPEG, bad image file)."""


class FrameSource(Protocol):
    """Items (clips or images) whose frames a ``FramePairDataset`` pairs and augments.

    ``pick_pair`` draws the item's two frames from ``rng`` (a video: two times within ``max_gap_s``;
    an image: the same image twice) and returns whatever ``read_pair`` needs to find them (times,
    frame indices). ``read_pair`` returns two RGB frames (H, W, 3) uint8 (views of a CHW tensor are
    fine) and raises ``FrameReadError`` when the item cannot be read.
    """

    def __len__(self) -> int: ...

    def item_id(self, item: int) -> str: ...

    def pick_pair(self, item: int, rng: np.random.Generator) -> tuple[Hashable, Hashable]: ...

    def read_pair(self, item: int, picks: tuple[Hashable, Hashable]) -> tuple[np.ndarray, np.ndarray]: ...


class FramePairDataset(Dataset):
    """Sample ``g``: two frames of one item of ``source``, each with its own augmentation."""

    def __init__(
        self,
        source: FrameSource,
        *,
        seed: int,
        image_size: int,
        min_scale: float,
        retries: int = 3,
        photometric: bool = False,
        blur_p_scale: float = 1.0,
    ) -> None:
        self.source, self.seed, self.retries, self.photometric = source, seed, retries, photometric
        self.blur_p_scale = blur_p_scale
        # per sample in the workers, or (photometric) crop + flip here and the rest batched on the device
        self.augment = (
            CropPairAugmentation(image_size, min_scale)
            if photometric
            else PairAugmentation(image_size, min_scale, blur_p_scale)
        )

    def __len__(self) -> int:  # the stream is endless; a DataLoader only sees our batch sampler
        return 2**62

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A batch (the DataLoader's batched fetch): a source that can (``prefetch``: object storage)
        first sends the fetches of every sample's first draw together, and the samples are made in the
        order their frames arrive (returned in batch order); each is the same as ``__getitem__``'s,
        which depends on its index alone."""
        prefetch = getattr(self.source, "prefetch", None)
        if prefetch is None:
            return [self[index] for index in indices]
        n_items = len(self.source)
        first_draws = []  # (item, picks, the generator past the picks): each sample goes on from there
        for index in indices:
            rng = sample_generator(self.seed, index)
            item = clip_for_index(self.seed, index, n_items)
            first_draws.append((item, self.source.pick_pair(item, rng), rng))
        order = prefetch([(item, picks) for item, picks, _rng in first_draws])
        if order is None:
            return [self._sample(index, *draw) for index, draw in zip(indices, first_draws, strict=True)]
        samples: dict[int, dict[str, Any]] = {}
        for position in order:
            samples[position] = self._sample(indices[position], *first_draws[position])
        return [
            samples[p] if p in samples else self._sample(index, *first_draws[p])
            for p, index in enumerate(indices)
        ]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = sample_generator(self.seed, index)
        item = clip_for_index(self.seed, index, len(self.source))
        return self._sample(index, item, self.source.pick_pair(item, rng), rng)

    def _sample(
        self, index: int, item: int, picks: tuple[Hashable, Hashable], rng: np.random.Generator
    ) -> dict[str, Any]:
        """Sample ``index`` from its first draw (``item``, its ``picks``, ``rng`` just past them)."""
        n_items = len(self.source)
        failures: list[str] = []
        for attempt in range(self.retries + 1):
            if attempt:
                picks = self.source.pick_pair(item, rng)
            try:
                frame_1, frame_2 = self.source.read_pair(item, picks)
            except FrameReadError as exc:
                log.warning("skipping %s: %s", self.source.item_id(item), exc)
                failures.append(self.source.item_id(item))
                item = int(rng.integers(n_items))
                continue
            view_1, view_2 = self.augment(frame_1, frame_2, seed=int(rng.integers(2**62)))
            sample = {"view_1": view_1, "view_2": view_2, "index": index, "failed": failures}
            if self.photometric:
                params = draw_pair_params(self.seed, index, self.blur_p_scale)
                sample["photometric"] = torch.from_numpy(params)
            return sample
        return {"view_1": None, "index": index, "failed": failures}


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
