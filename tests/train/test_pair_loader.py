"""Training from a frame cache (batched photometric augmentation), SIGTERM checkpoints, dead workers."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from types import SimpleNamespace

import pytest
import torch
from conftest import link_sample_manifest
from torch.utils.data import Dataset

from vito_train.checkpoint import load_checkpoint
from vito_train.config import resolve_config
from vito_train.data.frame_pairs import collate_pair_batch
from vito_train.data.pair_loader import build_rank_batches, use_batched_augment
from vito_train.data.prepare import prepare_cache
from vito_train.loop import train

TINY = [
    "image_size=48",
    "batch_size=4",
    "projector_hidden=64",
    "predictor_hidden=64",
    "projector_dim=32",
    "attention_hidden=16",
    "warmup_steps=2",
    "num_workers=0",
    "log_every=1",
    "torch_threads=1",
]


class DiesAt(Dataset):
    """Sample ``i`` is a tiny pair; sample ``fatal`` kills the worker process that reads it."""

    def __init__(self, fatal: int) -> None:
        self.fatal = fatal

    def __len__(self) -> int:
        return 1000

    def __getitem__(self, index: int) -> dict:
        if index == self.fatal:
            os._exit(3)  # as a segfault or the OOM killer would: no exception, the process is gone
        image = torch.full((3, 4, 4), index % 256, dtype=torch.uint8)
        return {"view_1": image, "view_2": image, "index": index, "failed": []}


def test_a_dead_loader_worker_costs_one_batch_not_the_run():
    config = SimpleNamespace(batch_size=2, num_workers=1)
    batches = build_rank_batches(config, DiesAt(fatal=7), start_step=0, end_step=6)
    seen = [None if b["view_1"] is None else int(b["view_1"][0, 0, 0, 0]) for b in batches]
    assert seen == [0, 2, 4, None, 8, 10]  # step 3 (samples 6, 7) lost, the rest in order
    assert (
        batches.skipped_steps == 1 and batches.worker_deaths >= 2
    )  # the read-ahead loader's, then the culprit's


def test_auto_runs_photometric_augmentation_on_the_device_only_for_gpus():
    assert use_batched_augment("auto", torch.device("cuda")) and not use_batched_augment(
        "auto", torch.device("cpu")
    )
    assert use_batched_augment("device", torch.device("cpu")) and not use_batched_augment(
        "workers", torch.device("cuda")
    )
    assert collate_pair_batch([{"view_1": None, "failed": ["a"]}])["dropped"] == 1


@pytest.fixture(scope="module")
def tiny_cache(sample_videos, tmp_path_factory):
    root = tmp_path_factory.mktemp("train_cache")
    manifest = link_sample_manifest(sample_videos, root, ["carphone_pristine.mp4", "realshort.mp4"])
    summary = prepare_cache(manifest, root / "frames", fps=4, short_side=64, clips_per_shard=1, workers=1)
    assert summary.complete
    return root / "frames"


def test_cache_mode_trains_with_batched_augmentation_and_sigterm_checkpoints(tiny_cache, tmp_path):
    """A scheduler's SIGTERM mid-run: the loop finishes its step, writes last.pt, returns."""
    handler_before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or Ray's if a test started Ray here
    run = tmp_path / "run"
    config = resolve_config(
        "cpu-smoke", TINY + ["max_steps=500", "photometric_augment=device", "ckpt_last_every=1000"]
    )

    def terminate_after_two_steps() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            metrics = run / "metrics.jsonl"
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=terminate_after_two_steps, daemon=True)
    killer.start()
    summary = train(config, None, run, cache=tiny_cache)
    killer.join(timeout=5)
    assert summary["stopped_by_signal"] and 2 <= summary["end_step"] < 500
    checkpoint = load_checkpoint(run / "last.pt")
    assert (
        checkpoint["step"] == summary["end_step"] and checkpoint["data_position"] == summary["end_step"] * 4
    )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows) and rows[-1]["failed_clips"] == 0
    assert signal.getsignal(signal.SIGTERM) is handler_before  # the handler is removed afterwards
    # resumes from the signal's checkpoint
    resumed = train(
        resolve_config(
            "cpu-smoke", TINY + [f"max_steps={summary['end_step'] + 1}", "photometric_augment=device"]
        ),
        None,
        run,
        cache=tiny_cache,
    )
    assert resumed["start_step"] == summary["end_step"] and resumed["steps"] == 1


def test_a_truncated_cache_shard_is_skipped_and_counted_in_the_run(tiny_cache, tmp_path):
    import shutil

    from vito_train.data.cache import FrameCache, shard_paths

    copy = tmp_path / "frames"
    shutil.copytree(tiny_cache, copy)
    tar = shard_paths(copy, FrameCache(copy).clips[0].shard)[0]
    tar.write_bytes(tar.read_bytes()[:1024])  # cut mid-shard, as a failed copy would
    config = resolve_config("cpu-smoke", TINY + ["max_steps=1"])
    summary = train(config, None, tmp_path / "run", cache=copy)
    assert summary["steps"] == 1 and summary["bad_cache_shards"] == 1
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["bad_cache_shards"] == 1
