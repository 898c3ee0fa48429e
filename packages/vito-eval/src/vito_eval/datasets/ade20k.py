"""The ADE20K SceneParsing layout: ``ADEChallengeData2016/{images,annotations}/{training,validation}``."""

from __future__ import annotations

from pathlib import Path

from vito_eval.datasets.segmentation import SegmentationDataset, SegmentationLayoutError, listed_pairs

# fmt: off
# ADE20K SceneParsing classes 1..150 (objectInfo150), stored at index k-1.
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence",
    "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column",
    "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator",
    "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land",
    "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name",
    "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
# fmt: on


def load_ade20k(root: Path) -> SegmentationDataset:
    """ADE20K SceneParsing: ROOT is ADEChallengeData2016 (or its parent)."""
    root = Path(root)
    if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    splits = {}
    for split, folder in (("train", "training"), ("val", "validation")):
        image_dir, label_dir = root / "images" / folder, root / "annotations" / folder
        if not image_dir.is_dir() or not label_dir.is_dir():
            raise SegmentationLayoutError(
                f"ade20k:{root}: expected ADEChallengeData2016/images/{{training,validation}}/*.jpg and "
                f"annotations/{{training,validation}}/*.png (ADEChallengeData2016.zip); "
                f"missing {image_dir} or {label_dir}"
            )
        ids = sorted(p.stem for p in image_dir.glob("*.jpg"))
        splits[split] = listed_pairs(image_dir, label_dir, ids, ".jpg", f"ade20k {folder}")
    return SegmentationDataset(
        "ade20k", root, ADE20K_CLASSES, splits["train"], splits["val"], reduce_zero_label=True
    )
