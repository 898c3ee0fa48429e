"""Frame cache: prepare (parallel, resumable, per-clip failures), read back, pairs, corrupt shards."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import link_sample_manifest, write_sample_manifest
from torchvision.io import decode_jpeg

from vito_train.data.cache import INDEX_FILE, CacheError, FrameCache, shard_paths
from vito_train.data.cache_source import CacheFrameSource
from vito_train.data.frame_pairs import FramePairDataset, collate_pair_batch
from vito_train.data.pairs import clip_for_index, load_clips
from vito_train.data.prepare import frame_grid, prepare_cache
from vito_train.data.video_source import VideoFrameSource

CLIPS = ["carphone_pristine.mp4", "dog.mp4", "realshort.mp4"]
FPS, SHORT = 4.0, 64


@pytest.fixture(scope="module")
def small_manifest(sample_videos, tmp_path_factory) -> Path:
    return link_sample_manifest(sample_videos, tmp_path_factory.mktemp("cache_manifest"), CLIPS)


@pytest.fixture(scope="module")
def cache_dir(small_manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "frames"
    summary = prepare_cache(small_manifest, out, fps=FPS, short_side=SHORT, clips_per_shard=1, workers=2)
    assert summary.complete and summary.shards_written == 3 and not summary.clip_failures
    return out


def test_frame_grid_spans_the_clip():
    assert frame_grid(1.0, 2.0, 4) == [1.0, 1.25, 1.5, 1.75, 2.0]
    assert frame_grid(0.0, 0.1, 4) == [0.0]


def test_prepare_writes_tar_shards_whose_index_points_at_the_jpegs(cache_dir, small_manifest):
    cache = FrameCache(cache_dir)
    clips = {c.clip_id: c for c in cache.clips}
    manifest_clips = load_clips(small_manifest)
    assert [c.clip_id for c in cache.clips] == [c.clip_id for c in manifest_clips]  # same order as video mode
    for clip in manifest_clips:
        cached = clips[clip.clip_id]
        np.testing.assert_allclose(cached.times, frame_grid(clip.start_s, clip.end_s, FPS))
        tar_path = shard_paths(cache_dir, cached.shard)[0]
        with tarfile.open(tar_path) as tar:  # a plain tar: standard tools read it
            members = tar.getmembers()
            assert [m.name for m in members][0] == f"{clip.clip_id}.000000.jpg"
            assert members[-1].name == f"{clip.clip_id}.json"  # a WebDataset sample: frames, then metadata
            assert tar.extractfile(members[-2]).read() == cache.read_jpeg(cached, len(cached.times) - 1)
        image = decode_jpeg(torch.frombuffer(bytearray(cache.read_jpeg(cached, 0)), dtype=torch.uint8))
        assert min(image.shape[1:]) == SHORT


def test_prepare_resumes_only_missing_shards_and_refuses_other_settings(cache_dir, small_manifest, tmp_path):
    # a copy, so the module's cache stays whole for the other tests
    copy = tmp_path / "frames"
    copy.mkdir()
    for path in cache_dir.rglob("*"):
        if path.is_file():
            (copy / path.relative_to(cache_dir)).parent.mkdir(parents=True, exist_ok=True)
            (copy / path.relative_to(cache_dir)).write_bytes(path.read_bytes())
    for path in shard_paths(copy, 1):
        path.unlink()
    (copy / INDEX_FILE).unlink()
    with pytest.raises(CacheError, match="incomplete"):
        FrameCache(copy)
    summary = prepare_cache(small_manifest, copy, fps=FPS, short_side=SHORT, clips_per_shard=1, workers=1)
    assert (summary.shards_done_before, summary.shards_written, summary.complete) == (2, 1, True)
    assert pq.read_table(copy / INDEX_FILE).num_rows == pq.read_table(cache_dir / INDEX_FILE).num_rows
    with pytest.raises(CacheError, match="other settings"):
        prepare_cache(small_manifest, copy, fps=FPS * 2, short_side=SHORT, clips_per_shard=1, workers=1)


def test_unreadable_clip_is_recorded_and_the_rest_is_cached(sample_videos, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "realshort.mp4").symlink_to(sample_videos / "realshort.mp4")
    manifest = write_sample_manifest(videos, tmp_path)
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500)  # truncated MP4
    import pyarrow as pa

    from videonet_curate.manifest import empty_row, read_manifest, rows_to_table, write_manifest

    rows = read_manifest(manifest).to_pylist()
    rows.append(
        {
            **empty_row(
                clip_id="broken",
                source="local",
                source_id="broken.mp4",
                path="videos/broken.mp4",
                start_s=0.0,
                end_s=2.0,
                status="kept",
                label=0,
                label_name="x",
                score=1.0,
            )
        }
    )
    write_manifest(rows_to_table(rows), manifest)
    assert isinstance(read_manifest(manifest), pa.Table)
    summary = prepare_cache(manifest, tmp_path / "frames", fps=FPS, short_side=SHORT, workers=1)
    assert summary.complete
    assert [f["clip_id"] for f in summary.clip_failures] == ["broken"]
    assert [c.clip_id for c in FrameCache(tmp_path / "frames").clips] == ["realshort"]
    assert (
        json.loads((tmp_path / "frames" / "summary.json").read_text())["clip_failures"][0]["clip_id"]
        == "broken"
    )


def test_cached_pairs_are_deterministic_and_within_the_gap(cache_dir):
    cache = FrameCache(cache_dir)
    dataset = FramePairDataset(CacheFrameSource(cache, max_gap_s=0.5), seed=3, image_size=32, min_scale=0.3)
    a, b = dataset[17], dataset[17]
    assert torch.equal(a["view_1"], b["view_1"]) and torch.equal(a["view_2"], b["view_2"])
    assert a["view_1"].shape == (3, 32, 32) and a["view_1"].dtype == torch.uint8
    rng_gaps = []
    source = dataset.source
    for index in range(200):
        item = clip_for_index(3, index, len(cache.clips))
        from vito_train.data.pairs import sample_generator

        i1, i2 = source.pick_pair(item, sample_generator(3, index))  # the dataset's own first draw
        rng_gaps.append(abs(cache.clips[item].times[i2] - cache.clips[item].times[i1]))
    assert max(rng_gaps) <= 0.5 + 1e-9 and min(rng_gaps) == 0.0 and len(set(rng_gaps)) > 1


def test_video_mode_and_cache_mode_read_the_same_frame_for_a_clip_and_time(cache_dir, small_manifest):
    """The one frame-picking rule: for any time, the frame video mode decodes is the cached frame."""
    cached = CacheFrameSource(FrameCache(cache_dir), max_gap_s=1.0)
    clips = load_clips(small_manifest)
    video = VideoFrameSource(clips, max_gap_s=1.0, decode_short_side=SHORT, fps=FPS)
    item = [c.clip_id for c in clips].index("dog")  # moving camera: neighbouring frames differ
    assert cached.item_id(item) == "dog"
    clip = clips[item]
    grid = frame_grid(clip.start_s, clip.end_s, FPS)
    times = [
        clip.start_s,
        clip.start_s + 0.6 / FPS,
        clip.start_s + 1.4 / FPS,
        (clip.start_s + clip.end_s) / 2,
    ]
    times += [clip.end_s - 0.2 / FPS, clip.end_s + 1.0]  # past the end: the last grid frame
    for t in times:
        index = cached.frame_index(item, t)
        assert video.frame_time(item, t) == pytest.approx(grid[index])
        from_cache = cached.read_pair(item, (index, index))[0].astype(np.float32)
        # the video frames at this grid time and at its neighbours: the cached JPEG matches its own
        neighbours = sorted({max(index - 1, 0), index, min(index + 1, len(grid) - 1)})
        frames = video.read_pair(item, (grid[neighbours[0]], grid[neighbours[-1]]))
        candidates = {neighbours[0]: frames[0], neighbours[-1]: frames[1]}
        candidates[index] = video.read_pair(item, (grid[index], grid[index]))[0]
        errors = {i: np.abs(f.astype(np.float32) - from_cache).mean() for i, f in candidates.items()}
        assert min(errors, key=errors.get) == index and errors[index] < 8, (t, errors)


def test_crop_only_samples_carry_photometric_parameters(cache_dir):
    cache = FrameCache(cache_dir)
    dataset = FramePairDataset(
        CacheFrameSource(cache, max_gap_s=1.0), seed=0, image_size=32, min_scale=0.3, photometric=True
    )
    batch = collate_pair_batch([dataset[i] for i in range(6)])
    assert batch["view_1"].shape == (6, 3, 32, 32) and batch["photometric"].shape == (2, 6, 13)
    assert batch["dropped"] == 0 and batch["failed"] == []


def test_corrupt_shard_is_skipped_and_bad_frames_are_counted(cache_dir, tmp_path):
    copy = tmp_path / "frames"
    (copy / "shards").mkdir(parents=True)
    for path in cache_dir.rglob("*"):
        if path.is_file():
            (copy / path.relative_to(cache_dir)).write_bytes(path.read_bytes())
    cache = FrameCache(copy)
    victim = cache.clips[0]
    tar_path = shard_paths(copy, victim.shard)[0]
    # bytes inside the JPEGs overwritten: readable shard, undecodable frames
    data = bytearray(tar_path.read_bytes())
    for offset, length in zip(victim.offsets, victim.lengths, strict=True):
        data[offset : offset + length] = b"\x00" * length
    tar_path.write_bytes(bytes(data))
    dataset = FramePairDataset(
        CacheFrameSource(FrameCache(copy), max_gap_s=1.0), seed=0, image_size=32, min_scale=0.3
    )
    batch = collate_pair_batch([dataset[i] for i in range(12)])
    assert victim.clip_id in batch["failed"] and batch["view_1"].shape[0] >= 10
    # a truncated shard is dropped when the cache is opened; its clips are gone, the others stay
    tar_path.write_bytes(bytes(data[: len(data) // 3]))
    reopened = FrameCache(copy)
    assert victim.shard in reopened.bad_shards
    assert victim.clip_id not in [c.clip_id for c in reopened.clips] and len(reopened.clips) == 2


class SlowFirstRequest:
    """A range client over the real one whose first request arrives last (a slow GET on a real store)."""

    def __init__(self, client, delay_s: float = 0.3) -> None:
        self.client, self.delay_s, self.requests = client, delay_s, []

    def submit(self, requests):
        import threading
        from concurrent.futures import Future

        self.requests = list(requests)
        futures = [Future() for _ in requests]
        blobs = self.client.fetch(requests)
        for future, blob in list(zip(futures, blobs, strict=True))[1:]:
            future.set_result(blob)
        threading.Timer(self.delay_s, futures[0].set_result, [blobs[0]]).start()
        return futures

    def close(self) -> None:
        self.client.close()


def test_a_batch_from_object_storage_is_made_as_its_gets_arrive_with_the_same_samples(cache_dir):
    """Each sample is made as soon as its frames have arrived (those of a slow GET last) and is the same
    sample as one read alone; the batch comes back in index order."""
    import fsspec

    memory = fsspec.filesystem("memory")
    root = f"memory://arrival-{id(cache_dir)}/frames"
    memory.put(str(cache_dir), root.removeprefix("memory://"), recursive=True)
    try:
        remote = FrameCache(root)
        assert remote.remote and len({c.shard for c in remote.clips}) == 3
        slow = SlowFirstRequest(remote._range_client())
        remote._ranges = slow
        source = CacheFrameSource(remote, max_gap_s=1.0)
        made: list[int] = []
        read_pair = source.read_pair
        source.read_pair = lambda item, picks: made.append(item) or read_pair(item, picks)
        dataset = FramePairDataset(source, seed=3, image_size=24, min_scale=0.5)
        indices = list(range(40, 52))
        batch = dataset.__getitems__(indices)
        assert [s["index"] for s in batch] == indices
        local_source = CacheFrameSource(FrameCache(cache_dir), max_gap_s=1.0)
        local = FramePairDataset(local_source, seed=3, image_size=24, min_scale=0.5)
        for sample, index in zip(batch, indices, strict=True):
            alone = local[index]
            assert torch.equal(sample["view_1"], alone["view_1"])
            assert torch.equal(sample["view_2"], alone["view_2"])
        late_shard = int(slow.requests[0][0].rsplit("shard-", 1)[1][:5])
        late = {i for i, clip in enumerate(remote.clips) if clip.shard == late_shard}
        assert late and set(made) - late  # some samples wait on the slow GET, others do not
        first_late = min(at for at, item in enumerate(made) if item in late)
        assert set(made[first_late:]) <= late  # ... and those are made after every other sample
        in_batch_order = [clip_for_index(3, index, len(source)) for index in indices]
        assert in_batch_order[0] in late and made[0] not in late  # not simply in batch order
    finally:
        memory.rm(root.removeprefix("memory://").split("/")[0], recursive=True)
