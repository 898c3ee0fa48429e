"""Training-step throughput: real data (manifest -> PyAV seek -> augment -> DataLoader) versus
synthetic input of the same model and batch, side by side in one run, as a ratio.

CPU (default, small sizes):  python benchmarks/train_step.py
GPU (see gpu_train_step.py): python benchmarks/train_step.py --preset paper-r50 --device cuda ...
Goal: real data at >= 95% of synthetic, i.e. the loader keeps the model fed.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

DEFAULT_VIDEOS = (
    Path(os.environ.get("VIDEONET_SAMPLES", Path.home() / ".cache/videonet-curate/samples")) / "videos"
)


def write_local_manifest(videos: Path, out_dir: Path) -> Path:
    """A manifest with every video under ``videos`` kept whole (paths absolute; labels arbitrary)."""
    import av

    from videonet_curate.manifest import empty_row, rows_to_table, write_manifest

    rows = []
    video_suffixes = {".mp4", ".avi", ".mpg", ".mkv", ".webm", ".mov", ".ts"}
    for label, path in enumerate(sorted(p for p in videos.iterdir() if p.suffix.lower() in video_suffixes)):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            duration = (
                float(stream.duration * stream.time_base)
                if stream.duration
                else (container.duration or 0) / 1e6
            )
        rows.append(
            empty_row(
                clip_id=path.stem,
                source="local",
                source_id=path.name,
                path=str(path.resolve()),
                start_s=0.0,
                end_s=max(duration - 0.1, 0.2),
                status="kept",
                label=label,
                label_name=path.stem,
                score=1.0,
            )
        )
    return write_manifest(rows_to_table(rows), out_dir / "manifest.parquet")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_synthetic(state, batch: int, size: int, warmup: int, steps: int) -> float:
    """The same train_step on random uint8 views (photometric augmentation, when it runs on the
    device, is part of the real-data path only)."""
    from vito_train.loop import train_step

    pin = state.device.type == "cuda"
    views = [torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8) for _ in range(2)]
    if pin:
        views = [v.pin_memory() for v in views]
    for _ in range(warmup):
        train_step(state, *views)
    _sync(state.device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(state, *views)
    _sync(state.device)
    return steps * batch / (time.perf_counter() - start)


def time_real(state, config, manifest: Path, warmup: int, steps: int) -> tuple[float, int]:
    from vito_train.loop import build_loader, train_step

    loader = iter(build_loader(config, manifest, 0, warmup + steps, state.device))
    pairs, failed = 0, 0
    for _ in range(warmup):
        batch = next(loader)
        train_step(state, batch["view_1"], batch["view_2"], batch.get("photometric"))
    _sync(state.device)
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(loader)
        failed += len(batch["failed"])
        train_step(state, batch["view_1"], batch["view_2"], batch.get("photometric"))
        pairs += batch["view_1"].shape[0]
    _sync(state.device)
    return pairs / (time.perf_counter() - start), failed


def main(argv: list[str] | None = None, defaults: dict | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="cpu-smoke")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--manifest", type=Path, help="default: a manifest of the sample videos")
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config key=value")
    parser.set_defaults(**(defaults or {}))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from vito_train.config import resolve_config
    from vito_train.loop import build_state, resolve_device

    overrides = [
        f"arch={args.arch}",
        f"image_size={args.image_size}",
        f"batch_size={args.batch}",
        f"num_workers={args.workers}",
        f"precision={args.precision}",
        f"compile={str(args.compile).lower()}",
        f"device={args.device}",
        "deterministic=false",
        f"max_steps={args.warmup + args.steps + 100}",
        *args.overrides,
    ]
    config = resolve_config(args.preset, overrides)
    device = resolve_device(config.device)
    if config.torch_threads > 0:
        torch.set_num_threads(config.torch_threads)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest or write_local_manifest(args.videos, Path(tmp))
        state = build_state(config, device)
        synthetic = time_synthetic(state, config.batch_size, config.image_size, args.warmup, args.steps)
        real, failed = time_real(state, config, manifest, args.warmup, args.steps)
    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    )
    print(
        f"device {name}; {config.arch} @ {config.image_size}px, batch {config.batch_size} pairs, "
        f"{config.precision}, compile={config.compile}, workers={config.num_workers}, "
        f"photometric_augment={config.photometric_augment}, {args.steps} timed steps"
    )
    print(f"synthetic input : {synthetic:8.1f} pairs/s")
    print(f"real data       : {real:8.1f} pairs/s  ({failed} clips failed to decode)")
    print(f"ratio real/synthetic: {real / synthetic:.3f}  (goal >= 0.95)")
    return {"synthetic_pairs_per_s": synthetic, "real_pairs_per_s": real, "ratio": real / synthetic}


if __name__ == "__main__":
    main()
