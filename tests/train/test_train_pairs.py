import shutil

import numpy as np
import pytest
import torch

from videonet_curate.manifest import empty_row, rows_to_table, write_manifest
from vito_train.data.frame_pairs import FramePairDataset, collate_pair_batch
from vito_train.data.pairs import TrainingDataError, clip_for_index, load_clips, sample_pair_times
from vito_train.data.video_source import VideoFrameSource


def test_pair_times_stay_in_the_clip_and_within_the_gap():
    rng = np.random.default_rng(0)
    for _ in range(200):
        t1, t2 = sample_pair_times(rng.random(), rng.random(), 2.0, 5.0, 1.5)
        assert 2.0 <= t1 <= t2 <= 5.0 and t2 - t1 <= 1.5
    assert sample_pair_times(0.7, 0.3, 2.0, 5.0, 0.0) == (2.9, 2.9)  # image-SSL ablation: one frame
    assert sample_pair_times(1.0, 0.0, 0.0, 0.5, 2.0) == (0.0, 0.5)  # gap capped by the clip


def test_every_clip_once_per_epoch_and_reproducible():
    epoch0 = [clip_for_index(3, g, 7) for g in range(7)]
    assert sorted(epoch0) == list(range(7))
    assert [clip_for_index(3, g, 7) for g in range(7, 14)] != epoch0
    assert epoch0 == [clip_for_index(3, g, 7) for g in range(7)]


def test_samples_depend_only_on_seed_and_index(sample_manifest):
    clips = load_clips(sample_manifest)
    assert len(clips) == 10
    kw = dict(seed=1, image_size=48, min_scale=0.3)
    source = VideoFrameSource(clips, max_gap_s=1.0, decode_short_side=64, fps=8.0)
    a, b = FramePairDataset(source, **kw), FramePairDataset(source, **kw)
    torch.manual_seed(123)  # the global generator must neither matter nor be consumed
    before = torch.get_rng_state()
    first = a[5]
    assert torch.equal(torch.get_rng_state(), before)
    b[4]
    again = b[5]
    assert torch.equal(first["view_1"], again["view_1"]) and torch.equal(first["view_2"], again["view_2"])
    assert first["view_1"].shape == (3, 48, 48) and first["view_1"].dtype == torch.uint8
    assert not torch.equal(a[6]["view_1"], first["view_1"])


def test_undecodable_clip_is_skipped_and_counted(sample_videos, tmp_path):
    (tmp_path / "v").mkdir()
    shutil.copy(sample_videos / "bikes.mp4", tmp_path / "v" / "bikes.mp4")
    (tmp_path / "v" / "broken.mp4").write_bytes(b"<html>not a video</html>" * 10)
    rows = [
        empty_row(
            clip_id=n,
            source="local",
            source_id=n,
            path=f"v/{n}.mp4",
            start_s=0.0,
            end_s=5.0,
            status="kept",
            label=i,
            label_name=n,
            score=1.0,
        )
        for i, n in enumerate(["bikes", "broken"])
    ]
    manifest = write_manifest(rows_to_table(rows), tmp_path / "manifest.parquet")
    ds = FramePairDataset(
        VideoFrameSource(load_clips(manifest), max_gap_s=1.0, decode_short_side=48, fps=8.0),
        seed=0,
        image_size=32,
        min_scale=0.3,
        retries=3,
    )
    batch = collate_pair_batch([ds[g] for g in range(8)])
    assert "broken" in batch["failed"]
    assert batch["view_1"] is not None and batch["view_1"].shape[0] + batch["dropped"] == 8


def test_bad_manifests_raise_typed_errors(tmp_path, sample_manifest):
    with pytest.raises(TrainingDataError, match="does not exist"):
        load_clips(tmp_path / "nope.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(TrainingDataError, match="not valid"):
        load_clips(tmp_path / "junk.parquet")
    rows = [
        empty_row(
            clip_id="a",
            source="local",
            source_id="a",
            path="a.mp4",
            start_s=0.0,
            end_s=1.0,
            status="low_score",
            reason="low_score",
            label=1,
            label_name="x",
            score=0.1,
        )
    ]
    with pytest.raises(TrainingDataError, match="no rows with status 'kept'"):
        load_clips(write_manifest(rows_to_table(rows), tmp_path / "none-kept" / "manifest.parquet"))
    rows = [
        empty_row(
            clip_id="a",
            source="local",
            source_id="a",
            path="gone.mp4",
            start_s=0.0,
            end_s=1.0,
            status="kept",
            label=1,
            label_name="x",
            score=0.9,
        )
    ]
    with pytest.raises(TrainingDataError, match="missing files"):
        load_clips(write_manifest(rows_to_table(rows), tmp_path / "missing" / "manifest.parquet"))


def test_published_manifest_that_fails_verification_is_refused(tmp_path, sample_videos):
    shutil.copy(sample_videos / "bikes.mp4", tmp_path / "bikes.mp4")
    rows = [
        empty_row(
            clip_id="bikes",
            source="local",
            source_id="b",
            path="bikes.mp4",
            start_s=0.0,
            end_s=5.0,
            status="kept",
            label=1,
            label_name="x",
            score=0.9,
        )
    ]
    write_manifest(rows_to_table(rows), tmp_path / "manifest.parquet")
    (tmp_path / "checksums.sha256").write_text(f"{'0' * 64}  manifest.parquet\n")  # wrong digest
    pytest.importorskip("videonet_curate.publish")
    with pytest.raises(TrainingDataError, match="failed verification"):
        load_clips(tmp_path)
