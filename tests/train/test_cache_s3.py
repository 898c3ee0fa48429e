"""The frame cache on object storage (a real S3 API: moto's server on loopback): `prepare --out s3://`,
WebDataset-readable shards, byte-range reads equal to the local cache's, and a short `run --cache s3://`
that resumes exactly."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import link_sample_manifest
from PIL import Image
from typer.testing import CliRunner

from vito_train.checkpoint import load_checkpoint
from vito_train.cli import app
from vito_train.config import resolve_config
from vito_train.data.cache import FrameCache, sample_key, shard_paths
from vito_train.data.cache_source import CacheFrameSource
from vito_train.data.frame_pairs import FramePairDataset
from vito_train.data.prepare import prepare_cache
from vito_train.data.range_reads import ArrowS3Ranges, FsspecRanges
from vito_train.loop import train
from vito_train.metrics import read_metrics

CLIPS = ["carphone_pristine.mp4", "dog.mp4", "realshort.mp4"]
FPS, SHORT = 2.0, 48
TINY = [
    "image_size=32",
    "batch_size=4",
    "projector_hidden=32",
    "predictor_hidden=32",
    "projector_dim=16",
    "attention_hidden=8",
    "max_steps=4",
    "warmup_steps=1",
    "ckpt_last_every=10",  # last.pt at the stop and the end only: checkpoints cost more than steps here
]


@pytest.fixture(scope="module")
def small_manifest(sample_videos, tmp_path_factory) -> Path:
    return link_sample_manifest(sample_videos, tmp_path_factory.mktemp("s3_cache_manifest"), CLIPS)


@pytest.fixture(scope="module")
def local_cache(small_manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local_cache") / "frames"
    assert prepare_cache(
        small_manifest, out, fps=FPS, short_side=SHORT, clips_per_shard=2, workers=1
    ).complete
    return out


@pytest.fixture(scope="module")
def s3_cache(s3_module_bucket, small_manifest) -> str:
    """`vito-train prepare --out s3://...` through the CLI, as a user runs it."""
    s3_bucket = s3_module_bucket
    uri = s3_bucket.uri("cache")
    args = ["prepare", "--manifest", str(small_manifest), "--out", uri, "--fps", str(FPS)]
    args += ["--short-side", str(SHORT), "--clips-per-shard", "2", "--workers", "1", *s3_bucket.option_args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return uri


def test_prepare_to_s3_writes_the_same_cache_as_local_disk(s3_cache, s3_module_bucket, local_cache) -> None:
    s3_bucket = s3_module_bucket
    local_files = sorted(p.relative_to(local_cache).as_posix() for p in local_cache.rglob("*") if p.is_file())
    assert [k.removeprefix("cache/") for k in s3_bucket.keys("cache/")] == local_files  # no stray keys
    remote = FrameCache(s3_cache, s3_bucket.options())
    local = FrameCache(local_cache)
    assert remote.remote and not local.remote
    assert [c.clip_id for c in remote.clips] == [c.clip_id for c in local.clips]
    wanted = [(clip, f) for clip in remote.clips for f in (0, len(clip.times) - 1)]
    by_range = remote.read_jpegs(wanted)  # byte ranges of the shard objects, coalesced, fetched together
    assert by_range == [local.read_jpeg(clip, f) for clip, f in wanted]
    assert isinstance(remote._range_client(), ArrowS3Ranges)  # pyarrow's C++ client by default ...
    through_s3fs = FrameCache(s3_cache, s3_bucket.options())
    through_s3fs.range_client = "fsspec"  # ... and s3fs reads the same bytes
    assert through_s3fs.read_jpegs(wanted[::-1]) == by_range[::-1]
    assert isinstance(through_s3fs._range_client(), FsspecRanges)
    # the same samples from either, whether fetched one by one or batched with prefetch
    a = FramePairDataset(CacheFrameSource(local, max_gap_s=1.0), seed=1, image_size=24, min_scale=0.5)
    b = FramePairDataset(CacheFrameSource(remote, max_gap_s=1.0), seed=1, image_size=24, min_scale=0.5)
    for x, y in zip([a[i] for i in range(6)], b.__getitems__(list(range(6))), strict=True):
        assert torch.equal(x["view_1"], y["view_1"]) and torch.equal(x["view_2"], y["view_2"])


def test_shards_are_webdataset_samples_one_per_clip(local_cache) -> None:
    import webdataset as wds

    cache = FrameCache(local_cache)
    tars = sorted(str(shard_paths(local_cache, s)[0]) for s in {c.shard for c in cache.clips})
    samples = list(wds.WebDataset(tars, shardshuffle=False))
    assert [s["__key__"] for s in samples] == [sample_key(c.clip_id) for c in cache.clips]
    for sample, clip in zip(samples, cache.clips, strict=True):
        meta = json.loads(sample["json"])
        assert meta["clip_id"] == clip.clip_id and meta["t_s"] == pytest.approx(clip.times.tolist())
        frames = sorted(k for k in sample if k.endswith(".jpg"))
        assert len(frames) == len(clip.times)
        assert sample[frames[1]] == cache.read_jpeg(clip, 1)
        assert min(Image.open(io.BytesIO(sample[frames[0]])).size) == SHORT
    # webdataset's own decoder turns the members into arrays
    decoded = next(iter(wds.WebDataset(tars[:1], shardshuffle=False).decode("rgb8")))
    image = decoded[sorted(k for k in decoded if k.endswith(".jpg"))[0]]
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape[2] == 3


def test_a_shard_gone_from_the_bucket_is_an_oserror_naming_it(s3_cache, s3_module_bucket) -> None:
    bucket = s3_module_bucket
    cache = FrameCache(s3_cache, bucket.options())
    clip = cache.clips[0]
    key = f"cache/shards/shard-{clip.shard:05d}.tar"
    blob = bucket.client().get_object(Bucket=bucket.name, Key=key)["Body"].read()
    bucket.client().delete_object(Bucket=bucket.name, Key=key)
    try:
        for client in ("pyarrow", "fsspec"):
            reader = FrameCache(s3_cache, bucket.options())
            reader.range_client = client
            with pytest.raises(OSError, match=f"shard {clip.shard} of s3://"):
                reader.read_jpegs([(clip, 0), (cache.clips[-1], 0)])
    finally:
        bucket.client().put_object(Bucket=bucket.name, Key=key, Body=blob)


def test_a_frame_two_samples_of_a_batch_pick_is_fetched_once(s3_cache, s3_module_bucket) -> None:
    source = CacheFrameSource(FrameCache(s3_cache, s3_module_bucket.options()), max_gap_s=1.0)
    source.prefetch([(0, (1, 2)), (0, (2, 3))])

    def no_single_reads(*args):
        raise AssertionError("a prefetched frame was read again")

    source.cache.read_jpeg = no_single_reads
    first, second = source.read_pair(0, (1, 2)), source.read_pair(0, (2, 3))
    assert np.array_equal(first[1], second[0])


def test_sample_keys_survive_dots_in_clip_ids() -> None:
    assert sample_key("a.b%c") == "a%2Eb%25c" and "." not in sample_key("x.y.z")


def test_run_from_an_s3_cache_resumes_exactly(s3_cache, s3_module_bucket, tmp_path) -> None:
    s3_bucket = s3_module_bucket
    options = s3_bucket.options()
    whole = resolve_config("cpu-smoke", TINY + ["num_workers=0"])
    train(whole, None, tmp_path / "whole", cache=s3_cache, storage=options)
    split = tmp_path / "split"
    # interrupted after step 2 ...
    first = resolve_config("cpu-smoke", TINY + ["num_workers=0", "stop_after=2"])
    train(first, None, split, cache=s3_cache, storage=options)
    assert load_checkpoint(split / "last.pt")["step"] == 2
    # ... and resumed by the CLI, a loader worker reading byte ranges
    base = ["run", "--cache", s3_cache, "--out", str(split), "--preset", "cpu-smoke", "--no-progress"]
    base += [a for o in TINY + ["num_workers=1"] for a in ("--set", o)] + s3_bucket.option_args
    runner = CliRunner()
    second = runner.invoke(app, base)
    assert second.exit_code == 0, second.output
    a, b = read_metrics(tmp_path / "whole"), read_metrics(split)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["loss"] for r in a] == [r["loss"] for r in b], (a, b)
    wa, wb = (load_checkpoint(p / "last.pt") for p in (tmp_path / "whole", split))
    for key in wa["online"]:
        assert torch.equal(wa["online"][key], wb["online"][key]), key


def test_a_version_1_cache_is_still_read_and_prepare_refuses_to_mix_formats(
    local_cache, small_manifest, tmp_path
):
    import shutil

    import pyarrow.parquet as pq

    from vito_train.data.cache import INDEX_FILE, PLAN_FILE, CacheError

    old = tmp_path / "old"
    shutil.copytree(local_cache, old)
    index = pq.read_table(old / INDEX_FILE)
    meta = dict(index.schema.metadata)
    meta[b"format"] = b"vito-frame-cache/1"
    pq.write_table(index.replace_schema_metadata(meta), old / INDEX_FILE)
    plan = json.loads((old / PLAN_FILE).read_text())
    (old / PLAN_FILE).write_text(json.dumps({**plan, "format": "vito-frame-cache/1"}))
    assert [c.clip_id for c in FrameCache(old).clips] == [c.clip_id for c in FrameCache(local_cache).clips]
    with pytest.raises(CacheError, match="format 'vito-frame-cache/1'.*choose a new --out"):
        prepare_cache(small_manifest, old, fps=FPS, short_side=SHORT, clips_per_shard=2, workers=1)


def test_run_from_a_manifest_on_s3_whose_clips_are_on_s3_trains_as_from_local_disk(
    s3_module_bucket, small_manifest, tmp_path
) -> None:
    """`run --manifest s3://...`: the manifest and the videos it names (URIs in its path column) are read
    from the bucket, in a loader worker (range requests, no local copy); the losses equal a run on the
    same files on local disk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from videonet_curate.manifest import resolve_clip_path

    bucket = s3_module_bucket
    table = pq.read_table(small_manifest)
    uris = []
    for relative in table.column("path").to_pylist():
        local = resolve_clip_path(small_manifest, relative)
        bucket.client().upload_file(str(local), bucket.name, f"media/{Path(relative).name}")
        uris.append(bucket.uri("media", Path(relative).name))
    on_s3 = table.set_column(table.schema.get_field_index("path"), "path", pa.array(uris, pa.string()))
    pq.write_table(on_s3, tmp_path / "manifest.parquet")
    bucket.client().upload_file(str(tmp_path / "manifest.parquet"), bucket.name, "run/manifest.parquet")

    steps = ["max_steps=2"]
    train(resolve_config("cpu-smoke", TINY + steps + ["num_workers=0"]), small_manifest, tmp_path / "local")
    args = ["run", "--manifest", bucket.uri("run"), "--out", str(tmp_path / "s3"), "--preset", "cpu-smoke"]
    args += ["--no-progress", *[a for o in TINY + steps + ["num_workers=1"] for a in ("--set", o)]]
    result = CliRunner().invoke(app, args + bucket.option_args)
    assert result.exit_code == 0, result.output
    local, remote = read_metrics(tmp_path / "local"), read_metrics(tmp_path / "s3")
    assert [r["step"] for r in remote] == [1, 2]
    assert [r["loss"] for r in remote] == [r["loss"] for r in local]
