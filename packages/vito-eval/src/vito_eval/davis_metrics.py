"""DAVIS-2017 semi-supervised metrics: region similarity J, boundary F-measure F, and their statistics.

Re-implemented from the definitions of the official davis2017-evaluation package (``davis2017/metrics.py``,
``davis2017/utils.py``, ``davis2017/evaluation.py``) in numpy alone (no OpenCV, no scikit-image):

- J = |M ∩ G| / |M ∪ G| over non-void pixels, 1 when the union is empty (``db_eval_iou``).
- F = 2PR / (P + R) where boundaries come from ``seg2bmap`` and a predicted boundary pixel counts as matched
  when a ground-truth boundary pixel lies within a disk of radius ceil(0.008 * image diagonal)
  (``db_eval_boundary`` / ``f_measure``; the dilation is OpenCV's with a scikit-image ``disk``).
- Per object: mean over the evaluated frames (first and last frames excluded), recall = fraction of frames
  above 0.5, decay = mean of the first quarter minus mean of the last quarter (``db_statistics``).
- Dataset: J-Mean and F-Mean are means over all objects of all sequences; J&F-Mean is their average.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

DEFAULT_BOUND_TH = 0.008


def region_similarity(
    annotation: np.ndarray, segmentation: np.ndarray, void: np.ndarray | None = None
) -> float:
    """J, the Jaccard index |A ∩ S| / |A ∪ S| of two binary masks without void pixels (1.0 if both empty)."""
    if annotation.shape != segmentation.shape:
        raise ValueError(
            f"annotation {annotation.shape} and segmentation {segmentation.shape} differ in shape"
        )
    a = annotation.astype(bool)
    s = segmentation.astype(bool)
    keep = np.ones_like(a) if void is None else ~void.astype(bool)
    inter = np.count_nonzero(a & s & keep)
    union = np.count_nonzero((a | s) & keep)
    return 1.0 if union == 0 else inter / union


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask, half a pixel towards the origin (Martin et al. 2004).

    A pixel is a boundary pixel when it differs from its east, south or south-east neighbour; in the last row
    only the east neighbour counts, in the last column only the south one, and the corner pixel never does.
    """
    s = seg.astype(bool)
    east = np.zeros_like(s)
    south = np.zeros_like(s)
    south_east = np.zeros_like(s)
    east[:, :-1] = s[:, 1:]
    south[:-1, :] = s[1:, :]
    south_east[:-1, :-1] = s[1:, 1:]
    b = (s ^ east) | (s ^ south) | (s ^ south_east)
    b[-1, :] = s[-1, :] ^ east[-1, :]
    b[:, -1] = s[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def disk_offsets(radius: float) -> list[tuple[int, int]]:
    """Row half-widths of scikit-image's ``disk(radius)``: for each dy, the largest dx with dx²+dy² <= r²."""
    r = int(math.floor(radius))
    rows = []
    for dy in range(-r, r + 1):
        rest = radius * radius - dy * dy
        if rest < 0:
            continue
        half = int(math.floor(math.sqrt(rest)))
        while (half + 1) ** 2 + dy * dy <= radius * radius:  # guard against sqrt rounding down
            half += 1
        while half > 0 and half * half + dy * dy > radius * radius:
            half -= 1
        rows.append((dy, half))
    return rows


def _dilate_rows(mask: np.ndarray, half: int) -> np.ndarray:
    """Horizontal dilation by ``half`` pixels each side (a 1 x (2*half+1) segment), zero outside the image."""
    if half == 0:
        return mask.copy()
    h, w = mask.shape
    counts = np.zeros((h, w + 1), dtype=np.int32)
    np.cumsum(mask, axis=1, out=counts[:, 1:])
    cols = np.arange(w)
    hi = np.minimum(cols + half + 1, w)
    lo = np.maximum(cols - half, 0)
    return (counts[:, hi] - counts[:, lo]) > 0


def dilate_disk(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation by a disk structuring element (as ``cv2.dilate(m, skimage.morphology.disk(r))``).

    The disk is a union of horizontal segments, one per row offset dy; dilating by each segment and shifting
    by dy keeps the cost at O((2r+1) * H * W) instead of O(r² * H * W).
    """
    m = mask.astype(bool)
    h, _ = m.shape
    out = np.zeros_like(m)
    by_half: dict[int, np.ndarray] = {}
    for dy, half in disk_offsets(radius):
        if half not in by_half:
            by_half[half] = _dilate_rows(m, half)
        rows = by_half[half]
        # out[y] |= rows[y + dy]: the structuring element is symmetric, so the sign convention is immaterial.
        if dy >= 0:
            out[: h - dy] |= rows[dy:]
        else:
            out[-dy:] |= rows[: h + dy]
    return out


def boundary_f_measure(
    segmentation: np.ndarray,
    annotation: np.ndarray,
    void: np.ndarray | None = None,
    bound_th: float = DEFAULT_BOUND_TH,
) -> float:
    """F, the boundary F-measure 2PR/(P+R) with a tolerance of ceil(bound_th * diagonal) pixels (or
    bound_th pixels when >= 1), as davis2017-evaluation's ``f_measure``."""
    if segmentation.shape != annotation.shape:
        raise ValueError(
            f"annotation {annotation.shape} and segmentation {segmentation.shape} differ in shape"
        )
    keep = np.ones(segmentation.shape, dtype=bool) if void is None else ~void.astype(bool)
    bound_pix = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*segmentation.shape))
    fg_boundary = seg2bmap(segmentation.astype(bool) & keep)
    gt_boundary = seg2bmap(annotation.astype(bool) & keep)
    fg_dil = dilate_disk(fg_boundary, bound_pix)
    gt_dil = dilate_disk(gt_boundary, bound_pix)
    n_fg = int(np.count_nonzero(fg_boundary))
    n_gt = int(np.count_nonzero(gt_boundary))
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.count_nonzero(fg_boundary & gt_dil) / n_fg
        recall = np.count_nonzero(gt_boundary & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


@dataclass(frozen=True)
class ObjectStatistics:
    """Mean, recall (fraction > 0.5) and decay of one object's per-frame scores (``db_statistics``)."""

    mean: float
    recall: float
    decay: float


def score_statistics(per_frame: np.ndarray) -> ObjectStatistics:
    """M = nanmean(x), O = nanmean(x > 0.5), D = mean(first quarter) - mean(last quarter), bins as DAVIS."""
    x = np.asarray(per_frame, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # nanmean of an empty bin is nan, as DAVIS
        mean = float(np.nanmean(x)) if x.size else float("nan")
        recall = float(np.nanmean(x > 0.5)) if x.size else float("nan")
        ids = (np.round(np.linspace(1, len(x), 5) + 1e-10) - 1).astype(int)
        bins = [x[ids[i] : ids[i + 1] + 1] for i in range(4)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3])) if x.size else float("nan")
    return ObjectStatistics(mean=mean, recall=recall, decay=decay)


@dataclass(frozen=True)
class ObjectScores:
    """Per-frame J and F of one object of one sequence over the evaluated frames."""

    sequence: str
    object_id: int
    j: np.ndarray
    f: np.ndarray


def evaluate_sequence(
    sequence: str,
    gt_labels: np.ndarray,
    pred_labels: np.ndarray,
    bound_th: float = DEFAULT_BOUND_TH,
) -> list[ObjectScores]:
    """Score a whole sequence given index maps (T, H, W): objects are 1..max(first GT frame), frames 1..T-2.

    As the official loader does, 255 (void) in the ground truth is treated as background, so void pixels
    never enter the scores.
    """
    if gt_labels.shape != pred_labels.shape:
        raise ValueError(
            f"sequence {sequence}: predictions {pred_labels.shape} and annotations {gt_labels.shape} differ"
        )
    gt = np.where(gt_labels == 255, 0, gt_labels)
    n_objects = int(gt[0].max())
    frames = range(1, gt.shape[0] - 1)
    scores = []
    for obj in range(1, n_objects + 1):
        j = np.array(
            [region_similarity(gt[t] == obj, pred_labels[t] == obj) for t in frames], dtype=np.float64
        )
        f = np.array(
            [boundary_f_measure(pred_labels[t] == obj, gt[t] == obj, bound_th=bound_th) for t in frames],
            dtype=np.float64,
        )
        scores.append(ObjectScores(sequence=sequence, object_id=obj, j=j, f=f))
    return scores


@dataclass(frozen=True)
class DavisSummary:
    """The dataset-level numbers davis2017-evaluation prints (global-results CSV)."""

    jf_mean: float
    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float
    n_objects: int


def summarise(objects: list[ObjectScores]) -> DavisSummary:
    """Means over objects of the per-object statistics; J&F-Mean = (J-Mean + F-Mean) / 2."""
    if not objects:
        raise ValueError("no objects to summarise: were any sequences evaluated?")
    js = [score_statistics(o.j) for o in objects]
    fs = [score_statistics(o.f) for o in objects]
    j_mean = float(np.mean([s.mean for s in js]))
    f_mean = float(np.mean([s.mean for s in fs]))
    return DavisSummary(
        jf_mean=(j_mean + f_mean) / 2,
        j_mean=j_mean,
        j_recall=float(np.mean([s.recall for s in js])),
        j_decay=float(np.mean([s.decay for s in js])),
        f_mean=f_mean,
        f_recall=float(np.mean([s.recall for s in fs])),
        f_decay=float(np.mean([s.decay for s in fs])),
        n_objects=len(objects),
    )
