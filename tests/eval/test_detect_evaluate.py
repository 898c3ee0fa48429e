"""detect's evaluator (faster-coco-eval) against pycocotools on a fixed set of detections, and its outputs."""

from __future__ import annotations

import csv
import io
import json
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vito_eval.datasets.coco import load_detection_dataset
from vito_eval.detect.evaluate import evaluate_detections, to_coco_results, write_metrics
from vito_eval.shapes import ShapesConfig, write_shapes_dataset


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return write_shapes_dataset(
        tmp_path_factory.mktemp("shapes-coco"), ShapesConfig("coco", train_images=4, val_images=12, seed=3)
    )


def jittered_detections(split, seed: int = 0) -> list[dict]:
    """Ground truth moved, rescaled, relabelled and duplicated at random scores, plus pure false positives:
    a fixed set with every kind of match (TP at many IoUs, FP, wrong class, missed)."""
    rng = np.random.default_rng(seed)
    out = []
    for image in split.images:
        h, w = image["height"], image["width"]
        for ann in split.annotations[image["id"]]:
            if rng.random() < 0.15:
                continue  # missed
            for _ in range(int(rng.integers(1, 3))):
                x, y, bw, bh = ann["bbox"]
                dx, dy = rng.normal(0, 0.12 * bw), rng.normal(0, 0.12 * bh)
                s = rng.uniform(0.8, 1.2)
                box = [x + dx, y + dy, bw * s, bh * s]
                cat = ann["category_id"] if rng.random() < 0.85 else int(rng.integers(1, 4))
                mask = np.zeros((h, w), np.uint8)
                x0, y0 = int(max(0, box[0])), int(max(0, box[1]))
                mask[y0 : int(min(h, box[1] + box[3])), x0 : int(min(w, box[0] + box[2]))] = 1
                rle = mask_utils.encode(np.asfortranarray(mask))
                out.append(
                    {
                        "image_id": image["id"],
                        "category_id": cat,
                        "bbox": [round(v, 2) for v in box],
                        "score": round(float(rng.random()), 4),
                        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                    }
                )
        for _ in range(2):
            x, y = rng.uniform(0, w - 20, 2)
            mask = np.zeros((h, w), np.uint8)
            mask[int(y) : int(y) + 20, int(x) : int(x) + 20] = 1
            rle = mask_utils.encode(np.asfortranarray(mask))
            out.append(
                {
                    "image_id": image["id"],
                    "category_id": int(rng.integers(1, 4)),
                    "bbox": [round(x, 2), round(y, 2), 20.0, 20.0],
                    "score": round(float(rng.random()) * 0.5, 4),
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                }
            )
    return out


def pycocotools_stats(ann_file, results, iou_type, image_ids):
    with redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        dt = gt.loadRes([dict(r) for r in results])
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_ap_equals_pycocotools(coco_root, iou_type):
    split = load_detection_dataset(f"coco:{coco_root}").val
    results = jittered_detections(split)
    ids = [im["id"] for im in split.images]
    ours = evaluate_detections(split, results, ids, iou_type)
    ref = pycocotools_stats(split.annotation_file, results, iou_type, ids)
    for k, name in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
        expected = None if ref.stats[k] < 0 else 100 * ref.stats[k]
        got = ours["summary"][name]
        assert (got is None) == (expected is None), name
        if expected is not None:
            assert got == pytest.approx(expected, abs=1e-4), (
                name
            )  # 1e-6 in AP units; ours are % rounded to 1e-4
    assert 5 < ours["summary"]["AP50"] < 100  # the fixed set is neither empty nor perfect
    precision = ref.eval["precision"]
    for k, cat in enumerate(split.categories):
        p = precision[:, :, k, 0, -1]
        assert ours["per_category"][cat["name"]] == pytest.approx(100 * p[p > -1].mean(), abs=1e-4)


def test_unrounded_ap_matches_to_1e6(coco_root):
    """The same comparison without our percent rounding: the evaluator itself agrees to 1e-6."""
    from faster_coco_eval import COCO as FCOCO
    from faster_coco_eval import COCOeval_faster

    split = load_detection_dataset(f"coco:{coco_root}").val
    results = jittered_detections(split, seed=1)
    ids = [im["id"] for im in split.images]
    for iou_type in ("bbox", "segm"):
        ref = pycocotools_stats(split.annotation_file, results, iou_type, ids)
        with redirect_stdout(io.StringIO()):
            gt = FCOCO(str(split.annotation_file))
            ev = COCOeval_faster(
                gt, gt.loadRes([dict(r) for r in results]), iou_type, print_function=lambda *a: None
            )
            ev.params.imgIds = sorted(ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        np.testing.assert_allclose(np.asarray(ev.stats[:12]), ref.stats[:12], atol=1e-6)


def test_results_format_and_written_metrics(coco_root, tmp_path):
    split = load_detection_dataset(f"coco:{coco_root}").val
    image = split.images[0]
    masks = torch.zeros(2, 1, image["height"], image["width"])
    masks[0, 0, 10:40, 20:60] = 0.9
    output = {
        "boxes": torch.tensor([[20.0, 10.0, 60.0, 40.0], [0, 0, 5, 5]]),
        "scores": torch.tensor([0.9, 0.2]),
        "labels": torch.tensor([3, 1]),
        "masks": masks,
    }
    records = to_coco_results(image["id"], output, split.category_ids)
    assert records[0]["bbox"] == [20.0, 10.0, 40.0, 30.0] and records[0]["category_id"] == 3
    assert mask_utils.area(records[0]["segmentation"]) == 30 * 40
    assert mask_utils.area(records[1]["segmentation"]) == 0

    results = jittered_detections(split)
    ids = [im["id"] for im in split.images]
    metrics = {t: evaluate_detections(split, results, ids, t) for t in ("bbox", "segm")}
    write_metrics(tmp_path, metrics)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["bbox"]["summary"] == metrics["bbox"]["summary"]
    rows = list(csv.DictReader((tmp_path / "per_category_ap.csv").open()))
    assert [r["category"] for r in rows] == sorted(c["name"] for c in split.categories)
    for row in rows:
        assert float(row["bbox_AP"]) == pytest.approx(
            metrics["bbox"]["per_category"][row["category"]], abs=1e-4
        )
    assert not list(tmp_path.glob(".*tmp*"))


def test_no_detections_scores_zero(coco_root):
    split = load_detection_dataset(f"coco:{coco_root}").val
    result = evaluate_detections(split, [], [im["id"] for im in split.images], "bbox")
    assert result["summary"]["AP"] == 0.0 and result["num_detections"] == 0
