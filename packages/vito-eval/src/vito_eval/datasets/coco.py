"""COCO 2017 and LVIS v1 instance annotations: layout checks and per-image training targets.

Layouts (as the official archives unpack):
- ``coco:ROOT``: ``ROOT/annotations/instances_{train,val}2017.json``, images in ``ROOT/{train,val}2017/``;
- ``lvis:ROOT``: ``ROOT/annotations/lvis_v1_{train,val}.json`` over the COCO 2017 images in
  ``ROOT/{train,val}2017/`` (LVIS records name their image by ``coco_url``; its last two path parts are
  the file under ROOT, which is how detectron2 resolves them too).

Everything is checked before a run starts (readable JSON with images/annotations/categories, every image
on disk, the same categories in both splits, annotations pointing at known images and categories), so a
bad root fails in seconds with the problem named instead of hours into training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vito_eval.errors import DatasetError

DetectionKind = Literal["coco", "lvis"]
ANNOTATION_FILES = {
    "coco": {"train": "annotations/instances_train2017.json", "val": "annotations/instances_val2017.json"},
    "lvis": {"train": "annotations/lvis_v1_train.json", "val": "annotations/lvis_v1_val.json"},
}
IMAGE_DIRS = {"train": "train2017", "val": "val2017"}


class DetectionLayoutError(DatasetError):
    """A COCO/LVIS root is not in the official layout or its annotations are inconsistent."""


@dataclass
class DetectionSplit:
    """One split: image records (with ``path`` resolved), annotations per image id, categories by id."""

    kind: DetectionKind
    split: str
    annotation_file: Path
    images: list[dict[str, Any]]
    annotations: dict[int, list[dict[str, Any]]]
    categories: list[dict[str, Any]]  # sorted by id
    label_of: dict[int, int] = field(init=False)  # category id -> contiguous label 1..K (0 = background)

    def __post_init__(self) -> None:
        self.label_of = {int(c["id"]): k + 1 for k, c in enumerate(self.categories)}

    @property
    def category_ids(self) -> list[int]:
        return [int(c["id"]) for c in self.categories]


@dataclass
class DetectionDataset:
    kind: DetectionKind
    root: Path
    train: DetectionSplit
    val: DetectionSplit

    @property
    def num_classes(self) -> int:
        return len(self.train.categories)

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.root}"


def _read_json(path: Path, spec: str) -> dict[str, Any]:
    if not path.is_file():
        raise DetectionLayoutError(
            f"{spec}: missing {path} (expected the official layout: "
            f"{', '.join(ANNOTATION_FILES[spec.split(':')[0]].values())} with the images in train2017/, val2017/)"
        )
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DetectionLayoutError(f"{path}: not valid JSON ({exc}); re-download or fix the file") from exc
    missing = [
        k
        for k in ("images", "annotations", "categories")
        if not isinstance(payload, dict) or k not in payload
    ]
    if missing:
        raise DetectionLayoutError(f"{path}: not a COCO-style annotation file (no {', '.join(missing)} list)")
    return payload


def _image_path(root: Path, kind: DetectionKind, split: str, record: dict[str, Any], ann_file: Path) -> Path:
    if "file_name" in record:
        return root / IMAGE_DIRS[split] / record["file_name"]
    if kind == "lvis" and "coco_url" in record:
        return root.joinpath(*str(record["coco_url"]).split("/")[-2:])
    raise DetectionLayoutError(f"{ann_file}: image {record.get('id')} has neither file_name nor coco_url")


def load_split(root: Path, kind: DetectionKind, split: str, check_files: bool = True) -> DetectionSplit:
    """Read and check one split's annotation file; raises DetectionLayoutError naming the problem."""
    spec = f"{kind}:{root}"
    ann_file = root / ANNOTATION_FILES[kind][split]
    payload = _read_json(ann_file, spec)
    try:
        categories = sorted(payload["categories"], key=lambda c: int(c["id"]))
        images = []
        for record in payload["images"]:
            image = dict(record)
            image["id"] = int(record["id"])
            image["path"] = _image_path(root, kind, split, record, ann_file)
            images.append(image)
        known_images = {im["id"] for im in images}
        known_categories = {int(c["id"]) for c in categories}
        annotations: dict[int, list[dict[str, Any]]] = {i: [] for i in known_images}
        for ann in payload["annotations"]:
            image_id, category_id = int(ann["image_id"]), int(ann["category_id"])
            if image_id not in known_images:
                raise DetectionLayoutError(
                    f"{ann_file}: annotation {ann.get('id')} names unknown image {image_id}"
                )
            if category_id not in known_categories:
                raise DetectionLayoutError(
                    f"{ann_file}: annotation {ann.get('id')} has category {category_id}, which is not in the "
                    "file's categories: the annotations and the category list do not match"
                )
            if len(ann["bbox"]) != 4:
                raise DetectionLayoutError(f"{ann_file}: annotation {ann.get('id')} has a malformed bbox")
            annotations[image_id].append(ann)
    except (KeyError, TypeError, ValueError) as exc:
        raise DetectionLayoutError(f"{ann_file}: malformed record ({type(exc).__name__}: {exc})") from exc
    if not images:
        raise DetectionLayoutError(f"{ann_file}: lists no images")
    if check_files:
        missing = [im["path"] for im in images if not im["path"].is_file()]
        if missing:
            raise DetectionLayoutError(
                f"{spec}: {len(missing)} of {len(images)} {split} images listed in {ann_file.name} are missing "
                f"on disk, e.g. {missing[0]}; unpack the image archive under {root}"
            )
    return DetectionSplit(kind, split, ann_file, images, annotations, categories)


def load_detection_dataset(spec: str, check_files: bool = True) -> DetectionDataset:
    """``coco:ROOT`` or ``lvis:ROOT``, both splits checked and with matching categories."""
    kind, _, root_text = spec.partition(":")
    if kind not in ANNOTATION_FILES or not root_text:
        raise DetectionLayoutError(f"--dataset {spec!r}: expected coco:ROOT or lvis:ROOT")
    root = Path(root_text).expanduser()
    if not root.is_dir():
        raise DetectionLayoutError(f"{spec}: {root} is not a directory")
    train = load_split(root, kind, "train", check_files)  # type: ignore[arg-type]
    val = load_split(root, kind, "val", check_files)  # type: ignore[arg-type]
    train_cats = [(int(c["id"]), c["name"]) for c in train.categories]
    val_cats = [(int(c["id"]), c["name"]) for c in val.categories]
    if train_cats != val_cats:
        only = sorted(set(train_cats) ^ set(val_cats))[:3]
        raise DetectionLayoutError(
            f"{spec}: the train and val splits list different categories (e.g. {only}); both files must "
            "come from the same release"
        )
    return DetectionDataset(kind, root, train, val)  # type: ignore[arg-type]


def annotation_masks(annotations: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """(N, H, W) uint8 instance masks from polygon or RLE segmentations (pycocotools decodes both)."""
    from pycocotools import mask as mask_utils

    masks = np.zeros((len(annotations), height, width), dtype=np.uint8)
    for i, ann in enumerate(annotations):
        segm = ann.get("segmentation")
        if not segm:
            continue
        if isinstance(segm, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
        elif isinstance(segm.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segm, height, width)
        else:
            rle = segm
        masks[i] = mask_utils.decode(rle)
    return masks


def training_target(split: DetectionSplit, image: dict[str, Any]) -> dict[str, torch.Tensor]:
    """torchvision detection target of one image: boxes (xyxy), labels (1..K), masks; crowd and degenerate
    boxes dropped (as detectron2 and torchvision's reference scripts do)."""
    anns = [
        a
        for a in split.annotations[image["id"]]
        if not a.get("iscrowd", 0) and a["bbox"][2] > 1 and a["bbox"][3] > 1
    ]
    h, w = int(image["height"]), int(image["width"])
    boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    boxes[:, 0::2].clamp_(0, w)
    boxes[:, 1::2].clamp_(0, h)
    labels = torch.tensor([split.label_of[int(a["category_id"])] for a in anns], dtype=torch.int64)
    masks = torch.from_numpy(annotation_masks(anns, h, w))
    return {"boxes": boxes, "labels": labels, "masks": masks}


def trainable_images(split: DetectionSplit) -> list[dict[str, Any]]:
    """Images with at least one usable instance (empty images teach Mask R-CNN nothing; detectron2 drops
    them too)."""
    return [
        im
        for im in split.images
        if any(
            not a.get("iscrowd", 0) and a["bbox"][2] > 1 and a["bbox"][3] > 1
            for a in split.annotations[im["id"]]
        )
    ]


def repeat_factors(image_categories: list[set[int]], threshold: float) -> np.ndarray:
    """LVIS repeat-factor sampling (Gupta et al. 2019, eq. 2): r_c = max(1, sqrt(t / f_c)) with f_c the
    fraction of training images containing category c; an image repeats max over its categories of r_c."""
    n = len(image_categories)
    counts: dict[int, int] = {}
    for cats in image_categories:
        for c in cats:
            counts[c] = counts.get(c, 0) + 1
    r_cat = {c: max(1.0, float(np.sqrt(threshold / (k / n)))) for c, k in counts.items()}
    return np.array([max((r_cat[c] for c in cats), default=1.0) for cats in image_categories])


def epoch_indices(factors: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """One epoch of image indices: each image repeated floor(r) or ceil(r) times (stochastic rounding, as
    detectron2's RepeatFactorTrainingSampler), shuffled; a pure function of (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    whole = np.floor(factors)
    reps = whole + (rng.random(len(factors)) < factors - whole)
    indices = np.repeat(np.arange(len(factors)), reps.astype(np.int64))
    return rng.permutation(indices)
