"""labeling.py without Ray: one shard of real sample clips through the bundled model, and its outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from videonet_curate import manifest as mf
from videonet_curate.labeling import LabelingConfig, ShardLabeler
from videonet_curate.sources.local import discover_local
from videonet_curate.shards import is_done, plan_shards, shard_paths


@pytest.fixture(scope="module")
def labelled_shard(tmp_path_factory, sample_videos: Path, one_torch_thread):
    root = tmp_path_factory.mktemp("labeling")
    input_dir = root / "in"
    input_dir.mkdir()
    shutil.copy(sample_videos / "carphone_pristine.mp4", input_dir / "carphone.mp4")  # 4 s: one clip
    shutil.copy(sample_videos / "realshort.mp4", input_dir / "realshort.mp4")  # 1.2 s: one clip
    candidates, failures = discover_local(input_dir, 10.0, use_ray=False)
    assert failures == [] and len(candidates) == 2
    # one candidate whose file vanished after discovery: a failed row, not a failed shard
    gone = {
        **candidates[0],
        "clip_id": "gone-0",
        "source_id": "gone.mp4",
        "locator": str(input_dir / "gone.mp4"),
    }
    (shard,) = plan_shards([*candidates, gone], 8, "fp")
    out = root / "out"
    labeler = ShardLabeler(LabelingConfig(frames_per_clip=2, batch_frames=2, threads=1), out)
    first = labeler.run_shard(shard)
    return out, shard, labeler, first


def test_one_shard_is_labelled_and_written_with_its_done_marker(labelled_shard) -> None:
    out, shard, _, summary = labelled_shard
    assert is_done(out, shard)
    paths = shard_paths(out, shard)
    rows = {r["clip_id"]: r for r in pq.read_table(paths.rows).to_pylist()}
    assert summary["clips"] == 3 and summary["statuses"] == {"kept": 2, "failed": 1}
    gone = rows.pop("gone-0")
    assert gone["status"] == "failed" and gone["reason"] == "decode_error" and "gone.mp4" in gone["detail"]
    for row in rows.values():
        # the actor only labels: every scored clip is kept here; the score cut is a table step
        assert row["status"] == mf.STATUS_KEPT and row["reason"] is None
        assert 0 <= row["label"] < 1000 and 0.0 < row["score"] <= 1.0 and row["frames_sampled"] == 2
        assert row["label_name"] and len(row["top5_labels"]) == 5
    embeddings = pq.read_table(paths.embeddings)
    assert sorted(embeddings.column("clip_id").to_pylist()) == sorted(rows)
    marker = json.loads(paths.done.read_text())
    assert marker["rows"] == 3 and marker["model_id"]


def test_shard_timings_are_the_shards_own(labelled_shard) -> None:
    out, shard, labeler, first = labelled_shard
    cumulative = dict(labeler.timings)
    second = labeler.run_shard(shard)  # the same shard again, on the same (warm) labeler
    assert first["timings"]["embed"] > 0 and second["timings"]["embed"] > 0
    for stage, seconds in labeler.timings.items():
        assert seconds == pytest.approx(cumulative[stage] + second["timings"][stage])
