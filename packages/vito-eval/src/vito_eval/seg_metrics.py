"""Semantic-segmentation scores from a dataset-wide confusion matrix (PASCAL VOC / ADE20K / mmseg definition).

IoU_c = TP_c / (TP_c + FP_c + FN_c) accumulated over all pixels of the dataset whose label is not the ignore
index; mIoU = mean of IoU_c over the classes whose union is non-empty (classes absent from both the labels and
the predictions are left out, as mmseg's nanmean does). Pixel accuracy = trace / total.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255


def confusion_matrix(
    pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """(num_classes, num_classes) int64 counts, rows = ground truth, columns = prediction; ignores dropped.

    Labels outside [0, num_classes) other than ``ignore_index`` are an error (a wrong class mapping).
    """
    if pred.shape != label.shape:
        raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in shape")
    lab = label.reshape(-1).astype(np.int64)
    prd = pred.reshape(-1).astype(np.int64)
    keep = lab != ignore_index
    lab, prd = lab[keep], prd[keep]
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}) or be {ignore_index}; found {np.unique(lab)[:10]}"
        )
    if prd.size and (prd.min() < 0 or prd.max() >= num_classes):
        raise ValueError(f"predictions must lie in [0, {num_classes}); found {np.unique(prd)[:10]}")
    return np.bincount(lab * num_classes + prd, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


@dataclass(frozen=True)
class SegmentationScores:
    miou: float
    pixel_accuracy: float
    iou: np.ndarray  # per class, nan where the class is absent from labels and predictions
    n_pixels: int


def scores_from_confusion(conf: np.ndarray) -> SegmentationScores:
    """Per-class IoU = diag / (row + col - diag); mIoU over classes with a non-empty union."""
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = conf.sum()
    present = ~np.isnan(iou)
    return SegmentationScores(
        miou=float(iou[present].mean()) if present.any() else float("nan"),
        pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
        iou=iou,
        n_pixels=int(total),
    )
