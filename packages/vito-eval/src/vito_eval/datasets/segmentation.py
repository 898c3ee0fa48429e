"""Semantic segmentation datasets: image/label file pairs of two splits, and how a label file reads as
class indices 0..K-1 with 255 ignored. The layout readers are `datasets.voc` and `datasets.ade20k`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vito_eval.errors import DatasetError
from vito_eval.seg_metrics import IGNORE_INDEX


class SegmentationLayoutError(DatasetError):
    """A segmentation dataset root is not in the official layout."""


@dataclass(frozen=True)
class SegmentationDataset:
    """Image/label file pairs of both splits and how to read a label file into 0..K-1 / 255."""

    name: str
    root: Path
    class_names: tuple[str, ...]
    train: list[tuple[Path, Path]]
    val: list[tuple[Path, Path]]
    reduce_zero_label: bool  # ADE20K: 0 ('other') -> 255, k -> k-1

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def read_label(self, path: Path) -> np.ndarray:
        with Image.open(path) as im:
            lab = np.array(im)  # palette PNGs read as their indices, grey PNGs as values
        if lab.ndim != 2:
            raise SegmentationLayoutError(
                f"{path}: a label map must be single-channel (indexed or grey), got {lab.shape}"
            )
        if self.reduce_zero_label:
            lab = lab.astype(np.int64)
            lab = np.where(lab == 0, IGNORE_INDEX, lab - 1)
        lab = lab.astype(np.uint8)
        bad = (lab != IGNORE_INDEX) & (lab >= self.num_classes)
        if bad.any():
            raise SegmentationLayoutError(
                f"{path}: label values {np.unique(lab[bad])[:5]} exceed {self.name}'s classes"
            )
        return lab


def listed_pairs(
    image_dir: Path, label_dir: Path, ids: list[str], image_ext: str, what: str
) -> list[tuple[Path, Path]]:
    """(image, label) paths of the listed ids, checking that every file exists."""
    pairs = [(image_dir / f"{i}{image_ext}", label_dir / f"{i}.png") for i in ids]
    missing = [p for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise SegmentationLayoutError(f"{what}: {len(missing)} listed files are missing, e.g. {missing[0]}")
    if not pairs:
        raise SegmentationLayoutError(f"{what}: no images listed")
    return pairs
