"""MNIST and Fashion-MNIST from the standard IDX files, gzipped or not.

Layout (as Debian's dataset-fashion-mnist installs it, and as LeCun's site serves MNIST):
``DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``; 60,000 train and 10,000 test 28x28 images.
The IDX reader and the class names are vito-train's (``vito_train.data.image_sets``: the trainer reads
the same files for image-mode pretraining); this module turns them into a probe dataset.
"""

from __future__ import annotations

from pathlib import Path

from vito_eval.datasets.base import ImageDataset, ImageSplit, check_classes, files_fingerprint
from vito_eval.errors import DatasetError
from vito_train.data.image_sets import (
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    ImageSetError,
    idx_files,
    read_idx_split,
)
from vito_train.data.image_sets import read_idx as _read_idx

__all__ = ["FASHION_MNIST_CLASSES", "MNIST_CLASSES", "SMALL_IMAGE_SIZE", "load_idx_dataset", "read_idx"]

# Upsampled 28 -> 96 so a stride-32 network still ends on a 3x3 map; small enough for a CPU run.
SMALL_IMAGE_SIZE = 96


def read_idx(path: Path):  # noqa: ANN201 - np.ndarray; kept for callers of the old eval API
    """vito-train's IDX parser, with its errors as DatasetError."""
    try:
        return _read_idx(path)
    except ImageSetError as exc:
        raise DatasetError(str(exc)) from exc


def load_idx_dataset(spec: str, root: Path, class_names: tuple[str, ...]) -> ImageDataset:
    """Both splits of an MNIST-format directory, in memory as uint8 (N, 28, 28)."""
    if not root.is_dir():
        raise DatasetError(f"{spec}: {root} is not a directory")
    try:
        files = [f for split in ("train", "t10k") for f in idx_files(root, split)]
        splits = {}
        for split in ("train", "t10k"):
            images, labels = read_idx_split(spec, root, split)
            splits[split] = ImageSplit(labels=labels, pixels=images)
    except ImageSetError as exc:
        raise DatasetError(str(exc)) from exc
    check_classes(spec, splits["train"], splits["t10k"], class_names)
    return ImageDataset(
        spec,
        splits["train"],
        splits["t10k"],
        class_names,
        files_fingerprint(files),
        default_image_size=SMALL_IMAGE_SIZE,
    )
