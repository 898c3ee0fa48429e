"""Target class histograms for rebalancing: ``imagenet``, ``uniform`` or a CSV file.

Where the ImageNet-1k numbers come from: ImageNet-1k (ILSVRC-2012) train holds 1,281,167 images in 1,000
classes, 732 to 1,300 per class. No package installed here ships the per-class train
counts: searching the environment's site-packages for the first synset id (n01440764) finds only timm's
synset/lemma/definition lists and torchvision's Imagenette, and the train-set size 1,281,167 appears in
none; open_clip ships class names only. This tool downloads nothing. So ``imagenet`` is the
uniform histogram over the 1,000 classes. That is a close approximation, by a bound rather than a
measurement: the mean class has 1,281.167 images and no class exceeds 1,300, so each class is at most 18.833
images above the mean, and the total-variation distance between uniform and the true histogram (the sum of
the excesses over 1,281,167) is below 1,000 * 18.833 / 1,281,167 < 0.015. Give the exact counts with
``--target FILE.csv`` (columns ``label,count``) when you have them, e.g. counted from your own copy of
the ILSVRC-2012 train folders.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

IMAGENET_NUM_CLASSES = 1000
IMAGENET_TRAIN_IMAGES = 1_281_167
IMAGENET_TRAIN_MIN_PER_CLASS = 732
IMAGENET_TRAIN_MAX_PER_CLASS = 1_300


class TargetError(ValueError):
    """A target histogram that cannot be used (unknown name, unreadable or malformed CSV)."""


def uniform_target(num_classes: int = IMAGENET_NUM_CLASSES) -> np.ndarray:
    """Equal weight for every class, normalised to sum to 1."""
    return np.full(num_classes, 1.0 / num_classes)


def load_target(
    spec: str | os.PathLike[str],
    *,
    num_classes: int = IMAGENET_NUM_CLASSES,
    label_names: Mapping[str, int] | None = None,
) -> np.ndarray:
    """The target histogram as weights over class indices ``0..num_classes-1`` summing to 1.

    ``spec`` is ``imagenet`` (uniform over the 1,000 classes, see the module docstring), ``uniform``, or a
    CSV file with a header ``label,count`` or ``label,weight``. ``label`` is a class index, or a class name
    resolved through ``label_names``. Classes absent from the CSV get weight 0 (they are rebalanced away).
    """
    if str(spec) in ("imagenet", "uniform"):
        return uniform_target(num_classes)
    path = Path(spec)
    if not path.is_file():
        raise TargetError(f"--target {spec!r} is neither 'imagenet', 'uniform' nor an existing CSV file")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip().lower() for f in (reader.fieldnames or [])]
        value_field = "count" if "count" in fields else "weight" if "weight" in fields else None
        if "label" not in fields or value_field is None:
            raise TargetError(f"{path}: header must be 'label,count' or 'label,weight'; found {fields}")
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    weights = np.zeros(num_classes)
    for line, row in enumerate(rows, start=2):
        index = _class_index(row["label"], label_names, path, line)
        if not 0 <= index < num_classes:
            raise TargetError(f"{path}:{line}: class index {index} outside 0..{num_classes - 1}")
        try:
            value = float(row[value_field])
        except ValueError:
            raise TargetError(f"{path}:{line}: {value_field} {row[value_field]!r} is not a number") from None
        if not np.isfinite(value) or value < 0:
            raise TargetError(f"{path}:{line}: {value_field} must be a finite number >= 0, got {value}")
        weights[index] += value
    if weights.sum() <= 0:
        raise TargetError(f"{path}: the {value_field}s sum to 0; give at least one positive {value_field}")
    return weights / weights.sum()


def _class_index(label: str, label_names: Mapping[str, int] | None, path: Path, line: int) -> int:
    if label.lstrip("-").isdigit():
        return int(label)
    if label_names is not None and label in label_names:
        return int(label_names[label])
    raise TargetError(
        f"{path}:{line}: label {label!r} is not a class index and not a class name of this manifest"
    )
