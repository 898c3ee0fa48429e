"""The table steps of a build, on the driver: score cut -> de-duplication -> rebalancing.

They are functions of the merged shard tables (every labelled clip ``kept`` with its score and
embedding), so changing ``--min-score``, ``--dup-threshold`` or the target re-cuts a finished build in
seconds, without the model. Each step marks rows with :func:`videonet_curate.manifest.mark_rows`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from videonet_curate import manifest as mf

log = logging.getLogger(__name__)


@dataclass
class CurationOptions:
    """The table steps after labelling; None disables a step."""

    min_score: float = 0.1  # clips whose best class scores lower are marked low_score
    dup_threshold: float | None = 0.95  # cosine similarity of clip embeddings; None: no de-duplication
    target: str = "imagenet"  # "imagenet", "uniform" or a CSV path; balance is always measured against it
    budget: int | None = None
    per_class_max: int | None = None


def reopen_curated(rows: pa.Table) -> pa.Table:
    """Rows an earlier curation marked (low_score, duplicate, rebalanced_out) become ``kept`` again, so
    every step re-applies from the labelled state (rows carried over from an earlier manifest). A
    low-score row gets back the note its detail carried after the cut's own text."""
    marked = pc.is_in(rows.column("status"), value_set=pa.array(mf.CURATION_STATUSES))
    low = pc.fill_null(pc.equal(rows.column("status"), mf.STATUS_LOW_SCORE), False)
    notes = [
        detail.split("; ", 1)[1] if is_low and detail and "; " in detail else None
        for is_low, detail in zip(low.to_pylist(), rows.column("detail").to_pylist(), strict=True)
    ]
    return mf.mark_rows(
        rows, marked, mf.STATUS_KEPT, reason=None, detail=pa.array(notes, pa.string()), dup_of=None
    )


def apply_score_cut(rows: pa.Table, min_score: float) -> pa.Table:
    """Mark kept rows whose best class scored below ``min_score`` as ``low_score`` (a note already in
    ``detail`` follows the cut's text)."""
    kept = pc.equal(rows.column("status"), mf.STATUS_KEPT)
    low = pc.fill_null(pc.and_(kept, pc.less(rows.column("score"), min_score)), False)
    index = np.nonzero(low.to_numpy(zero_copy_only=False))[0]
    if not len(index):
        return rows
    names = rows.column("label_name").take(index).to_pylist()
    scores = rows.column("score").take(index).to_pylist()
    notes = rows.column("detail").take(index).to_pylist()
    details: list[str | None] = [None] * rows.num_rows
    for i, name, score, note in zip(index, names, scores, notes, strict=True):
        cut = f"best class {name!r} scored {score:.3f} < --min-score {min_score}"
        details[i] = f"{cut}; {note}" if note else cut
    return mf.mark_rows(rows, low, mf.STATUS_LOW_SCORE, detail=pa.array(details, pa.string()))


def count_status(rows: pa.Table, status: str) -> int:
    return int(pc.sum(pc.equal(rows.column("status"), status)).as_py() or 0)


def apply_curation(
    rows: pa.Table, embeddings: pa.Table, options: CurationOptions, target: np.ndarray
) -> tuple[pa.Table, dict[str, Any]]:
    """Cut low scores, de-duplicate the kept rows, then rebalance them toward ``target`` (dropping rows
    only when a budget or per-class maximum is given); the distance to the target is reported either way."""
    from videonet_curate.dedup import apply_dedup
    from videonet_curate.rebalance import apply_rebalance

    rows = apply_score_cut(reopen_curated(rows), options.min_score)
    stats: dict[str, Any] = {
        "target": options.target,
        "min_score": options.min_score,
        "low_score": count_status(rows, mf.STATUS_LOW_SCORE),
    }
    if options.dup_threshold is not None:
        rows = apply_dedup(rows, embeddings, options.dup_threshold)
        stats["dup_threshold"] = options.dup_threshold
        stats["duplicates"] = count_status(rows, mf.STATUS_DUPLICATE)
    rows, result = apply_rebalance(rows, target, budget=options.budget, per_class_max=options.per_class_max)
    stats["balance"] = result.summary()
    return rows, stats
