"""The summary of a manifest: one schema for `build`'s ``summary.json`` and `report`'s.

Keys: ``rows``, ``status_counts`` (every status), ``reason_counts``, ``sources``, ``kept``, ``kept_classes``
(how many classes have a kept clip), ``top_kept_classes`` (name: clips, the most frequent),
``kept_hours``, ``kept_score_quantiles``, ``tv_to_target``, ``kl_to_target``, ``kl_epsilon``, ``model_id``,
``prototype_set``, ``schema_version``, ``tool_version`` and, when embeddings were searched,
``nearest_similarity_quantiles``. `build` adds ``shards``, ``stage_seconds``, ``source``, ``curation``
and ``seconds``; both add ``target`` and ``dup_threshold``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from videonet_curate import rebalance
from videonet_curate.manifest import STATUS_KEPT, STATUSES
from videonet_curate.storage import json_safe  # noqa: F401 - its home is the JSON writer; re-exported

TOP_CLASSES = 10


def kept_class_counts(table: pa.Table, num_classes: int) -> np.ndarray:
    """Kept clips per class index, ``(num_classes,)``."""
    kept = table.filter(pc.equal(table.column("status"), STATUS_KEPT))
    labels = kept.column("label").drop_null().to_numpy(zero_copy_only=False).astype(np.int64)
    if not len(labels):
        return np.zeros(num_classes, np.int64)
    return np.bincount(labels, minlength=num_classes)[:num_classes]


def summarize(
    table: pa.Table,
    target: np.ndarray,
    metadata: dict[str, Any] | None = None,
    nearest_sim: np.ndarray | None = None,
) -> dict[str, Any]:
    """Counts per status and reason, class coverage, score quantiles and distances to the target.

    The one summary schema: `build` writes it (with its run's sections added) and `report` writes it.
    """
    status = table.column("status").to_numpy(zero_copy_only=False)
    kept = table.filter(pc.equal(table.column("status"), STATUS_KEPT))
    counts = kept_class_counts(table, len(target))
    names = pc.value_counts(kept.column("label_name").drop_null()).to_pylist()
    top = sorted(((n["values"], int(n["counts"])) for n in names), key=lambda kv: (-kv[1], kv[0]))
    scores = kept.column("score").drop_null().to_numpy(zero_copy_only=False)
    reasons = pc.value_counts(table.column("reason").drop_null()).to_pylist()
    summary: dict[str, Any] = {
        "rows": table.num_rows,
        "status_counts": {s: int((status == s).sum()) for s in STATUSES},
        "reason_counts": {r["values"]: int(r["counts"]) for r in reasons},
        "sources": sorted(set(table.column("source").to_pylist())),
        "kept": int(kept.num_rows),
        "kept_classes": int((counts > 0).sum()),
        "top_kept_classes": dict(top[:TOP_CLASSES]),
        "kept_hours": float(pc.sum(pc.subtract(kept.column("end_s"), kept.column("start_s"))).as_py() or 0.0)
        / 3600,
        "kept_score_quantiles": quantiles(scores),
        "tv_to_target": rebalance.total_variation(counts, target),
        "kl_to_target": rebalance.kl_divergence(counts, target),
        "kl_epsilon": rebalance.KL_EPSILON,
        "model_id": (metadata or {}).get("model_id", ""),
        "prototype_set": (metadata or {}).get("prototype_set", ""),
        "schema_version": (metadata or {}).get("schema_version", ""),
        "tool_version": (metadata or {}).get("tool_version", ""),
    }
    if nearest_sim is not None and np.isfinite(nearest_sim).any():
        summary["nearest_similarity_quantiles"] = quantiles(nearest_sim[np.isfinite(nearest_sim)])
    return summary


def quantiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    qs = np.quantile(np.asarray(values, dtype=np.float64), [0.0, 0.1, 0.5, 0.9, 1.0])
    return dict(zip(("min", "p10", "median", "p90", "max"), map(float, qs), strict=True))
