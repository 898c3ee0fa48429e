"""Datasets of image files: an ImageFolder tree, or a CSV of (path, label[, split]) rows.

- ``imagefolder:DIR``: ``DIR/train/<class>/*.jpg`` and ``DIR/val/<class>/...`` (or ``test/``); the classes
  are the sub-directories of ``train/`` (torchvision's `find_classes`/`make_dataset` do the scan).
- ``csv:FILE``: a header ``path,label`` and optionally ``split`` (train/test, val counts as test);
  paths relative to the CSV's directory. Without a split column, within each class, in file order,
  every fifth row goes to test.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from vito_eval.datasets.base import (
    ImageDataset,
    ImageSplit,
    check_classes,
    every_fifth_split,
    files_fingerprint,
)
from vito_eval.errors import DatasetError


def _scan(spec: str, split_dir: Path, class_to_idx: dict[str, int], allow_empty: bool) -> ImageSplit:
    try:
        samples = make_dataset(
            str(split_dir), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=allow_empty
        )
    except FileNotFoundError as exc:  # torchvision's message names the empty class folders
        raise DatasetError(f"{spec}: {split_dir}: {exc}") from exc
    paths = tuple(Path(p) for p, _ in samples)
    return ImageSplit(labels=np.array([c for _, c in samples], dtype=np.int64), paths=paths)


def load_image_folder(spec: str, root: Path) -> ImageDataset:
    if not root.is_dir():
        raise DatasetError(f"{spec}: {root} is not a directory")
    test_dir = next((root / name for name in ("val", "test") if (root / name).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise DatasetError(f"{spec}: expected {root}/train/<class>/... and {root}/val/ (or test/) subfolders")
    try:
        class_names, class_to_idx = find_classes(str(root / "train"))
    except FileNotFoundError as exc:
        raise DatasetError(f"{spec}: {root / 'train'} has no class sub-directories") from exc
    train = _scan(spec, root / "train", class_to_idx, allow_empty=False)
    # A class may lack validation images; a class folder only in val/ is an error (not a training class).
    extra = sorted({d.name for d in test_dir.iterdir() if d.is_dir()} - set(class_names))
    if extra:
        raise DatasetError(f"{spec}: {test_dir} has classes {extra} that train/ lacks")
    test = _scan(spec, test_dir, class_to_idx, allow_empty=True)
    check_classes(spec, train, test, class_names)
    return ImageDataset(
        spec, train, test, tuple(class_names), files_fingerprint([*(train.paths or ()), *(test.paths or ())])
    )


def load_csv(spec: str, path: Path) -> ImageDataset:
    if not path.is_file():
        raise DatasetError(f"{spec}: {path} is not a file")
    try:  # utf-8-sig: spreadsheet programs start the file with a byte-order mark
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{spec}: {path} is not UTF-8 text ({exc.reason}); save it as UTF-8 CSV") from None
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise DatasetError(f"{spec}: {path} needs a header with columns path,label (and optionally split)")
    class_names = sorted({r["label"] for r in rows})
    class_to_idx = {c: i for i, c in enumerate(class_names)}
    paths = [(path.parent / r["path"]).resolve() for r in rows]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{spec}: {len(missing)} listed image files do not exist (e.g. {missing[:3]})")
    labels = np.array([class_to_idx[r["label"]] for r in rows], dtype=np.int64)
    if "split" in rows[0]:
        splits = [r["split"].strip().lower() for r in rows]
        unknown = sorted(set(splits) - {"train", "test", "val"})
        if unknown:
            raise DatasetError(f"{spec}: split values {unknown} are not train/test/val")
        is_train = np.array([s == "train" for s in splits])
        train_idx, test_idx = np.flatnonzero(is_train), np.flatnonzero(~is_train)
    else:
        train_idx, test_idx = every_fifth_split(labels)
    all_paths = ImageSplit(labels=labels, paths=tuple(paths))
    train, test = all_paths.subset(train_idx), all_paths.subset(test_idx)
    check_classes(spec, train, test, class_names)
    return ImageDataset(spec, train, test, tuple(class_names), files_fingerprint([path, *paths]))
