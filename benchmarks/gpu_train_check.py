"""GPU check of VITO training at scale: frame-cache data vs synthetic input, and the cost of the
batched photometric augmentation, in one run (ResNet-50, 224 px, batch 256, bf16, compiled).

  PYTHONPATH=packages/videonet-curate/src:packages/vito-train/src:packages/vito-eval/src \
    python3 benchmarks/gpu_train_check.py [--cache DIR] [--json OUT.json]

Needs torch, torchvision, timm, pyarrow, numpy, pyyaml (no PyAV): the data come from a frame cache,
either DIR (e.g. one `vito-train prepare` built from real clips, carried along) or, by default, a
small cache this script writes from synthetic images (smooth random fields + noise, sized like real
256-px frames). Figures printed:

  synthetic  train_step on uint8 views already on the GPU (incl. the batched augmentation)
  real       train_step on batches from the cache: DataLoader workers decode + crop, the GPU
             applies colour jitter / grayscale / blur / solarize (photometric_augment=device)
  loader     the workers alone (decode + crop + params), no training: the supply ceiling
  augment    the batched photometric augmentation of 2 x batch images alone, as a share of a step
Goals: real >= 95% of synthetic; augmentation <= 5% of the step.
`--quick` runs a tiny CPU version (ResNet-18, 64 px, batch 8) to test the script; without CUDA and
without --quick it prints a note and exits 0 (so `make bench` passes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for package in ("videonet-curate", "vito-train"):
    sys.path.insert(0, str(ROOT / "packages" / package / "src"))

GPU = {
    "arch": "resnet50",
    "image_size": 224,
    "batch": 256,
    "precision": "bf16",
    "compile": True,
    "warmup": 6,
    "steps": 25,
    "device": "cuda",
}
QUICK = {
    "arch": "resnet18",
    "image_size": 64,
    "batch": 8,
    "precision": "fp32",
    "compile": False,
    "warmup": 1,
    "steps": 3,
    "device": "cpu",
}


def synthetic_frames(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, H, W) uint8 images with real-frame-like JPEG sizes: smooth colour fields, edges, noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 8, generator=g)
    field = torch.nn.functional.interpolate(low, size=(height, width), mode="bicubic", align_corners=False)
    mid = torch.nn.functional.interpolate(
        torch.rand(n, 1, 24, 32, generator=g), size=(height, width), mode="nearest"
    )
    noise = torch.randn(n, 3, height, width, generator=g) * 0.04
    return ((0.7 * field + 0.25 * mid + noise).clamp(0, 1) * 255).to(torch.uint8)


def write_synthetic_cache(
    root: Path, clips: int, frames_per_clip: int, fps: float = 8.0, short_side: int = 256
) -> Path:
    """A frame cache in the real format (tar shards + index), written with the cache module itself."""
    from torchvision.io import encode_jpeg

    from videonet_curate.storage import atomic_write_text
    from vito_train.data.cache import CachePlan, write_global_index, write_shard

    width = round(short_side * 4 / 3)
    clip_ids = tuple(f"synthetic{i:04d}" for i in range(clips))
    plan = CachePlan(
        fps=fps,
        short_side=short_side,
        quality=90,
        clips_per_shard=16,
        clip_ids=clip_ids,
        manifest="synthetic",
    )
    atomic_write_text(root / "plan.json", plan.to_json())
    for shard in range(plan.n_shards):
        rows = []
        for k, clip_id in enumerate(plan.shard_clip_ids(shard)):
            images = synthetic_frames(frames_per_clip, short_side, width, seed=shard * 1000 + k)
            rows += [
                (clip_id, j / fps, encode_jpeg(img, quality=90).numpy().tobytes())
                for j, img in enumerate(images)
            ]
        write_shard(root, shard, rows, [])
    write_global_index(root, plan)
    return root


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_synthetic(state, batch: int, size: int, warmup: int, steps: int) -> float:
    from vito_train.data.augment import VIEW_1, VIEW_2
    from vito_train.data.batched_augment import random_photometric_params
    from vito_train.loop import train_step

    device = state.device
    g = torch.Generator(device=device).manual_seed(0)
    views = [
        torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device, generator=g)
        for _ in range(2)
    ]
    params = torch.stack(
        [random_photometric_params(batch, view, generator=g, device=device) for view in (VIEW_1, VIEW_2)]
    )
    for _ in range(warmup):
        train_step(state, *views, params)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(state, *views, params)
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def time_real(state, config, cache: Path, warmup: int, steps: int) -> tuple[float, int, int]:
    """Pairs/s of training on cache batches; also the failed clips and dropped samples seen."""
    from vito_train.loop import build_loader, train_step

    batches = iter(build_loader(config, None, 0, warmup + steps, state.device, cache=cache))
    for _ in range(warmup):
        b = next(batches)
        train_step(state, b["view_1"], b["view_2"], b["photometric"])
    _sync(state.device)
    pairs, failed, dropped = 0, 0, 0
    start = time.perf_counter()
    for _ in range(steps):
        b = next(batches)
        failed, dropped = failed + len(b["failed"]), dropped + b["dropped"]
        train_step(state, b["view_1"], b["view_2"], b["photometric"])
        pairs += b["view_1"].shape[0]
    _sync(state.device)
    return pairs / (time.perf_counter() - start), failed, dropped


def time_loader_alone(config, cache: Path, device: torch.device, warmup: int, steps: int) -> float:
    from vito_train.loop import build_loader

    batches = iter(build_loader(config, None, 0, warmup + steps, device, cache=cache))
    for _ in range(warmup):
        next(batches)
    start = time.perf_counter()
    pairs = sum(next(batches)["view_1"].shape[0] for _ in range(steps))
    return pairs / (time.perf_counter() - start)


def time_augmentation(
    batch: int, size: int, device: torch.device, dtype: torch.dtype, reps: int, compiled: bool | None = None
) -> float:
    """Milliseconds to augment + normalise 2 x batch uint8 images on ``device`` (after warm-up,
    which includes the compilation of the static graph when ``compiled``)."""
    from vito_train.data.augment import VIEW_1, VIEW_2, blur_kernel_size
    from vito_train.data.batched_augment import augment_and_normalize, random_photometric_params

    g = torch.Generator(device=device).manual_seed(1)
    images = torch.randint(0, 256, (2 * batch, 3, size, size), dtype=torch.uint8, device=device, generator=g)
    params = torch.cat(
        [random_photometric_params(batch, view, generator=g, device=device) for view in (VIEW_1, VIEW_2)]
    )
    kernel = blur_kernel_size(size)
    for _ in range(3):
        augment_and_normalize(images, params, kernel_size=kernel, dtype=dtype, compiled=compiled)
    _sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        augment_and_normalize(images, params, kernel_size=kernel, dtype=dtype, compiled=compiled)
    _sync(device)
    return (time.perf_counter() - start) / reps * 1000


def main() -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny CPU run that tests the script")
    parser.add_argument(
        "--cache",
        type=Path,
        action="append",
        default=[],
        help="a frame cache to read (repeatable; 'synthetic' = write one; default: synthetic)",
    )
    parser.add_argument("--workers", type=int, default=max(1, min(15, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--batch", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not args.quick and not torch.cuda.is_available():
        print("gpu_train_check: no CUDA device here; run it on a GPU machine, or --quick for the CPU test")
        return {}
    logging.basicConfig(level=logging.WARNING)
    p = dict(QUICK if args.quick else GPU)
    p["batch"] = args.batch or p["batch"]
    p["steps"] = args.steps or p["steps"]
    p["compile"] = p["compile"] and not args.no_compile
    workers = 2 if args.quick else args.workers

    from vito_train.config import resolve_config
    from vito_train.loop import build_state, resolve_device

    overrides = [
        f"arch={p['arch']}",
        f"image_size={p['image_size']}",
        f"batch_size={p['batch']}",
        f"num_workers={workers}",
        f"precision={p['precision']}",
        f"compile={str(p['compile']).lower()}",
        f"device={p['device']}",
        "deterministic=false",
        "photometric_augment=device",
        "max_steps=100000",
    ]
    if args.quick:
        overrides += [
            "projector_hidden=256",
            "predictor_hidden=256",
            "attention_hidden=32",
            "torch_threads=1",
        ]
    config = resolve_config("paper-r50", overrides)
    device = resolve_device(config.device)
    if config.torch_threads > 0:
        torch.set_num_threads(config.torch_threads)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    t0 = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        caches = []
        for given in args.cache or [Path("synthetic")]:
            if str(given) == "synthetic":
                clips, frames = (8, 8) if args.quick else (64, 24)
                caches.append(("synthetic", write_synthetic_cache(Path(tmp) / "cache", clips, frames)))
            else:
                caches.append((str(given), given))
        t_cache = time.perf_counter() - t0
        state = build_state(config, device)
        t1 = time.perf_counter()
        synthetic = time_synthetic(state, config.batch_size, config.image_size, p["warmup"], p["steps"])
        t_synthetic = time.perf_counter() - t1
        for label, cache in caches:
            real, failed, dropped = time_real(state, config, cache, p["warmup"], p["steps"])
            loader = time_loader_alone(config, cache, device, max(2, workers), p["steps"])
            runs.append(
                {
                    "cache": label,
                    "real_pairs_per_s": real,
                    "real_over_synthetic": real / synthetic,
                    "loader_alone_pairs_per_s": loader,
                    "loader_pairs_per_s_per_worker": loader / max(workers, 1),
                    "failed_clips": failed,
                    "dropped_samples": dropped,
                }
            )
    dtype = torch.bfloat16 if config.precision == "bf16" and device.type == "cuda" else torch.float32
    aug_ms = time_augmentation(config.batch_size, config.image_size, device, dtype, 5 if args.quick else 20)
    aug_eager_ms = time_augmentation(
        config.batch_size, config.image_size, device, dtype, 5 if args.quick else 20, compiled=False
    )
    step_ms = config.batch_size / synthetic * 1000
    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    )
    result = {
        "device": name,
        "arch": config.arch,
        "image_size": config.image_size,
        "batch": config.batch_size,
        "precision": config.precision,
        "compile": config.compile,
        "workers": workers,
        "timed_steps": p["steps"],
        "synthetic_pairs_per_s": synthetic,
        "real": runs,
        "augment_ms": aug_ms,
        "augment_eager_ms": aug_eager_ms,
        "augment_images_per_s": 2 * config.batch_size / aug_ms * 1000,
        "augment_share_of_step": aug_ms / step_ms,
        "seconds_cache": t_cache,
        "seconds_synthetic_incl_compile": t_synthetic,
        "seconds_total": time.perf_counter() - t0,
    }
    print(
        f"device {name}; {config.arch} @ {config.image_size}px, batch {config.batch_size} pairs, "
        f"{config.precision}, "
        f"compile={config.compile}, {workers} loader workers, {p['steps']} timed steps"
    )
    print(f"synthetic input        : {synthetic:9.1f} pairs/s  (step {step_ms:.1f} ms)")
    for run in runs:
        print(f"real data, cache {run['cache']}:")
        print(
            f"  training             : {run['real_pairs_per_s']:9.1f} pairs/s  "
            f"ratio {run['real_over_synthetic']:.3f} "
            f"(goal >= 0.95); {run['failed_clips']} failed clips, {run['dropped_samples']} dropped samples"
        )
        print(
            f"  loader alone         : {run['loader_alone_pairs_per_s']:9.1f} pairs/s  "
            f"({run['loader_pairs_per_s_per_worker']:.0f} per worker)"
        )
    print(
        f"batched augmentation   : {aug_ms:9.2f} ms per 2x{config.batch_size} images "
        f"({str(dtype).split('.')[-1]}; "
        f"{result['augment_images_per_s']:.0f} images/s; eager {aug_eager_ms:.2f} ms) = "
        f"{result['augment_share_of_step']:.1%} of a step (goal <= 5%)"
    )
    print(
        f"wall: {result['seconds_total']:.0f} s (cache {t_cache:.0f} s, "
        f"synthetic incl. compile {t_synthetic:.0f} s)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
