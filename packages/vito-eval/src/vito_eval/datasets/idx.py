"""MNIST and Fashion-MNIST from the standard IDX files, gzipped or not.

Layout (as Debian's dataset-fashion-mnist installs it, and as LeCun's site serves MNIST):
``DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``; 60,000 train and 10,000 test 28x28 images.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from vito_eval.datasets.base import ImageDataset, ImageSplit, check_classes, files_fingerprint
from vito_eval.errors import DatasetError

MNIST_CLASSES = tuple(str(d) for d in range(10))
# The order of torchvision.datasets.FashionMNIST.classes (label index -> name).
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Upsampled 28 -> 96 so a stride-32 network still ends on a 3x3 map; small enough for a CPU run.
SMALL_IMAGE_SIZE = 96

_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file: 2 zero bytes, a dtype code, the number of dimensions, big-endian int32
    sizes, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read IDX file {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: truncated IDX header ({len(data)} bytes for {ndim} dimensions)")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - offset != expected:
        raise DatasetError(
            f"{path}: header says shape {shape} ({expected} bytes) but {len(data) - offset} follow"
        )
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"{root}: missing {stem}[.gz]; expected the standard IDX files "
        "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] in this directory"
    )


def load_idx_dataset(spec: str, root: Path, class_names: tuple[str, ...]) -> ImageDataset:
    """Both splits of an MNIST-format directory, in memory as uint8 (N, 28, 28)."""
    if not root.is_dir():
        raise DatasetError(f"{spec}: {root} is not a directory")
    files = {
        f"{split}-{part}": _find(root, f"{split}-{part}-ubyte")
        for split in ("train", "t10k")
        for part in ("images-idx3", "labels-idx1")
    }
    splits = {}
    for split in ("train", "t10k"):
        images = read_idx(files[f"{split}-images-idx3"])
        labels = read_idx(files[f"{split}-labels-idx1"]).astype(np.int64)
        if images.ndim != 3 or len(images) != len(labels):
            raise DatasetError(f"{spec}: {split} has images of shape {images.shape} and {len(labels)} labels")
        splits[split] = ImageSplit(labels=labels, pixels=images.astype(np.uint8))
    check_classes(spec, splits["train"], splits["t10k"], class_names)
    return ImageDataset(
        spec,
        splits["train"],
        splits["t10k"],
        class_names,
        files_fingerprint(list(files.values())),
        default_image_size=SMALL_IMAGE_SIZE,
    )
