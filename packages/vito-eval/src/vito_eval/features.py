"""Extract frozen features of an image split once, in batches, through the feature cache.

A cache entry (`vito_eval.feature_cache`) is keyed by the encoder (weights hash, readout, normalisation),
the dataset (its source files' fingerprint and the exact samples and labels of the split) and the
transform (resize policy and size).
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vito_eval.datasets.base import ImageDataset, ImageSplit, to_model_input, transform_id
from vito_eval.encoders import Encoder
from vito_eval.feature_cache import DEFAULT_CACHE_DIR, FeatureCache, cache_key
from vito_eval.runtime import Throughput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSet:
    """Features (N, D) float32 of one split with their int64 labels; ``seconds`` is the extraction time
    (the original one when read from the cache)."""

    features: np.ndarray
    labels: np.ndarray
    seconds: float
    from_cache: bool
    key: str


class _ModelInputs(Dataset):
    """A split as uint8 (3, size, size) tensors under the resize policy of `datasets.base`."""

    def __init__(self, split: ImageSplit, image_size: int) -> None:
        self.split, self.image_size = split, image_size

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_model_input(self.split.image(index), self.image_size)


def extract_features(
    encoder: Encoder,
    split: ImageSplit,
    image_size: int,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "features",
    throughput: Throughput | None = None,
) -> np.ndarray:
    """`Encoder.embed` over a split, in order: (N, D) float32. ``throughput`` times the forward passes."""
    loader = DataLoader(
        _ModelInputs(split, image_size), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    chunks = []
    with tqdm(total=len(split), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for images in loader:
            with throughput.timed(len(images)) if throughput else nullcontext():
                chunks.append(encoder.embed(images).numpy().astype(np.float32, copy=False))
            bar.update(len(images))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


def feature_cache_key(encoder: Encoder, dataset: ImageDataset, split: ImageSplit, image_size: int) -> str:
    """The cache key of everything the features depend on (see the module docstring)."""
    return cache_key(
        {
            "encoder": encoder.cache_key,
            "dataset": dataset.fingerprint,
            "samples": split.content_digest(),
            "transform": transform_id(image_size),
        }
    )


def cached_features(
    encoder: Encoder,
    dataset: ImageDataset,
    split: ImageSplit,
    image_size: int,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "features",
    throughput: Throughput | None = None,
) -> FeatureSet:
    """Features of ``split`` from the cache, or extracted and stored there (``cache_dir=None``: no cache);
    ``throughput`` times the forward passes of an extraction."""
    key = feature_cache_key(encoder, dataset, split, image_size)
    cache = FeatureCache(cache_dir)
    hit = cache.load(key)
    if hit is not None and len(hit.labels) == len(split) and np.array_equal(hit.labels, split.labels):
        log.info("feature cache hit %s (%s)", key[:16], desc)
        return FeatureSet(hit.features, hit.labels, float(hit.meta.get("seconds", 0.0)), True, key)
    start = time.perf_counter()
    features = extract_features(
        encoder, split, image_size, batch_size, num_workers, progress, desc, throughput
    )
    seconds = time.perf_counter() - start
    meta = {
        "encoder": encoder.name,
        "dataset": dataset.spec,
        "image_size": image_size,
        "n": len(split),
        "seconds": seconds,
    }
    cache.store(key, features, split.labels, meta)
    return FeatureSet(features, split.labels, seconds, False, key)
