"""Every dataset layout vito-eval reads, one module each, and the ``KIND:PATH`` specs that name them.

- Classification datasets for probes, ``load_dataset("KIND:PATH")``: ``imagefolder:DIR``, ``csv:FILE``,
  ``mnist:DIR``, ``fashion-mnist:DIR``, ``mnist-csv:FILE``.
- Segmentation datasets, ``load_segmentation_dataset("KIND:ROOT")``: ``voc:ROOT``, ``ade20k:ROOT``.
- Instance detection, ``datasets.coco.load_detection_dataset("KIND:ROOT")``: ``coco:ROOT`` (COCO 2017),
  ``lvis:ROOT`` (LVIS v1 over the COCO images).
- DAVIS-2017 (`datasets.davis`) and UCF-101 (`datasets.ucf101`) are read by their task modules.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vito_eval.datasets.ade20k import load_ade20k
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
from vito_eval.datasets.segmentation import SegmentationDataset, SegmentationLayoutError
from vito_eval.datasets.voc import load_voc
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


SEGMENTATION_KINDS: dict[str, Callable[[Path], SegmentationDataset]] = {
    "voc": load_voc,
    "ade20k": load_ade20k,
}


def load_segmentation_dataset(spec: str) -> SegmentationDataset:
    """``voc:ROOT`` or ``ade20k:ROOT``."""
    kind, _, root = spec.partition(":")
    if kind not in SEGMENTATION_KINDS or not root:
        raise SegmentationLayoutError(f"--dataset {spec!r}: expected voc:ROOT or ade20k:ROOT")
    return SEGMENTATION_KINDS[kind](Path(root).expanduser())


__all__ = [
    "DATASET_KINDS",
    "RESIZE_POLICY",
    "SEGMENTATION_KINDS",
    "ImageDataset",
    "ImageSplit",
    "SegmentationDataset",
    "load_dataset",
    "load_segmentation_dataset",
    "stratified_subsample",
    "to_model_input",
    "transform_id",
]
