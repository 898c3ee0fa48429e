"""Classification datasets for probes: ``load_dataset("KIND:PATH")``.

Kinds: ``imagefolder:DIR``, ``csv:FILE``, ``mnist:DIR``, ``fashion-mnist:DIR``, ``mnist-csv:FILE``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vito_eval.datasets.base import (
    RESIZE_POLICY,
    ImageDataset,
    ImageSplit,
    stratified_subsample,
    to_model_input,
    transform_id,
)
from vito_eval.datasets.files import load_csv, load_image_folder
from vito_eval.datasets.idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_idx_dataset
from vito_eval.datasets.mnist_csv import load_mnist_csv
from vito_eval.errors import DatasetError

DATASET_KINDS: dict[str, Callable[[str, Path], ImageDataset]] = {
    "imagefolder": load_image_folder,
    "csv": load_csv,
    "mnist": lambda spec, path: load_idx_dataset(spec, path, MNIST_CLASSES),
    "fashion-mnist": lambda spec, path: load_idx_dataset(spec, path, FASHION_MNIST_CLASSES),
    "mnist-csv": load_mnist_csv,
}


def load_dataset(spec: str) -> ImageDataset:
    """Load a ``KIND:PATH`` dataset spec; DatasetError names the spec and the known kinds."""
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise DatasetError(f"dataset {spec!r} is not KIND:PATH (kinds: {', '.join(DATASET_KINDS)})")
    if kind not in DATASET_KINDS:
        raise DatasetError(
            f"unknown dataset kind {kind!r} in {spec!r}; known kinds: {', '.join(DATASET_KINDS)}"
        )
    return DATASET_KINDS[kind](spec, Path(path).expanduser())


__all__ = [
    "DATASET_KINDS",
    "RESIZE_POLICY",
    "ImageDataset",
    "ImageSplit",
    "load_dataset",
    "stratified_subsample",
    "to_model_input",
    "transform_id",
]
