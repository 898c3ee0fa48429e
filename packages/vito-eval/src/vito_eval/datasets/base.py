"""Labelled image datasets with a train and a test split, and the one resize policy every encoder sees.

Resize policy (`to_model_input`): decode, convert to RGB (grayscale is repeated over 3 channels),
resize the shorter side to ``size`` with bilinear filtering (antialiased by PIL), centre-crop
``size`` x ``size``, keep uint8. Square images such as 28x28 MNIST are therefore plainly upsampled.
Normalisation is the encoder's business (`Encoder.normalize`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vito_eval.errors import DatasetError, ImageDecodeError

RESIZE_POLICY = "rgb-resize-short-side-bilinear-center-crop"


@dataclass(frozen=True)
class ImageSplit:
    """One split: images either in memory (uint8, N x H x W [x C]) or as file paths; int64 labels."""

    labels: np.ndarray
    pixels: np.ndarray | None = None
    paths: tuple[Path, ...] | None = None

    def __post_init__(self) -> None:
        if (self.pixels is None) == (self.paths is None):
            raise ValueError("an ImageSplit holds either pixels or paths")
        n = len(self.pixels) if self.pixels is not None else len(self.paths or ())
        if n != len(self.labels):
            raise ValueError(f"{n} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image:
        """The image at ``index`` as PIL; ImageDecodeError names the file when it does not decode."""
        if self.pixels is not None:
            return Image.fromarray(self.pixels[index])
        assert self.paths is not None
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                img.load()
                return img.copy()
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ImageDecodeError(f"cannot decode image {path}: {exc}; remove or replace the file") from exc

    def subset(self, indices: np.ndarray) -> ImageSplit:
        indices = np.asarray(indices, dtype=np.int64)
        return replace(
            self,
            labels=self.labels[indices],
            pixels=None if self.pixels is None else self.pixels[indices],
            paths=None if self.paths is None else tuple(self.paths[i] for i in indices),
        )

    def content_digest(self) -> str:
        """sha256 of what identifies this split's content: pixels and labels, or paths and labels."""
        digest = hashlib.sha256(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        if self.pixels is not None:
            digest.update(np.ascontiguousarray(self.pixels).tobytes())
        else:
            digest.update("\n".join(str(p) for p in self.paths or ()).encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class ImageDataset:
    """A classification dataset: ``spec`` is what the user passed (KIND:PATH)."""

    spec: str
    train: ImageSplit
    test: ImageSplit
    class_names: tuple[str, ...]
    fingerprint: str  # changes when the source files change (sizes and mtimes, or content)
    default_image_size: int = 224

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def to_model_input(image: Image.Image, size: int) -> torch.Tensor:
    """The resize policy of the module docstring: PIL image -> uint8 tensor (3, size, size)."""
    image = image.convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def transform_id(size: int) -> str:
    return f"{RESIZE_POLICY}-{size}"


def files_fingerprint(paths: Sequence[Path]) -> str:
    """sha256 over (path, size, mtime_ns) of source files: cheap, and changes when any file does."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        st = path.stat()
        digest.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def stratified_subsample(labels: np.ndarray, limit: int | None, seed: int = 0) -> np.ndarray:
    """Indices of at most ``limit`` samples keeping class proportions (largest-remainder rounding).

    Deterministic for a seed; returns sorted indices; every class keeps at least one sample when
    ``limit`` >= number of classes.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n)
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (limit / n)
    quota = np.floor(exact).astype(int)
    if limit >= len(classes):
        quota = np.maximum(quota, 1)
    remainder = limit - quota.sum()
    if remainder > 0:
        order = np.argsort(-(exact - np.floor(exact)), kind="stable")
        quota[order[:remainder]] += 1
    elif remainder < 0:  # the at-least-one rule overshot: take back from the largest quotas
        for i in np.argsort(-quota, kind="stable")[:-remainder]:
            quota[i] -= 1
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=q, replace=False)
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def every_fifth_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The documented split for files without one: within each class, in file order, every fifth
    sample (positions 4, 9, 14, ...) goes to test (20%), the rest to train."""
    labels = np.asarray(labels)
    is_test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        is_test[idx[4::5]] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def check_classes(spec: str, train: ImageSplit, test: ImageSplit, class_names: Sequence[str]) -> None:
    """Every class needs training samples; test labels must be known classes."""
    for split_name, split in (("train", train), ("test", test)):
        if len(split) == 0:
            raise DatasetError(f"{spec}: the {split_name} split is empty")
    if len(class_names) < 2:
        raise DatasetError(
            f"{spec}: only one class ({list(class_names)}); a probe needs at least two, "
            "or every prediction is trivially right"
        )
    counts = np.bincount(train.labels, minlength=len(class_names))
    empty = [class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DatasetError(
            f"{spec}: class(es) {empty} have no training images; add images or remove the class"
        )
    if test.labels.max() >= len(class_names) or test.labels.min() < 0:
        raise DatasetError(f"{spec}: test labels outside the {len(class_names)} training classes")
