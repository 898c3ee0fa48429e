"""Cost split per clip of `videonet-curate build --source local` on the real sample clips.

Runs the build's own stages in this process (no Ray, so the split is not blurred by scheduling):
probe every file, then sample / embed / score every clip with the default model, and prints seconds per
clip for each stage and each stage's share of the total. Then, on the same clips, it times sampling the
frames by seeking (what the build does) against decoding the whole clip and picking the frames, and prints
the ratio. benchmarks/video_sampling.py breaks that comparison down per video.

    python benchmarks/curate_local.py [--samples DIR] [--clip-seconds 10] [--frames 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from videonet_curate.labeling import LabelingConfig, ShardLabeler
from videonet_curate.sources.local import discover_local
from videonet_curate.shards import plan_shards
from videonet_curate.video import decode_all_frames, read_frames_at, sample_timestamps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = (
        Path(os.environ.get("VIDEONET_SAMPLES", Path.home() / ".cache/videonet-curate/samples")) / "videos"
    )
    parser.add_argument("--samples", type=Path, default=default)
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--model", default="efficientnet-lite0")
    args = parser.parse_args()

    started = time.perf_counter()
    candidates, failures = discover_local(args.samples, args.clip_seconds, use_ray=False)
    probe_s = time.perf_counter() - started

    config = LabelingConfig(model=args.model, frames_per_clip=args.frames, threads=args.threads)
    with tempfile.TemporaryDirectory() as out:
        labeler = ShardLabeler(config, out)
        (shard,) = plan_shards(candidates, len(candidates), "bench")
        # warm-up on one clip so one-off costs (first forward pass, allocator) do not count
        labeler.run_shard(plan_shards(candidates[:1], 1, "warmup")[0])
        labeler.timings = dict.fromkeys(labeler.timings, 0.0)
        labeler.run_shard(shard)
        timings = dict(labeler.timings)

    clips = len(candidates)
    stages = {
        "probe": probe_s,
        "sample": timings["sample"],
        "embed": timings["embed"],
        "score": timings["score"],
    }
    total = sum(stages.values())
    console = Console()
    table = Table(
        title=f"cost per clip: {clips} clips of <= {args.clip_seconds:g} s, {args.frames} frames each, "
        f"{args.model}"
    )
    table.add_column("stage")
    table.add_column("ms / clip", justify="right")
    table.add_column("share", justify="right")
    for name, seconds in stages.items():
        table.add_row(name, f"{1000 * seconds / clips:.1f}", f"{100 * seconds / total:.1f}%")
    table.add_row("total", f"{1000 * total / clips:.1f}", "100%")
    console.print(table)
    seek_s, decode_all_s = seek_versus_decode_all(candidates, args.frames, config.decode_max_side)
    console.print(
        f"sampling {args.frames} frames per clip: seek {1000 * seek_s / clips:.1f} ms/clip, decode the whole "
        f"clip and pick {1000 * decode_all_s / clips:.1f} ms/clip -> decode-all / seek = "
        f"{decode_all_s / seek_s:.2f}x"
    )
    console.print(
        f"files that are not videos: {len(failures)}; machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch threads {args.threads}"
    )


def seek_versus_decode_all(candidates: list[dict], frames: int, max_side: int) -> tuple[float, float]:
    """Total seconds over all clips: seek-based sampling vs one full decode of each clip window."""
    seek_s = decode_all_s = 0.0
    for cand in candidates:
        path, start, end = cand["locator"], float(cand["start_s"]), float(cand["end_s"])
        stamps = sample_timestamps(start, end, frames)
        started = time.perf_counter()
        read_frames_at(path, stamps, max_side=max_side, threads=1)
        seek_s += time.perf_counter() - started
        started = time.perf_counter()
        decode_all_frames(path, start, end, max_side=max_side)
        decode_all_s += time.perf_counter() - started
    return seek_s, decode_all_s


if __name__ == "__main__":
    main()
