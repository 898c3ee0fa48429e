"""Inference in COCO results format and scoring with faster-coco-eval.

Why faster-coco-eval rather than pycocotools: it is a maintained drop-in re-implementation of pycocotools'
COCOeval (same matching and interpolation; `tests/eval/test_detect_evaluate.py` checks its AP against
pycocotools to 1e-6), it is several times faster on COCO val's masks, and it implements LVIS's federated
rules (``lvis_style``: detections of categories neither present nor verified absent in an image are not
scored, not-exhaustively-annotated categories do not count false positives, AP rare/common/frequent). The
`lvis` package (0.5.3, 2020) no longer runs on current numpy (it uses ``np.float``) and pulls OpenCV.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Iterable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from videonet_curate.storage import atomic_write_text
from vito_eval.datasets.coco import DetectionSplit
from vito_eval.detect.data import read_rgb

log = logging.getLogger(__name__)

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
LVIS_METRIC_NAMES = ("APr", "APc", "APf")
_FCE_KEYS = {
    "AP": "AP_all",
    "AP50": "AP_50",
    "AP75": "AP_75",
    "APs": "AP_small",
    "APm": "AP_medium",
    "APl": "AP_large",
    "APr": "APr",
    "APc": "APc",
    "APf": "APf",
}


def to_coco_results(
    image_id: int, output: dict[str, torch.Tensor], category_ids: list[int], mask_threshold: float = 0.5
) -> list[dict[str, Any]]:
    """torchvision detections of one image -> COCO results records (xywh boxes, RLE masks)."""
    boxes = output["boxes"].float().cpu().numpy()
    scores = output["scores"].float().cpu().numpy()
    labels = output["labels"].cpu().numpy()
    records = []
    masks = None
    if "masks" in output:
        masks = (output["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
    for i in range(len(scores)):
        x0, y0, x1, y1 = boxes[i].tolist()
        record = {
            "image_id": int(image_id),
            "category_id": int(category_ids[int(labels[i]) - 1]),
            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
            "score": round(float(scores[i]), 5),
        }
        if masks is not None:
            rle = mask_utils.encode(np.asfortranarray(masks[i]))
            record["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        records.append(record)
    return records


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    split: DetectionSplit,
    images: list[dict[str, Any]],
    device: torch.device,
    batch_size: int = 2,
    autocast_dtype: torch.dtype | None = None,
    track: Callable[[Iterable, str], Iterable] | None = None,
) -> list[dict[str, Any]]:
    """Run the model (eval mode) over ``images``; detections of all of them in COCO results format."""
    model.eval()
    results: list[dict[str, Any]] = []
    starts = range(0, len(images), batch_size)
    for start in track(starts, "evaluating") if track else starts:
        chunk = images[start : start + batch_size]
        tensors = [read_rgb(im["path"]).to(device) for im in chunk]
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outputs = model(tensors)
        for im, out in zip(chunk, outputs):
            results.extend(to_coco_results(im["id"], out, split.category_ids))
    return results


def evaluate_detections(
    split: DetectionSplit, results: list[dict[str, Any]], image_ids: list[int], iou_type: str
) -> dict[str, Any]:
    """COCO (or LVIS federated) metrics of ``results`` on ``image_ids``: summary in % and per-category AP."""
    from faster_coco_eval import COCO, COCOeval_faster

    lvis = split.kind == "lvis"
    names = METRIC_NAMES + (LVIS_METRIC_NAMES if lvis else ())
    if not results:  # COCO.loadRes refuses an empty list; nothing detected scores zero everywhere
        return {"summary": {k: 0.0 for k in names}, "per_category": {}, "num_detections": 0}
    with redirect_stdout(io.StringIO()):
        gt = COCO(str(split.annotation_file))
        dt = gt.loadRes([dict(r) for r in results])
        evaluator = COCOeval_faster(gt, dt, iou_type, lvis_style=lvis, print_function=log.debug)
        evaluator.params.imgIds = sorted(image_ids)
        if lvis:
            evaluator.params.maxDets = [300]  # LVIS scores up to 300 detections per image
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats_as_dict
    summary = {k: _percent(stats[_FCE_KEYS[k]]) for k in names}
    return {
        "summary": summary,
        "per_category": per_category_ap(evaluator, split),
        "num_detections": len(results),
    }


def per_category_ap(evaluator: Any, split: DetectionSplit) -> dict[str, float | None]:
    """AP (IoU .50:.95, all areas, most detections) per category name, as Detectron2's COCOEvaluator
    reads it from the accumulated precision array; None where the category has no ground truth."""
    precision = evaluator.eval["precision"]  # (iou, recall, category, area, max dets)
    names = {int(c["id"]): c["name"] for c in split.categories}
    out: dict[str, float | None] = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[names[int(cat_id)]] = _percent(float(np.mean(p))) if p.size else None
    return out


def _percent(value: float) -> float | None:
    return (
        None if value < 0 else round(100.0 * float(value), 4)
    )  # -1: no ground truth (e.g. no small objects)


def write_metrics(out: Path, metrics: dict[str, dict[str, Any]]) -> None:
    """``metrics.json`` (summary + per-category AP of each IoU type) and ``per_category_ap.csv``."""
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    types = [t for t in ("bbox", "segm") if t in metrics]
    names = sorted({name for t in types for name in metrics[t]["per_category"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["category", *[f"{t}_AP" for t in types]])
    for name in names:
        row = [metrics[t]["per_category"].get(name) for t in types]
        writer.writerow([name, *["" if v is None else f"{v:.4f}" for v in row]])
    atomic_write_text(out / "per_category_ap.csv", buffer.getvalue())
