"""The PASCAL VOC 2012 segmentation layout:
``VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}``.
"""

from __future__ import annotations

from pathlib import Path

from vito_eval.datasets.segmentation import SegmentationDataset, SegmentationLayoutError, listed_pairs

# fmt: off
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
# fmt: on


def load_voc(root: Path) -> SegmentationDataset:
    """PASCAL VOC 2012: ROOT is VOC2012 (or a folder holding VOCdevkit/VOC2012 or VOC2012)."""
    root = Path(root)
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "ImageSets" / "Segmentation").is_dir():
            root = candidate
            break
    else:
        raise SegmentationLayoutError(
            f"voc:{root}: expected VOC2012/JPEGImages/*.jpg, VOC2012/SegmentationClass/*.png and "
            "VOC2012/ImageSets/Segmentation/{train,val}.txt (VOCtrainval_11-May-2012.tar); "
            f"found no ImageSets/Segmentation under {root}"
        )
    sets = root / "ImageSets" / "Segmentation"
    splits = {}
    for split in ("train", "val"):
        path = sets / f"{split}.txt"
        if not path.is_file():
            raise SegmentationLayoutError(f"voc:{root}: missing {path}")
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        splits[split] = listed_pairs(
            root / "JPEGImages", root / "SegmentationClass", ids, ".jpg", f"voc {split}"
        )
    return SegmentationDataset(
        "voc", root, VOC_CLASSES, splits["train"], splits["val"], reduce_zero_label=False
    )
