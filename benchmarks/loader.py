"""Loader throughput per CPU core at 224 px: video mode vs frame-cache mode, side by side.

Measured on the real sample clips (``videonet-curate samples fetch``), one process, one torch
thread, so each figure is pairs/s that one core delivers to the training step (collated batch).
Rates are per CPU-second of this process (``time.process_time``), which stays meaningful on a
shared machine; the wall-clock rate is printed beside it:

  video        seek + decode two frames with PyAV (trainer's default size), per-sample BYOL augmentation
  cache-full   two cached JPEGs, decode_jpeg, the same per-sample augmentation on the CPU
  cache-crop   two cached JPEGs, decode_jpeg, crop + flip + photometric parameters (the GPU path:
               colour jitter/grayscale/blur/solarize then run batched on the device)
  cache-crop+batched-cpu   cache-crop plus the batched photometric ops on this CPU core
  ceiling      decode_jpeg + random resized crop + flip on JPEG bytes already in memory (no sampling)

With ``--workers N`` it also measures a DataLoader with N worker processes (what training uses).
The cache is built under --cache (once) from the sample clips at --fps and --short-side.

    python benchmarks/loader.py [--pairs 400] [--video-pairs 30] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.io import decode_jpeg
from torchvision.transforms import v2

ROOT = Path(__file__).resolve().parents[1]
for package in ("videonet-curate", "vito-train"):
    sys.path.insert(0, str(ROOT / "packages" / package / "src"))
sys.path.insert(0, str(ROOT / "tests" / "train"))

from vito_train.data.batched_augment import apply_photometric  # noqa: E402
from vito_train.data.cache import FrameCache  # noqa: E402
from vito_train.data.cache_source import CacheFrameSource  # noqa: E402
from vito_train.data.frame_pairs import FramePairDataset, collate_pair_batch  # noqa: E402
from vito_train.distributed import RankBatchSampler  # noqa: E402

IMAGE_SIZE, MIN_SCALE, MAX_GAP_S, BATCH = 224, 0.3, 1.0, 32


def samples_videos() -> Path:
    root = Path(os.environ.get("VIDEONET_SAMPLES", Path.home() / ".cache" / "videonet-curate" / "samples"))
    if not (root / "videos").is_dir():
        sys.exit(f"sample media missing under {root}: run `videonet-curate samples fetch`")
    return root / "videos"


def sample_manifest(work: Path) -> Path:
    from conftest import write_sample_manifest  # the trainer tests' helper: one kept row per sample clip

    videos = work / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for video in sorted(samples_videos().iterdir()):
        link = videos / video.name
        if not link.exists():
            link.symlink_to(video)
    return write_sample_manifest(videos, work)


class Timer:
    """Wall and CPU seconds of this process over a block."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def rates(self, n: int) -> tuple[float, float]:
        return n / self.cpu, n / self.wall


def timed_batches(dataset, n_pairs: int, *, batched_cpu: bool = False, kernel: int = 23) -> float:
    """Pairs/s of collated batches produced in this process (after one warm-up batch)."""

    def batch_at(step: int) -> dict:
        indices = range(step * BATCH, (step + 1) * BATCH)
        batch = collate_pair_batch([dataset[i] for i in indices])
        if batched_cpu and batch["photometric"] is not None:
            apply_photometric(batch["view_1"], batch["photometric"][0], kernel_size=kernel)
            apply_photometric(batch["view_2"], batch["photometric"][1], kernel_size=kernel)
        return batch

    batch_at(10_000)
    steps = max(1, n_pairs // BATCH)
    with Timer() as t:
        for step in range(steps):
            batch_at(step)
    return t.rates(steps * BATCH)


def timed_video(manifest: Path, n_pairs: int) -> tuple[float, float]:
    from vito_train.config import TrainConfig
    from vito_train.data.pair_loader import build_pair_dataset, open_frame_source

    config = TrainConfig(image_size=IMAGE_SIZE, crop_min_scale=MIN_SCALE, max_gap_s=MAX_GAP_S, seed=0)
    # the trainer's default decode size
    dataset = build_pair_dataset(config, open_frame_source(config, manifest=manifest))
    dataset[10_000]
    with Timer() as t:
        for i in range(n_pairs):
            dataset[i]
    return t.rates(n_pairs)


def timed_ceiling(cache: FrameCache, n_pairs: int) -> float:
    """decode_jpeg + RandomResizedCrop + flip of two JPEGs held in memory: the floor of the work."""
    rng = np.random.default_rng(0)
    jpegs = []
    for _ in range(64):
        clip = cache.clips[int(rng.integers(len(cache.clips)))]
        frame = int(rng.integers(len(clip.times)))
        jpegs.append(torch.frombuffer(bytearray(cache.read_jpeg(clip, frame)), dtype=torch.uint8))
    crop = v2.Compose(
        [v2.RandomResizedCrop(IMAGE_SIZE, scale=(MIN_SCALE, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    )
    with Timer() as t:
        for i in range(n_pairs):
            crop(decode_jpeg(jpegs[(2 * i) % 64]))
            crop(decode_jpeg(jpegs[(2 * i + 1) % 64]))
    return t.rates(n_pairs)


def timed_loader(dataset, n_pairs: int, workers: int) -> tuple[float, float]:
    """(pairs/s per worker by wall clock, pairs/s delivered): workers' CPU time is not ours to read."""
    steps = max(2, n_pairs * workers // BATCH)
    loader = DataLoader(
        dataset,
        batch_sampler=RankBatchSampler(BATCH, 0, steps + workers),
        num_workers=workers,
        collate_fn=collate_pair_batch,
        prefetch_factor=2,
    )
    it = iter(loader)
    for _ in range(workers):  # workers started and warm
        next(it)
    with Timer() as t:
        for _ in range(steps):
            next(it)
    delivered = steps * BATCH / t.wall
    return delivered / workers, delivered


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vito-bench-frame-cache")
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=320, help="pairs timed per cache mode")
    parser.add_argument("--video-pairs", type=int, default=30, help="pairs timed in video mode")
    parser.add_argument(
        "--workers", type=int, default=2, help="DataLoader workers for the delivered figure (0: skip)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    work = args.cache.parent / (args.cache.name + "-manifest")
    manifest = sample_manifest(work)
    if not (args.cache / "index.parquet").is_file():
        from vito_train.data.prepare import prepare_cache

        start = time.perf_counter()
        summary = prepare_cache(
            manifest, args.cache, fps=args.fps, short_side=args.short_side, clips_per_shard=2
        )
        print(
            f"prepared {args.cache}: {summary.frames} frames of {summary.clips} clips "
            f"in {time.perf_counter() - start:.1f} s ({os.cpu_count()} cores)"
        )
    cache = FrameCache(args.cache)
    sizes = [int(n) for c in cache.clips for n in c.lengths]
    print(
        f"cache: {len(cache.clips)} clips, {len(sizes)} frames, mean JPEG {np.mean(sizes) / 1024:.1f} KiB, "
        f"short side {cache.plan.short_side}, {cache.plan.fps:g} fps"
    )

    source = CacheFrameSource(cache, max_gap_s=MAX_GAP_S)
    full = FramePairDataset(source, seed=0, image_size=IMAGE_SIZE, min_scale=MIN_SCALE)
    crop = FramePairDataset(source, seed=0, image_size=IMAGE_SIZE, min_scale=MIN_SCALE, photometric=True)
    rows = [
        ("video", timed_video(manifest, args.video_pairs)),
        ("cache-full", timed_batches(full, args.pairs)),
        ("cache-crop", timed_batches(crop, args.pairs)),
        ("cache-crop+batched-cpu", timed_batches(crop, args.pairs, batched_cpu=True)),
        ("ceiling (decode+crop)", timed_ceiling(cache, args.pairs)),
    ]
    ceiling = rows[4][1][0]
    print(
        f"\npairs/s per CPU core at {IMAGE_SIZE} px (1 torch thread; batch {BATCH}); "
        f"machine: {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}"
    )
    print(f"{'mode':36s} {'pairs/cpu-s':>11s} {'pairs/wall-s':>12s} {'x video':>8s} {'/ceiling':>9s}")
    for name, (per_cpu, per_wall) in rows:
        print(
            f"{name:36s} {per_cpu:11.1f} {per_wall:12.1f} {per_cpu / rows[0][1][0]:8.1f} "
            f"{per_cpu / ceiling:9.2f}"
        )
    if args.workers > 0:
        per_worker, delivered = timed_loader(crop, args.pairs, args.workers)
        print(
            f"cache-crop through a DataLoader with {args.workers} workers: {delivered:.1f} pairs/s delivered "
            f"(wall), {per_worker:.1f} per worker"
        )
    goal = rows[2][1][0]
    print(
        f"\ngoal >= 300 pairs/s per core from the cache (GPU path, cache-crop): {goal:.0f} "
        f"({'met' if goal >= 300 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
