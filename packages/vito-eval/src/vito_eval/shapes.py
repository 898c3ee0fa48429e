"""Synthetic shapes datasets in the COCO, LVIS v1, PASCAL VOC and ADE20K layouts (`vito-eval make-shapes`).

Rectangles, ellipses and triangles of random colour, size and pose on textured backgrounds (random stripes
plus noise), placed without overlap so each instance's polygon is exactly its mask. The class is the
shape, never the colour, so a model has to learn geometry. Used by the learning tests of ``detect`` and
``finetune-seg`` and by anyone who wants to see those commands run end to end on a laptop.

Layouts written (the same ones the real datasets use, so the same readers load them):
- ``coco``: ``annotations/instances_{train,val}2017.json`` + ``{train,val}2017/*.jpg``, polygon masks;
- ``lvis``: ``annotations/lvis_v1_{train,val}.json`` (images named by ``coco_url``, categories with
  ``frequency`` r/c/f, ``neg_category_ids``/``not_exhaustive_category_ids`` per image) + the COCO image
  folders; class frequencies are skewed (rectangles common, triangles rare) so repeat-factor sampling and
  AP rare/common/frequent have something to do. LVIS's r/c/f thresholds (1-10 / 11-100 / >100 training
  images) are scaled to the fixture's size: the bands are the first/second/last third of the image counts;
- ``voc``: ``VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}`` (shapes as VOC classes 1-3,
  a 255 void border around each object as in VOC);
- ``ade20k``: ``ADEChallengeData2016/{images,annotations}/{training,validation}`` (0 = other, shapes 1-3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from videonet_curate.storage import atomic_write_json

Layout = Literal["coco", "lvis", "voc", "ade20k"]
LAYOUTS: tuple[str, ...] = ("coco", "lvis", "voc", "ade20k")
SHAPE_NAMES: tuple[str, ...] = ("rectangle", "ellipse", "triangle")
# LVIS fixture: how often each shape is drawn (rectangle frequent, ellipse common, triangle rare).
LVIS_SHAPE_WEIGHTS = (0.6, 0.3, 0.1)


@dataclass(frozen=True)
class ShapesConfig:
    """What `write_shapes_dataset` generates."""

    layout: Layout = "coco"
    train_images: int = 64
    val_images: int = 16
    image_size: int = 128
    max_objects: int = 3
    min_object_frac: float = 0.25  # object side as a fraction of the image side
    max_object_frac: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class ShapeInstance:
    category: int  # 0-based index into SHAPE_NAMES
    polygon: list[float]  # x0, y0, x1, y1, ... in pixel coordinates


def textured_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) uint8: two nearby colours blended by oriented stripes of random frequency, plus noise
    (texture that an edge detector sees, at lower contrast than the objects' own edges)."""
    a = rng.uniform(40, 215, 3)
    b = np.clip(a + rng.uniform(-40, 40, 3), 0, 255)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle, period = rng.uniform(0, math.pi), rng.uniform(6, 24)
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) * (2 * math.pi / period)
    blend = (0.5 + 0.5 * np.sin(phase))[..., None]
    img = a * blend + b * (1 - blend) + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def shape_polygon(category: int, cx: float, cy: float, w: float, h: float, angle: float) -> list[float]:
    """The outline of a shape centred at (cx, cy) with extents (w, h), rotated by ``angle`` (triangles)."""
    if SHAPE_NAMES[category] == "rectangle":
        pts = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
        angle = 0.0  # axis-aligned, so the box is tight
    elif SHAPE_NAMES[category] == "ellipse":
        pts = [(w / 2 * math.cos(t), h / 2 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 32, False)]
        angle = 0.0
    else:
        pts = [(0.0, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    c, s = math.cos(angle), math.sin(angle)
    out: list[float] = []
    for x, y in pts:
        out += [round(cx + c * x - s * y, 2), round(cy + s * x + c * y, 2)]
    return out


def sample_instances(
    rng: np.random.Generator, config: ShapesConfig, weights: tuple[float, ...] | None = None
) -> list[ShapeInstance]:
    """1..max_objects non-overlapping shapes (rejection sampling of their bounding squares)."""
    size = config.image_size
    n = int(rng.integers(1, config.max_objects + 1))
    placed: list[tuple[float, float, float, float]] = []
    out: list[ShapeInstance] = []
    for _ in range(50 * n):
        if len(out) == n:
            break
        w, h = rng.uniform(config.min_object_frac, config.max_object_frac, 2) * size
        cx, cy = rng.uniform(w / 2 + 1, size - w / 2 - 1), rng.uniform(h / 2 + 1, size - h / 2 - 1)
        r = max(w, h) / 2 + 2
        box = (cx - r, cy - r, cx + r, cy + r)
        if any(box[0] < q[2] and q[0] < box[2] and box[1] < q[3] and q[1] < box[3] for q in placed):
            continue
        category = int(rng.choice(len(SHAPE_NAMES), p=weights))
        out.append(ShapeInstance(category, shape_polygon(category, cx, cy, w, h, rng.uniform(-0.5, 0.5))))
        placed.append(box)
    return out


def render(background: np.ndarray, instances: list[ShapeInstance], rng: np.random.Generator) -> np.ndarray:
    """Paint each shape in a random colour (with a little shading noise) over the background."""
    img = Image.fromarray(background)
    draw = ImageDraw.Draw(img)
    for inst in instances:
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.polygon(list(zip(inst.polygon[::2], inst.polygon[1::2])), fill=colour)
    arr = np.asarray(img).astype(np.int16) + rng.integers(-6, 7, background.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def label_map(size: int, instances: list[ShapeInstance], void_border: int = 0) -> np.ndarray:
    """(size, size) uint8 semantic labels: 0 background, 1 + category inside shapes, 255 on a void border."""
    lab = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(lab)
    for inst in instances:
        xy = list(zip(inst.polygon[::2], inst.polygon[1::2]))
        if void_border:
            draw.polygon(xy, outline=255, width=void_border * 2)
        draw.polygon(xy, fill=1 + inst.category)
        if void_border:
            draw.polygon(xy, outline=255, width=void_border)
    return np.asarray(lab)


def _coco_annotation(ann_id: int, image_id: int, inst: ShapeInstance, category_id: int) -> dict:
    from pycocotools import mask as mask_utils

    xs, ys = inst.polygon[::2], inst.polygon[1::2]
    x0, y0 = min(xs), min(ys)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": [inst.polygon],
        "bbox": [round(x0, 2), round(y0, 2), round(max(xs) - x0, 2), round(max(ys) - y0, 2)],
        "area": float(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects([inst.polygon], *_hw(inst))))),
        "iscrowd": 0,
    }


def _hw(inst: ShapeInstance) -> tuple[int, int]:
    # pycocotools needs the image size to rasterise; shapes never leave their image, so a frame that
    # holds the polygon gives the same area.
    return int(max(inst.polygon[1::2])) + 2, int(max(inst.polygon[::2])) + 2


def _frequency_bands(image_counts: list[int]) -> list[str]:
    """r/c/f by rank of training-image count (LVIS's 10/100 thresholds scaled to a tiny fixture)."""
    order = np.argsort(image_counts)
    bands = ["r", "c", "f"]
    out = [""] * len(image_counts)
    for rank, idx in enumerate(order):
        out[idx] = bands[min(2, rank * 3 // len(image_counts))]
    return out


def write_shapes_dataset(root: Path, config: ShapesConfig) -> Path:
    """Write a shapes dataset in ``config.layout`` under ``root``; returns the path to pass as ROOT."""
    if config.layout not in LAYOUTS:
        raise ValueError(f"unknown layout {config.layout!r}; choose one of {LAYOUTS}")
    rng = np.random.default_rng(config.seed)
    weights = LVIS_SHAPE_WEIGHTS if config.layout == "lvis" else None
    splits = {"train": config.train_images, "val": config.val_images}
    samples: dict[str, list[tuple[np.ndarray, list[ShapeInstance]]]] = {}
    for split, count in splits.items():
        samples[split] = []
        for _ in range(count):
            instances = sample_instances(rng, config, weights)
            image = render(textured_background(rng, config.image_size), instances, rng)
            samples[split].append((image, instances))
    root = Path(root)
    if config.layout in ("coco", "lvis"):
        return _write_detection(root, config, samples)
    return _write_semantic(root, config, samples)


def _write_detection(root: Path, config: ShapesConfig, samples: dict) -> Path:
    size = config.image_size
    image_counts = [
        sum(any(i.category == c for i in insts) for _, insts in samples["train"]) for c in range(3)
    ]
    bands = _frequency_bands(image_counts)
    ann_id, image_id = 1, 1
    for split, items in samples.items():
        folder = root / f"{split}2017"
        folder.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for image, instances in items:
            name = f"{image_id:012d}.jpg"
            Image.fromarray(image).save(folder / name, quality=95)
            record = {"id": image_id, "width": size, "height": size}
            present = {inst.category + 1 for inst in instances}
            if config.layout == "lvis":
                record["coco_url"] = f"http://images.cocodataset.org/{split}2017/{name}"
                record["neg_category_ids"] = sorted(set(range(1, 4)) - present)
                record["not_exhaustive_category_ids"] = []
            else:
                record["file_name"] = name
            images.append(record)
            for inst in instances:
                annotations.append(_coco_annotation(ann_id, image_id, inst, inst.category + 1))
                ann_id += 1
            image_id += 1
        categories = []
        for c, name in enumerate(SHAPE_NAMES):
            cat = {"id": c + 1, "name": name, "supercategory": "shape"}
            if config.layout == "lvis":
                cat.update(
                    frequency=bands[c], image_count=image_counts[c], synset=f"{name}.n.01", synonyms=[name]
                )
            categories.append(cat)
        info = {"description": f"VITO synthetic shapes ({config.layout} layout)", "seed": config.seed}
        payload = {"info": info, "images": images, "annotations": annotations, "categories": categories}
        if config.layout == "lvis":
            for ann in annotations:
                ann.pop("iscrowd")  # LVIS has no crowd annotations
            atomic_write_json(root / "annotations" / f"lvis_v1_{split}.json", payload, indent=None)
        else:
            payload["licenses"] = []
            atomic_write_json(root / "annotations" / f"instances_{split}2017.json", payload, indent=None)
    return root


def _write_semantic(root: Path, config: ShapesConfig, samples: dict) -> Path:
    size = config.image_size
    if config.layout == "voc":
        base = root / "VOC2012"
        sets = base / "ImageSets" / "Segmentation"
        for d in (base / "JPEGImages", base / "SegmentationClass", sets):
            d.mkdir(parents=True, exist_ok=True)
        for split, items in samples.items():
            ids = []
            for k, (image, instances) in enumerate(items):
                stem = f"2012_{split}_{k:06d}"
                Image.fromarray(image).save(base / "JPEGImages" / f"{stem}.jpg", quality=95)
                Image.fromarray(label_map(size, instances, void_border=1)).save(
                    base / "SegmentationClass" / f"{stem}.png"
                )
                ids.append(stem)
            (sets / f"{split}.txt").write_text("\n".join(ids) + "\n")
        return base
    base = root / "ADEChallengeData2016"
    for split, folder in (("train", "training"), ("val", "validation")):
        (base / "images" / folder).mkdir(parents=True, exist_ok=True)
        (base / "annotations" / folder).mkdir(parents=True, exist_ok=True)
        for k, (image, instances) in enumerate(samples[split]):
            stem = f"ADE_{split}_{k:08d}"
            Image.fromarray(image).save(base / "images" / folder / f"{stem}.jpg", quality=95)
            # ADE20K: 0 is 'other' (ignored after reduce_zero_label), so background is class 1 ('wall')
            # and shapes are 2..4; a fixture with some 0 pixels keeps the ignore path exercised.
            lab = label_map(size, instances, void_border=1).astype(np.int16) + 1
            lab[lab == 256] = 0
            Image.fromarray(lab.astype(np.uint8)).save(base / "annotations" / folder / f"{stem}.png")
    return base
