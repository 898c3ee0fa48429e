"""The staged build (staged.py, stages.py): the plan of stage resources, bounded queues over a long input,
actors killed mid-build replaced with no row lost or duplicated, and a build against a slow loopback host
giving the same manifest as the fused path."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from loopback import serve

from videonet_curate.labeling import LabelingConfig
from videonet_curate.model_stage import BusySpans, chunk_bounds
from videonet_curate.models.base import PreprocessSpec, normalize_frames, preprocess_frames, resize_frames
from videonet_curate.shards import is_done, plan_shards, read_shards
from videonet_curate.staged import (
    StagedStats,
    StageWorkers,
    check_known_spec,
    partial_batch_ok,
    queue_limits,
    run_staged,
)
from videonet_curate.stages import StageOptions, plan_stages


# -- pure parts ----------------------------------------------------------------------------------------
def test_plan_fits_the_cluster_and_declares_each_stage() -> None:
    config = LabelingConfig(threads=1)
    plan = plan_stages(StageOptions(fetch_workers=20), config, cpus=2, gpus_per_model=0.0, fetch=True)
    assert plan["fetch"].actors == 3 and plan["fetch"].concurrency == 7  # 20 downloads in 3 threaded actors
    assert plan["decode"].actors == 1 and plan["model"].num_gpus == 0
    asked = sum(s.actors * s.num_cpus for s in plan.values())
    assert asked <= 2.0 + 1e-9  # every actor can be placed on a 2-CPU machine
    gpu = plan_stages(
        StageOptions(decode_workers=6, model_workers=2), config, cpus=16, gpus_per_model=1.0, fetch=False
    )
    assert "fetch" not in gpu and gpu["model"].num_gpus == 1.0 and gpu["model"].num_cpus == 1.0
    assert gpu["decode"].actors == 6 and gpu["decode"].num_cpus == 1.0
    one_gpu = plan_stages(
        StageOptions(model_workers=4), config, cpus=16, gpus_per_model=1.0, fetch=False, gpus=1.0
    )
    assert one_gpu["model"].actors == 1  # three more would wait for a GPU forever
    # a CPU model actor starts with one glibc arena (its forwards reuse their activations' pages)
    assert plan["model"].ray_options()["runtime_env"] == {"env_vars": {"MALLOC_ARENA_MAX": "1"}}
    assert "runtime_env" not in gpu["model"].ray_options()
    assert "runtime_env" not in plan["decode"].ray_options()
    limits = queue_limits(gpu, call_frames=256)
    assert limits.decoded_frames == 2 * 256 * 2 and limits.fetched == 2 * 6 * 3


def test_busy_spans_count_overlapping_calls_once() -> None:
    busy = BusySpans(keep=4)
    for start, end in [(0, 2), (1, 3), (5, 6), (2.5, 4), (10, 11), (20, 21), (30, 31), (40, 41), (7, 8)]:
        busy.add(start, end)
    assert busy.seconds == 4 + 1 + 1 + 1 + 1 + 1 + 1  # [0, 4] once, then six one-second calls
    assert len(busy.spans) <= 4 and busy.folded_s > 0  # the oldest spans were folded into a total


def test_decoders_get_the_default_models_preprocessing_without_the_model() -> None:
    from videonet_curate.models import EFFICIENTNET_LITE0_PREPROCESS
    from videonet_curate.preprocess import known_preprocess_spec

    assert known_preprocess_spec(" efficientnet-lite0") is EFFICIENTNET_LITE0_PREPROCESS
    assert known_preprocess_spec("openclip:ViT-B-32") is None  # only loading it says
    check_known_spec(None, "whatever the model says", "openclip:ViT-B-32")
    check_known_spec(EFFICIENTNET_LITE0_PREPROCESS, EFFICIENTNET_LITE0_PREPROCESS, "efficientnet-lite0")
    other = dataclasses.replace(EFFICIENTNET_LITE0_PREPROCESS, size=256)
    with pytest.raises(RuntimeError, match="out of date"):
        check_known_spec(EFFICIENTNET_LITE0_PREPROCESS, other, "efficientnet-lite0")


def test_the_last_partial_batch_goes_as_soon_as_nothing_more_can_come() -> None:
    # drained: the tail goes at once, beside the model's last full calls
    assert partial_batch_ok(upstream_idle=True, drained=True, model_in_flight=2)
    # decoding paused but fetches may still bring clips: a partial batch only to an idle model
    assert not partial_batch_ok(upstream_idle=True, drained=False, model_in_flight=1)
    assert partial_batch_ok(upstream_idle=True, drained=False, model_in_flight=0)
    assert not partial_batch_ok(upstream_idle=False, drained=False, model_in_flight=0)


def test_resize_then_normalize_is_the_scorers_preprocess() -> None:
    spec = PreprocessSpec(size=32, crop_pct=0.875, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 40, 60, 3), dtype=np.uint8)
    split = normalize_frames(torch.from_numpy(resize_frames(frames, spec).numpy()), spec)
    assert torch.equal(split, preprocess_frames(frames, spec))
    assert chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]


# -- on Ray, with fake stage workers -------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    from videonet_curate.pipeline import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def _fake_workers(model_delay_s: float) -> StageWorkers:
    """Stage workers that do no real work (defined here so Ray ships them by value)."""
    from videonet_curate.labeling import fetch_clip
    from videonet_curate.model_stage import ScoredBatch
    from videonet_curate.preprocess import known_preprocess_spec

    class Fetch:
        def __init__(self, out_dir, materialize):
            self.out_dir, self.materialize = out_dir, materialize

        def fetch(self, candidate):
            return fetch_clip(candidate, self.out_dir, self.materialize)

    class Decode:
        def __init__(self, config, described, spec=None):
            self.frames = config.frames_per_clip

        def decode(self, fetched):
            meta = {"row": fetched.row, "seconds": 0.0, "frames": self.frames}
            return meta, np.zeros((self.frames, 3, 8, 8), np.uint8)

    class Model:
        def __init__(self, config):
            self.spec = known_preprocess_spec(config.model)  # what the driver gave the decoders

        def describe(self):
            return {"spec": self.spec, "info": {"model_id": "fake"}, "dim": 4}

        def score(self, rows, *frames):
            time.sleep(model_delay_s)
            rows = [
                {**row, "status": "kept", "frames_sampled": len(f)}
                for row, f in zip(rows, frames, strict=True)
            ]
            embeddings = [np.full(4, float(len(f)), np.float32) for f in frames]
            return ScoredBatch(rows, embeddings, {"embed": model_delay_s, "score": 0.0})

    return StageWorkers(fetch=Fetch, decode=Decode, model=Model)


def _candidates(count: int, local: bool) -> list[dict]:
    base = {"source": "urls", "source_id": "x", "start_s": 0.0, "end_s": 1.0}
    return [
        {**base, "clip_id": f"c{i:05d}", **({"locator": "/nowhere/x.mp4"} if local else {"url": "http://x"})}
        for i in range(count)
    ]


def _written_ids(out: Path, shards) -> list[str]:
    assert all(is_done(out, s) for s in shards)
    return [cid for rows, _ in read_shards(out, shards) for cid in rows.column("clip_id").to_pylist()]


def test_queues_stay_bounded_over_a_long_input(ray_local, tmp_path: Path) -> None:
    """A fast source and a slow model: the clips between the source and a written shard stay few."""
    count = 600
    shards = plan_shards(_candidates(count, local=True), 10, "fp")
    config = LabelingConfig(frames_per_clip=2, batch_frames=4)
    stats = StagedStats()
    options = StageOptions(decode_workers=1, model_workers=1)
    summaries = run_staged(
        shards, config, tmp_path, options, workers=_fake_workers(model_delay_s=0.004), stats=stats
    )
    ids = _written_ids(tmp_path, shards)
    assert len(summaries) == len(shards) and sorted(ids) == [f"c{i:05d}" for i in range(count)]
    # waiting for the model: its frame limit (8 frames: 4 clips) + 3 decodes landing after the check;
    # in the model: 2 calls of 2 clips; fetched for the decoder: 6, decoding: 3; rows of open shards: < 20
    assert stats.peak_queued["model"] <= 4 + 3 + 4 and stats.peak_queued["decode"] <= 6 + 3, stats
    assert stats.peak_in_system <= 11 + 9 + 20, stats


def test_killed_stage_actors_are_replaced_without_losing_or_repeating_a_row(
    ray_local, tmp_path: Path
) -> None:
    ray = ray_local
    count = 120
    shards = plan_shards(_candidates(count, local=False), 8, "fp")
    stats = StagedStats()
    killed: list[str] = []

    def materialize(candidate, out_dir):  # nested, so Ray ships it by value
        time.sleep(0.002)
        path = f"{out_dir}/clips/{candidate['clip_id']}.mp4"
        return {"path": path, "status": "kept", "start_s": 0.0, "end_s": 1.0}

    def kill_once(stage: str, done: int, total: int, queued: int | None = None) -> None:
        if stage == "model" and done >= 20 and not killed:
            for name in ("fetch", "decode", "model"):  # one actor of every stage, with calls in flight
                ray.kill(stats.stages[name].actors[0])
                killed.append(name)

    summaries = run_staged(
        shards,
        LabelingConfig(frames_per_clip=2, batch_frames=4),
        tmp_path,
        StageOptions(fetch_workers=4, decode_workers=1, model_workers=1),
        materialize=materialize,
        on_progress=kill_once,
        workers=_fake_workers(model_delay_s=0.02),
        stats=stats,
    )
    assert killed == ["fetch", "decode", "model"]
    assert stats.replaced == {"fetch": 1, "decode": 1, "model": 1}
    ids = _written_ids(tmp_path, shards)
    assert len(summaries) == len(shards) and sorted(ids) == [f"c{i:05d}" for i in range(count)]


def test_a_model_that_cannot_load_fails_the_run_on_the_driver(ray_local, tmp_path: Path) -> None:
    """The loop starts before the model has loaded (decoding overlaps the load); a model actor that cannot
    load still stops the run with its own error, and no shard is written with rows failed by it."""
    workers = _fake_workers(model_delay_s=0.0)

    class Broken(workers.model):
        def __init__(self, config):
            raise RuntimeError("no weights for this model")

    shards = plan_shards(_candidates(16, local=True), 8, "fp")
    broken = StageWorkers(fetch=workers.fetch, decode=workers.decode, model=Broken)
    config = LabelingConfig(frames_per_clip=2, batch_frames=4)
    with pytest.raises(Exception, match="no weights for this model"):
        run_staged(shards, config, tmp_path, StageOptions(), workers=broken)
    assert not any(is_done(tmp_path, s) for s in shards)


# -- a real build against a slow host --------------------------------------------------------------------
def test_slow_source_build_matches_the_fused_run(ray_local, sample_videos: Path, tmp_path: Path) -> None:
    from videonet_curate.build import BuildOptions, build
    from videonet_curate.fetch.options import FetchOptions
    from videonet_curate.sources.base import SourceOptions

    served = tmp_path / "served"
    served.mkdir()
    for name in ("bikes.mp4", "box.mp4"):
        shutil.copy(sample_videos / name, served / name)
    config = LabelingConfig(frames_per_clip=2, batch_frames=2, threads=1)
    fetch = SourceOptions(fetch=FetchOptions(min_height=100, max_rps=50.0, max_retries=0))

    def run(host, out: Path, staged: bool) -> list[dict]:
        listing = tmp_path / "list.csv"
        clips = [("bikes.mp4", 0, 2), ("box.mp4", 1, 3), ("gone.mp4", 0, 2)]
        listing.write_text("url,start,end\n" + "".join(f"{host.url(n)},{s},{e}\n" for n, s, e in clips))
        options = BuildOptions(
            source="urls",
            out_dir=out,
            input_path=listing,
            labeling=config,
            shard_size=2,
            use_ray=staged,
            stages=StageOptions(fetch_workers=4, decode_workers=1, model_workers=1),
            source_options=fetch,
        )
        build(options)
        rows = pq.read_table(out / "manifest.parquet").to_pylist()
        keys = ("clip_id", "status", "reason", "label", "frames_sampled", "end_s")
        return sorted(({k: r[k] for k in keys} for r in rows), key=lambda r: r["clip_id"])

    with serve(served) as host:  # one server for both: the URLs (so the clip ids) stay the same
        fused = run(host, tmp_path / "fused", staged=False)
        host.server.delay_s = 0.3  # now a slow host
        slow = run(host, tmp_path / "slow", staged=True)
    assert slow == fused
    assert [r["status"] for r in fused].count("failed") == 1 and len(fused) == 3
