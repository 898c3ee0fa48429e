"""The staged build's model stage and the whole build against the bare model forward, on a GPU.

Side by side in one run, for each model (efficientnet-lite0, and open_clip ViT-B-32 when open_clip is
installed; random weights: the speed is the same), at ``--batch-frames`` and the build's precision (bf16):
- bare forward: ``scorer.model(x)`` on a batch already normalised and resident on the GPU;
- model stage: ``ClipModel.score`` on uint8 frames at the model's input size in host memory, as decode
  actors hand them (pinned staging, copy and normalise on a side stream overlapped with the forward);
- whole build (``--videos DIR``): `videonet-curate build --source local --device cuda` on the sample
  videos, frames embedded per second of the build, and the peak host memory of all its processes.
Goal: model stage and build at least 0.8 of the bare forward.

    python3 benchmarks/gpu_build.py --videos .gpu/videos           # on the GPU machine (gpu_all.sh)
    python benchmarks/gpu_build.py --device cpu --batch-frames 8 --iters 2 --models efficientnet-lite0
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="efficientnet-lite0,openclip:ViT-B-32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-frames", type=int, default=256)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--videos", type=Path, default=None, help="sample videos for the whole build")
    parser.add_argument("--copies", type=int, default=8, help="copies of each video in the build's input")
    return parser.parse_args()


def timed(step, iters: int, device: torch.device) -> float:
    step()  # warm-up (cudnn autotuning, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / iters


class PeakRSS:
    """Samples the summed resident memory of this process and its descendants (Ray's workers)."""

    def __init__(self) -> None:
        import psutil

        self.peak = 0
        self._stop = threading.Event()
        self._me = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.2):
            total = 0
            for proc in [self._me, *self._me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure_model(spec: str, args: argparse.Namespace, device: torch.device) -> tuple[float, float] | None:
    from videonet_curate.labeling import LabelingConfig
    from videonet_curate.model_stage import ClipModel
    from videonet_curate.models.base import normalize_frames

    config = LabelingConfig(model=spec, batch_frames=args.batch_frames, device=device.type, threads=4)
    try:
        model = ClipModel(config)
    except Exception as exc:  # open_clip not installed on the device machine
        print(f"{spec}: skipped ({type(exc).__name__}: {exc})")
        return None
    scorer = model.scorer
    size = scorer.preprocess_spec.size
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(args.batch_frames, 3, size, size), dtype=np.uint8)
    ready = normalize_frames(torch.from_numpy(frames).to(device), scorer.preprocess_spec, dtype=scorer.dtype)

    def bare() -> object:
        with torch.inference_mode():
            return scorer.model(ready)

    call = np.concatenate([frames] * 4)  # one model call of the staged build on a GPU: 4 batches
    clips = [({"clip_id": f"c{i}"}, call[i : i + args.frames]) for i in range(0, len(call), args.frames)]
    bare_fps = args.batch_frames / timed(bare, args.iters, device)
    stage_fps = len(call) / timed(lambda: model.score(clips), max(1, args.iters // 4), device)
    print(f"{scorer.model_id} ({config.precision}->{scorer.dtype}), batch {args.batch_frames} at {size} px:")
    print(f"  bare forward {bare_fps:10.0f} frames/s")
    print(f"  model stage  {stage_fps:10.0f} frames/s  = {stage_fps / bare_fps:.2f} of bare")
    return bare_fps, stage_fps


def measure_build(spec: str, args: argparse.Namespace, device: torch.device, bare_fps: float) -> None:
    from videonet_curate.build import BuildOptions, build
    from videonet_curate.labeling import LabelingConfig
    from videonet_curate.pipeline import init_ray
    from videonet_curate.stages import StageOptions

    cores = os.cpu_count() or 2
    root = Path(tempfile.mkdtemp(prefix="gpu-build-"))
    try:
        inputs = root / "in"
        inputs.mkdir()
        for copy in range(args.copies):
            for video in sorted(args.videos.iterdir()):
                shutil.copy(video, inputs / f"{copy}-{video.name}")
        init_ray()
        gpu = device.type == "cuda"
        options = BuildOptions(
            source="local",
            out_dir=root / "out",
            input_path=inputs,
            clip_seconds=2.0,
            labeling=LabelingConfig(
                model=spec, frames_per_clip=args.frames, batch_frames=args.batch_frames, device=device.type
            ),
            shard_size=32,
            gpus_per_worker=1.0 if gpu else 0.0,
            stages=StageOptions(decode_workers=max(1, cores - 2), model_workers=1),
        )
        with PeakRSS() as memory:
            started = time.perf_counter()
            report = build(options)
            seconds = time.perf_counter() - started
        labelled = report.summary["rows"] - report.summary["status_counts"].get("failed", 0)
        fps = labelled * args.frames / seconds
        print(
            f"  whole build  {fps:10.0f} frames/s  = {fps / bare_fps:.2f} of bare "
            f"({report.summary['rows']} clips in {seconds:.1f} s, {cores} cores, "
            f"peak host memory {memory.peak / 2**30:.1f} GiB)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name(device) if cuda else 'cpu'}, {os.cpu_count()} cores")
    for spec in [s.strip() for s in args.models.split(",") if s.strip()]:
        measured = measure_model(spec, args, device)
        if measured and args.videos and args.videos.is_dir():
            try:
                import psutil  # noqa: F401
                import ray  # noqa: F401
            except ImportError as exc:  # the device machine may lack them: its wheels go in .gpu/whl
                print(f"  whole build skipped: {exc}")
                continue
            measure_build(spec, args, device, measured[0])
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except ImportError:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
