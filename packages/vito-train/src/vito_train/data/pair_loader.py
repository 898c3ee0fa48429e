"""The training batches of one rank: frame source (video, frame cache or image set), augmentation split,
workers.

``open_frame_source`` opens the source; ``build_pair_dataset`` decides where the photometric
augmentation runs: per sample in the CPU workers, or (``batched``) only crop + flip there and the
rest on the training device from per-sample parameters (``data/batched_augment.py``).
``ResilientBatches`` wraps the DataLoader so that a worker process that dies costs one batch
(recorded), not the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from videonet_curate.uri import StorageOptions
from vito_train.data.cache import FrameCache
from vito_train.data.cache_source import CacheFrameSource
from vito_train.data.frame_pairs import FramePairDataset, FrameSource, collate_pair_batch
from vito_train.data.image_sets import load_image_set
from vito_train.distributed import RankBatchSampler, ignore_stop_signals

log = logging.getLogger(__name__)

PHOTOMETRIC_CHOICES = ("auto", "device", "workers")


def use_batched_augment(setting: str, device: torch.device) -> bool:
    """Whether the photometric augmentation runs batched on the training device. ``auto``: yes on a
    GPU (where it is nearly free), no on CPU (where the loader workers spread it over the cores)."""
    if setting not in PHOTOMETRIC_CHOICES:
        raise ValueError(f"photometric_augment={setting!r} is not one of {PHOTOMETRIC_CHOICES}")
    return setting == "device" or (setting == "auto" and device.type == "cuda")


def open_frame_source(
    config: Any,
    *,
    manifest: str | Path | None = None,
    cache: str | Path | None = None,
    images: str | None = None,
    storage: StorageOptions | None = None,
) -> FrameSource:
    """Video mode (``manifest``: PyAV seeks per sample), cache mode (``cache``: prepared JPEGs, a
    directory or a URI reached with ``storage``) or image mode (``images``: an image-set spec, two views
    of one image)."""
    if sum(x is not None for x in (manifest, cache, images)) != 1:
        raise ValueError("pass exactly one of manifest (video), cache (frame cache) or images (image set)")
    if images is not None:
        from vito_train.data.image_source import ImageFrameSource

        return ImageFrameSource(load_image_set(images, "train"))
    if cache is not None:
        frame_cache = FrameCache(cache, storage)
        if frame_cache.bad_shards:
            log.warning(
                "frame cache %s: %d shard(s) unreadable and skipped: %s",
                cache,
                len(frame_cache.bad_shards),
                frame_cache.bad_shards,
            )
        return CacheFrameSource(frame_cache, max_gap_s=config.max_gap_s)
    from vito_train.data.pairs import load_clips
    from vito_train.data.video_source import VideoFrameSource  # PyAV only in video mode

    return VideoFrameSource(
        load_clips(manifest),
        max_gap_s=config.max_gap_s,
        decode_short_side=config.decode_short_side,
        fps=config.frame_fps,
    )


def build_pair_dataset(config: Any, source: FrameSource, *, batched: bool = False) -> FramePairDataset:
    """The augmented pairs of ``source``; ``batched``: only crop + flip in the workers, the
    photometric parameters travel with each sample to the training device."""
    return FramePairDataset(
        source,
        seed=config.seed,
        image_size=config.image_size,
        min_scale=config.crop_min_scale,
        retries=config.decode_retries,
        photometric=batched,
        blur_p_scale=config.blur_p_scale,
    )


def check_data_source(
    *,
    manifest: str | Path | None = None,
    cache: str | Path | None = None,
    images: str | None = None,
    storage: StorageOptions | None = None,
) -> None:
    """Fail fast (typed errors) on a missing or unusable manifest, frame cache or image set."""
    if sum(x is not None for x in (manifest, cache, images)) != 1:
        from vito_train.data.pairs import TrainingDataError

        raise TrainingDataError(
            "pass exactly one data source: --manifest (decode videos), --cache "
            "(a frame cache from `vito-train prepare`) or --images (an image set)"
        )
    if images is not None:
        load_image_set(images, "train")
    elif cache is not None:
        FrameCache(cache, storage)
    else:
        from vito_train.data.pairs import load_clips

        load_clips(manifest)


def is_worker_death(exc: BaseException) -> bool:
    """DataLoader's error for a worker process that exited (crash, OOM kill) rather than raised."""
    return (
        isinstance(exc, RuntimeError)
        and "DataLoader worker" in str(exc)
        and ("exited unexpectedly" in str(exc) or "killed by signal" in str(exc))
    )


def empty_batch(n: int) -> dict[str, Any]:
    return {"view_1": None, "view_2": None, "photometric": None, "failed": [], "dropped": n}


@dataclass
class ResilientBatches:
    """One batch per step in ``[start_step, end_step)``, surviving dead loader workers.

    ``make_loader(first, last, isolated)`` builds a DataLoader over those steps (``isolated``: one
    worker, no read-ahead). A worker that dies takes the batches it had prepared but not yet sent
    with it, so the culprit may be any step up to ``window`` ahead. After a death the next
    ``window`` steps are read one per fresh worker: a step whose worker dies again is replaced by an
    empty batch (all its samples counted as dropped; the loop skips it as it skips an all-failed
    batch) and counted in ``skipped_steps``; then normal loading resumes. ``worker_deaths`` counts
    every death; more than ``max_deaths`` re-raise: something is systematically wrong.
    """

    make_loader: Callable[[int, int, bool], DataLoader]
    start_step: int
    end_step: int
    per_rank_batch: int
    window: int = 1
    max_deaths: int = 100
    worker_deaths: int = 0
    skipped_steps: int = 0
    bad_cache_shards: int = 0  # frame-cache shards found unreadable when the cache was opened

    def _died(self, exc: RuntimeError, step: int) -> None:
        if not is_worker_death(exc) or self.worker_deaths >= self.max_deaths:
            raise exc
        self.worker_deaths += 1
        log.error("step %d: %s (%d worker deaths so far)", step + 1, exc, self.worker_deaths)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        step = self.start_step
        while step < self.end_step:
            iterator = iter(self.make_loader(step, self.end_step, False))
            try:
                for batch in iterator:
                    step += 1
                    yield batch
            except RuntimeError as exc:
                self._died(exc, step)
            finally:
                del iterator  # shuts the remaining workers down before new ones start
            careful_end = min(step + self.window, self.end_step)
            while step < careful_end:  # find the step that kills its worker, one step per worker
                try:
                    batch = next(iter(self.make_loader(step, step + 1, True)))
                except RuntimeError as exc:
                    self._died(exc, step)
                    self.skipped_steps += 1
                    log.error("step %d: its batch kills the loader worker; skipped", step + 1)
                    batch = empty_batch(self.per_rank_batch)
                step += 1
                yield batch


def build_rank_batches(
    config: Any,
    dataset: Dataset,
    *,
    start_step: int,
    end_step: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    bad_cache_shards: int = 0,
) -> ResilientBatches:
    """This rank's batches (its slice of every global batch), from ``start_step``;
    ``bad_cache_shards`` (found when the cache was opened) is reported with the loader's counters."""
    prefetch = 4

    def make_loader(first: int, last: int, isolated: bool) -> DataLoader:
        workers = min(config.num_workers, 1) if isolated else config.num_workers
        return DataLoader(
            dataset,
            batch_sampler=RankBatchSampler(config.batch_size, first, last, rank, world_size),
            num_workers=workers,
            collate_fn=collate_pair_batch,
            pin_memory=pin_memory,
            prefetch_factor=(1 if isolated else prefetch) if workers > 0 else None,
            persistent_workers=False,
            worker_init_fn=ignore_stop_signals if workers > 0 else None,
        )

    per_rank = RankBatchSampler(config.batch_size, 0, 0, rank, world_size).per_rank
    window = max(1, config.num_workers * prefetch + 1) if config.num_workers > 0 else 0
    return ResilientBatches(
        make_loader, start_step, end_step, per_rank, window=window, bad_cache_shards=bad_cache_shards
    )
