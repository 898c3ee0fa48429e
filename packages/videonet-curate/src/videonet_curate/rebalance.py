"""Rebalancing the kept clips toward a target class histogram (water-filling).

With per-class availability n_i and a budget B, classic water-filling finds the cap x with
sum_i min(x, n_i) = B: every class keeps up to x clips, small classes keep all of theirs. Toward a target
histogram t_i (weights summing to 1) the cap becomes proportional to t_i: find the largest scale s with
sum_i min(floor(s * t_i), n_i) <= B, then hand out the B - sum remainder one clip at a time to the classes
that are not yet exhausted, largest fractional part of s * t_i first (the largest-remainder method), then
the largest target weight. Within a class the highest-scoring clips are kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from videonet_curate.manifest import STATUS_KEPT, STATUS_REBALANCED_OUT, mark_rows

log = logging.getLogger(__name__)

# Added to every bin of both histograms before KL, so empty kept classes give a finite divergence.
KL_EPSILON = 1e-6


class RebalanceError(ValueError):
    """Labels, budget or target that cannot be rebalanced."""


@dataclass(frozen=True)
class RebalanceResult:
    """The keep mask over the input rows, per-class quota, and distances to the target before/after."""

    keep: np.ndarray
    quota: np.ndarray
    counts_before: np.ndarray
    counts_after: np.ndarray
    target: np.ndarray
    tv_before: float
    tv_after: float
    kl_before: float
    kl_after: float

    def summary(self) -> dict[str, float | int]:
        return {
            "rows_before": int(self.counts_before.sum()),
            "rows_after": int(self.counts_after.sum()),
            "classes_present_before": int((self.counts_before > 0).sum()),
            "classes_present_after": int((self.counts_after > 0).sum()),
            "tv_before": self.tv_before,
            "tv_after": self.tv_after,
            "kl_before": self.kl_before,
            "kl_after": self.kl_after,
        }


def total_variation(counts: np.ndarray, target: np.ndarray) -> float:
    """TV(p, q) = 1/2 * sum_i |p_i - q_i| with p, q the normalised histograms (NaN for an empty p)."""
    if np.sum(counts) <= 0:
        return float("nan")
    p, q = _normalise(counts), _normalise(target)
    return float(0.5 * np.abs(p - q).sum())


def kl_divergence(counts: np.ndarray, target: np.ndarray, epsilon: float = KL_EPSILON) -> float:
    """KL(p || q) = sum_i p_i log(p_i / q_i) in nats, with p the kept histogram and q the target.

    Both are smoothed as p_i <- (p_i + eps) / (1 + K eps) so that classes empty in either are finite.
    NaN when ``counts`` is empty (no distribution to compare).
    """
    if np.sum(counts) <= 0:
        return float("nan")
    k = len(counts)
    p = (_normalise(counts) + epsilon) / (1 + k * epsilon)
    q = (_normalise(target) + epsilon) / (1 + k * epsilon)
    return float(np.sum(p * np.log(p / q)))


def _normalise(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    total = values.sum()
    return values / total if total > 0 else np.zeros_like(values)


def water_fill(available: np.ndarray, target: np.ndarray, budget: int) -> np.ndarray:
    """Per-class quota q_i <= n_i with sum q = min(B, sum over t_i > 0 of n_i), shaped like ``target``.

    The scale s maximises sum_i min(floor(s t_i), n_i) <= B (bisection over the breakpoints); the
    remainder goes by largest fractional part of s t_i, then largest t_i, then lowest class index.
    """
    n = np.asarray(available, dtype=np.int64)
    t = np.asarray(target, dtype=np.float64)
    if n.shape != t.shape:
        raise RebalanceError(f"availability has {n.shape} classes but the target {t.shape}")
    if budget < 0:
        raise RebalanceError(f"budget must be >= 0, got {budget}")
    if (t < 0).any() or not np.isfinite(t).all():
        raise RebalanceError("target weights must be finite and >= 0")
    eligible = (t > 0) & (n > 0)
    reachable = int(n[eligible].sum())
    if budget >= reachable:
        return np.where(eligible, n, 0)
    t = np.where(eligible, t, 0.0)

    def filled(scale: float) -> np.ndarray:
        return np.minimum(np.floor(scale * t), n).astype(np.int64)

    # s = budget / min(t>0) already fills every class to its cap or beyond the budget.
    low, high = 0.0, budget / t[eligible].min() + 1.0
    for _ in range(200):  # plain bisection; 200 halvings exhaust float64 precision
        mid = 0.5 * (low + high)
        if filled(mid).sum() <= budget:
            low = mid
        else:
            high = mid
        if high - low <= 1e-12 * high:
            break
    quota = filled(low)
    remainder = budget - int(quota.sum())
    fraction = low * t - np.floor(low * t)
    while remainder > 0:
        open_classes = np.nonzero(quota < np.where(eligible, n, 0))[0]
        order = np.lexsort((open_classes, -t[open_classes], -fraction[open_classes]))
        chosen = open_classes[order[:remainder]]
        quota[chosen] += 1
        remainder -= len(chosen)
    return quota


def per_class_cap(target: np.ndarray, per_class_max: int) -> np.ndarray:
    """Caps proportional to the target with the largest weight's class capped at ``per_class_max``."""
    t = np.asarray(target, dtype=np.float64)
    if per_class_max < 0:
        raise RebalanceError(f"--per-class-max must be >= 0, got {per_class_max}")
    return (
        np.floor(per_class_max * t / t.max() + 1e-9).astype(np.int64)
        if t.max() > 0
        else np.zeros_like(t, np.int64)
    )


def select_top_per_class(labels: np.ndarray, scores: np.ndarray, quota: np.ndarray) -> np.ndarray:
    """Keep mask: the ``quota[c]`` highest-scoring rows of each class c (NaN scores last, ties by row).

    Scores are compared at float32 precision (the manifest's). One stable sort on a 64-bit key
    (label, descending score) replaces a two-key lexsort: about twice as fast on 10 million rows.
    """
    labels = np.asarray(labels, dtype=np.int64)
    order = np.argsort(_class_then_score_key(labels, scores), kind="stable")
    sorted_labels = labels[order]
    class_start = np.searchsorted(sorted_labels, np.arange(len(quota)))
    rank_in_class = np.arange(len(labels)) - class_start[sorted_labels]
    keep = np.zeros(len(labels), bool)
    keep[order] = rank_in_class < quota[sorted_labels]
    return keep


def _class_then_score_key(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """uint64 sorting ascending by label, then by score descending (IEEE bits made order-preserving)."""
    score32 = np.asarray(scores, dtype=np.float32)
    score32 = np.where(np.isnan(score32), np.float32(-np.inf), score32)
    bits = score32.view(np.uint32)
    ascending = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))
    return (labels.astype(np.uint64) << np.uint64(32)) | (~ascending).astype(np.uint64)


def rebalance(
    labels: np.ndarray,
    scores: np.ndarray,
    target: np.ndarray,
    *,
    budget: int | None = None,
    per_class_max: int | None = None,
) -> RebalanceResult:
    """Choose which rows to keep so the class histogram approaches ``target`` (weights over classes).

    ``labels`` are class indices in ``0..len(target)-1``. With ``per_class_max`` each class is capped at
    per_class_max * t_i / max(t); with ``budget`` the total is water-filled to at most ``budget``; with
    both, the budget is filled under the caps. With neither, only classes of target weight 0 are dropped.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise RebalanceError(f"labels {labels.shape} and scores {scores.shape} must be 1-D of equal length")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(target)):
        raise RebalanceError(
            f"labels span {labels.min()}..{labels.max()} but the target has {len(target)} classes"
        )
    counts = np.bincount(labels.astype(np.int64), minlength=len(target))
    available = counts if per_class_max is None else np.minimum(counts, per_class_cap(target, per_class_max))
    total = int(available[target > 0].sum())
    quota = water_fill(available, target, total if budget is None else budget)
    keep = select_top_per_class(labels, scores, quota)
    after = np.bincount(labels[keep].astype(np.int64), minlength=len(target))
    return RebalanceResult(
        keep=keep,
        quota=quota,
        counts_before=counts,
        counts_after=after,
        target=target / target.sum() if target.sum() > 0 else target,
        tv_before=total_variation(counts, target),
        tv_after=total_variation(after, target),
        kl_before=kl_divergence(counts, target),
        kl_after=kl_divergence(after, target),
    )


def apply_rebalance(
    table: pa.Table,
    target: np.ndarray,
    *,
    budget: int | None = None,
    per_class_max: int | None = None,
) -> tuple[pa.Table, RebalanceResult]:
    """Rebalance the ``kept`` rows of a manifest table; dropped rows become ``rebalanced_out``."""
    status = table.column("status")
    kept_mask = pc.fill_null(pc.equal(status, STATUS_KEPT), False).to_numpy(zero_copy_only=False)
    rows = np.nonzero(kept_mask)[0]
    labels_col = table.column("label").take(pa.array(rows))
    if labels_col.null_count:
        raise RebalanceError(
            f"{labels_col.null_count} kept rows have no label; label them before rebalancing"
        )
    labels = labels_col.to_numpy(zero_copy_only=False).astype(np.int64)
    scores = pc.fill_null(table.column("score").take(pa.array(rows)), float("nan"))
    result = rebalance(
        labels, scores.to_numpy(zero_copy_only=False), target, budget=budget, per_class_max=per_class_max
    )
    dropped = np.zeros(table.num_rows, bool)
    dropped[rows[~result.keep]] = True
    log.info(
        "rebalance: kept %d of %d (TV %.4f -> %.4f)",
        int(result.keep.sum()),
        len(rows),
        result.tv_before,
        result.tv_after,
    )
    # short: it is repeated on every dropped row (millions at scale)
    detail = f"over its class quota (budget {budget}, per-class max {per_class_max})"
    return mark_rows(table, dropped, STATUS_REBALANCED_OUT, detail=detail), result
