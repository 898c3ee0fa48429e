"""curation.py and manifest.mark_rows: the table steps on the driver (score cut, dedup, rebalance)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from manifest_rows import manifest_row

from videonet_curate import manifest as mf
from videonet_curate.curation import (
    CurationOptions,
    apply_curation,
    apply_score_cut,
    reopen_curated,
)
from videonet_curate.embeddings import embeddings_table
from videonet_curate.pipeline import summarize_timings
from videonet_curate.targets import uniform_target


def test_mark_rows_sets_status_reason_detail_and_columns_on_masked_rows_only() -> None:
    table = mf.rows_to_table([manifest_row(i) for i in range(3)])
    out = mf.mark_rows(
        table,
        np.array([False, True, False]),
        mf.STATUS_DUPLICATE,
        detail=pa.array([None, "like c0", None]),
        dup_of="c0",
    )
    rows = out.to_pylist()
    assert [r["status"] for r in rows] == ["kept", "duplicate", "kept"]
    assert rows[1]["reason"] == "duplicate" and rows[1]["detail"] == "like c0" and rows[1]["dup_of"] == "c0"
    assert rows[0] == table.to_pylist()[0] and rows[2] == table.to_pylist()[2]
    assert out.schema == table.schema
    assert mf.mark_rows(table, np.zeros(3, bool), mf.STATUS_LOW_SCORE) is table


def test_score_cut_marks_kept_rows_below_min_score() -> None:
    rows = [
        manifest_row(0, score=0.05, label_name="tench"),
        manifest_row(1, score=0.5),
        manifest_row(2, status="failed"),
        manifest_row(3, score=0.1),  # at the threshold: kept
    ]
    out = apply_score_cut(mf.rows_to_table(rows), 0.1).to_pylist()
    assert [r["status"] for r in out] == ["low_score", "kept", "failed", "kept"]
    assert out[0]["reason"] == "low_score"
    assert out[0]["detail"] == "best class 'tench' scored 0.050 < --min-score 0.1"
    assert out[2]["reason"] == "decode_error"


def test_a_recut_starts_from_the_labelled_state() -> None:
    """Rows an earlier cut marked come back: a lower --min-score keeps what a higher one dropped."""
    note = "shorter than its segment"
    table = mf.rows_to_table([manifest_row(0, score=0.2, detail=note), manifest_row(1, score=0.6)])
    strict = apply_score_cut(table, 0.5).to_pylist()
    assert [r["status"] for r in strict] == ["low_score", "kept"]
    assert strict[0]["detail"] == f"best class 'goldfish' scored 0.200 < --min-score 0.5; {note}"
    loose = apply_score_cut(reopen_curated(mf.rows_to_table(strict)), 0.1).to_pylist()
    assert [r["status"] for r in loose] == ["kept", "kept"]
    assert loose[0]["reason"] is None and loose[0]["detail"] == note  # the note survives the round trip


def test_apply_curation_cuts_then_dedups_then_rebalances() -> None:
    # c0 and c1 are near-duplicates (c1 scores higher); c2 scores too low; c3 is a carried-over duplicate
    rows = [
        manifest_row(0, score=0.4),
        manifest_row(1, score=0.9),
        manifest_row(2, score=0.05),
        manifest_row(3, score=0.7, label=2, status="duplicate", dup_of="c9"),
        manifest_row(4, status="failed"),
    ]
    e = np.eye(4, dtype=np.float32)
    embeddings = embeddings_table(["c0", "c1", "c2", "c3"], np.stack([e[0], e[0] + 0.1 * e[1], e[2], e[3]]))
    options = CurationOptions(min_score=0.1, dup_threshold=0.95, target="uniform", per_class_max=1)
    out, stats = apply_curation(mf.rows_to_table(rows), embeddings, options, uniform_target())
    status = {r["clip_id"]: r["status"] for r in out.to_pylist()}
    assert status == {
        "c0": "duplicate",
        "c1": "kept",
        "c2": "low_score",
        "c3": "kept",
        "c4": "failed",
    }
    assert stats["low_score"] == 1 and stats["duplicates"] == 1 and stats["min_score"] == 0.1
    out, _ = apply_curation(
        mf.rows_to_table(rows),
        embeddings,
        CurationOptions(min_score=0.95),
        uniform_target(),
    )
    assert mf.kept_rows(out).num_rows == 0


def test_summarize_timings_adds_up_every_worker() -> None:
    """Each shard reports its own seconds; with several workers the stage total is their sum."""
    shards = [
        {"shard": "s0", "timings": {"sample": 1.0, "embed": 2.0}},  # worker A
        {"shard": "s1", "timings": {"sample": 0.5, "embed": 3.0}},  # worker B
        {"shard": "s2", "timings": {"sample": 0.25, "embed": 1.0}},  # worker A again
    ]
    assert summarize_timings(shards) == pytest.approx({"sample": 1.75, "embed": 6.0})
    assert summarize_timings([]) == {}
