"""Staged build vs its bound and vs the fused actor, on the CPU, side by side in one run.

1. Throughput on the sample clips (``--source local``, copied ``--copies`` times): the whole `build`
   against the bound its stages allow on the same cores: the CPU seconds of decoding and of embedding the
   same clips alone, one thread each, summed and divided by the cores Ray has. Goal: build/bound >= 0.9.
   Today's fused actor (one actor per shard that decodes and embeds in sequence, ``--fused``) is measured
   the same way. Ray is started once before the builds (its start-up is printed, not charged: a cluster
   build joins a running Ray); everything else a build does is in its time: actor start-up and model
   load, labelling, merge, de-duplication, rebalancing, the manifest, embeddings, histogram and summary.
2. Where the time goes: the CPU seconds of every process of each build (driver, model and decode actors,
   Ray's own daemons; Linux /proc) next to the stages' CPU seconds alone, and the fixed cost of a build: a
   build of the 2 clips of one short video. The default input (6 copies: 162 clips) is large enough that
   this fixed cost is a small part of the build, as on a real input; it is printed, not subtracted.
3. A slow source: the same segments served by a loopback HTTP server that waits ``--delay-s`` before
   every answer (``--source urls``). The model's busy fraction: the seconds it spent in model calls over
   the span from its first call's start to its last call's end. Goal >= 0.8 with ``--fetch-workers``
   high enough, where the fused actor sits idle through every download.

    nice -n 5 python benchmarks/curate_stages.py [--copies 6] [--delay-s 0.5] [--slow-clips 24]

Ends with the line ``build/bound X.XX model-busy-under-slow-source Y.YY`` (the staged path's figures).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "curate"))  # the loopback server lives with the tests
sys.path.insert(0, str(REPO / "benchmarks"))

from loopback import serve  # noqa: E402
from proc_cpu import TreeCPU  # noqa: E402

from videonet_curate.build import BuildOptions, build  # noqa: E402
from videonet_curate.labeling import LabelingConfig, decode_clip_frames, fetch_clip  # noqa: E402
from videonet_curate.model_stage import ClipModel  # noqa: E402
from videonet_curate.pipeline import _run_shards_on_ray, init_ray  # noqa: E402
from videonet_curate.shards import plan_shards  # noqa: E402
from videonet_curate.sources.local import discover_local  # noqa: E402
from videonet_curate.staged import StagedStats, run_staged  # noqa: E402
from videonet_curate.stages import StageOptions  # noqa: E402

LOCAL = ("bikes.mp4", "box.mp4", "cockatoo.mp4", "cup.mp4", "dog.mp4", "carphone_pristine.mp4")
SMALL = "carphone_pristine.mp4"  # 4 s: the 2-clip build that measures a build's fixed cost
SERVED = ("bikes.mp4", "box.mp4", "cockatoo.mp4", "cup.mp4")


def parse_args() -> argparse.Namespace:
    default = Path(os.environ.get("VIDEONET_SAMPLES", Path.home() / ".cache/videonet-curate/samples"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=Path, default=default / "videos")
    parser.add_argument("--copies", type=int, default=6, help="copies of each sample video (more clips)")
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch-frames", type=int, default=32)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="CPUs Ray gets")
    parser.add_argument("--decode-workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="model threads (default: the CLI's)")
    parser.add_argument("--delay-s", type=float, default=0.5, help="slow host: wait before every answer")
    parser.add_argument("--slow-clips", type=int, default=24)
    parser.add_argument("--fetch-workers", type=int, default=16)
    return parser.parse_args()


def cpu_seconds(fn) -> tuple[object, float, float]:
    """(value, CPU seconds, wall seconds) of ``fn()``."""
    started, wall = time.process_time(), time.perf_counter()
    value = fn()
    return value, time.process_time() - started, time.perf_counter() - wall


def stage_bound(candidates: list[dict], config: LabelingConfig) -> tuple[float, float, float]:
    """CPU seconds of decoding every clip, then of embedding and scoring them, one thread, in this process;
    and the wall seconds of both (on a loaded machine they wait for a core, as the build does)."""
    import torch

    torch.set_num_threads(1)
    config = LabelingConfig(**{**config.__dict__, "threads": 1})  # one decoder thread, one torch thread
    model = ClipModel(config)
    model.score([({"clip_id": "warm"}, decode_frames(candidates[0], config, model))])  # warm-up
    decoded, decode_s, decode_wall = cpu_seconds(
        lambda: [decode_frames(c, config, model) for c in candidates]
    )
    batches, batch = [], []
    for frames in decoded:
        batch.append(({"clip_id": "x"}, frames))
        if sum(len(f) for _, f in batch) >= config.batch_frames:
            batches.append(batch)
            batch = []
    batches.append(batch)
    _, embed_s, embed_wall = cpu_seconds(lambda: [model.score(b) for b in batches if b])
    return decode_s, embed_s, decode_wall + embed_wall


def decode_frames(candidate: dict, config: LabelingConfig, model: ClipModel):
    fetched = fetch_clip(candidate, "/", None)
    return decode_clip_frames(fetched, config, model.preprocess_spec).frames


def timed_build(options: BuildOptions) -> tuple[float, int, dict[str, float]]:
    """(wall seconds, rows, CPU seconds by process role) of one whole build."""
    with TreeCPU() as cpu:
        started = time.perf_counter()
        report = build(options)
        seconds = time.perf_counter() - started
    return seconds, report.summary["rows"], dict(cpu.by_role())


def busy_fraction(busy_s: float, window: tuple[float, float] | None) -> float:
    return busy_s / (window[1] - window[0]) if window and window[1] > window[0] else 0.0


def main() -> int:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from videonet_curate.build_cli import _default_threads

    threads = args.threads or _default_threads(1)
    config = LabelingConfig(frames_per_clip=args.frames, batch_frames=args.batch_frames, threads=threads)
    root = Path(tempfile.mkdtemp(prefix="curate-stages-"))
    try:
        inputs = root / "in"
        inputs.mkdir()
        for copy in range(args.copies):
            for name in LOCAL:
                shutil.copy(args.samples / name, inputs / f"{copy}-{name}")
        candidates, _ = discover_local(inputs, args.clip_seconds, use_ray=False)
        clips = len(candidates)
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Ray gets {args.cores}"
        )
        print(
            f"{clips} clips of <= {args.clip_seconds:g} s, {args.frames} frames each, "
            f"batch {args.batch_frames}"
        )
        decode_s, embed_s, alone_wall = stage_bound(candidates, config)
        bound = clips / ((decode_s + embed_s) / args.cores)
        wall_bound = clips / (alone_wall / args.cores)
        print(
            f"alone, one thread: decode {decode_s:.1f} CPU s, embed+score {embed_s:.1f} CPU s "
            f"-> bound {bound:.2f} clips/s on {args.cores} cores; by wall time (same load) "
            f"{alone_wall:.1f} s -> {wall_bound:.2f} clips/s"
        )

        started = time.perf_counter()
        init_ray(num_cpus=args.cores)
        print(f"Ray start-up: {time.perf_counter() - started:.1f} s (once, before the builds; not charged)")
        stages = StageOptions(decode_workers=args.decode_workers, model_workers=1)
        base = {"source": "local", "clip_seconds": args.clip_seconds, "shard_size": 8}
        small = root / "small"
        small.mkdir()
        shutil.copy(args.samples / SMALL, small / SMALL)
        fixed_s, fixed_rows, _ = timed_build(
            BuildOptions(out_dir=root / "fixed", input_path=small, labeling=config, stages=stages, **base)
        )
        base["input_path"] = inputs
        staged_s, rows, staged_cpu = timed_build(
            BuildOptions(out_dir=root / "staged", labeling=config, stages=stages, **base)
        )
        fused_config = LabelingConfig(**{**config.__dict__, "threads": args.cores})  # one forward, every core
        fused_s, _, fused_cpu = timed_build(
            BuildOptions(
                out_dir=root / "fused", labeling=fused_config, stages=StageOptions(fused=True), **base
            )
        )
        staged_ratio, fused_ratio = clips / staged_s / bound, clips / fused_s / bound
        print(f"{'path':<8}{'seconds':>9}{'clips/s':>9}{'of bound':>10}{'of wall bound':>15}")
        for name, seconds, ratio in (("staged", staged_s, staged_ratio), ("fused", fused_s, fused_ratio)):
            rate = clips / seconds
            print(f"{name:<8}{seconds:>9.1f}{rate:>9.2f}{ratio:>10.2f}{rate / wall_bound:>15.2f}")
        assert rows == clips, (rows, clips)
        print(
            f"fixed cost of a staged build: {fixed_s:.1f} s for {fixed_rows} clips of one short video "
            f"({fixed_s / staged_s:.0%} of the staged build above)"
        )
        print(
            f"CPU seconds inside each build, by process (alone: decode {decode_s:.1f} + embed {embed_s:.1f}):"
        )
        for name, by_role in (("staged", staged_cpu), ("fused", fused_cpu)):
            total = sum(by_role.values())
            parts = ", ".join(
                f"{role} {cpu:.1f}" for role, cpu in sorted(by_role.items(), key=lambda kv: -kv[1])
            )
            print(
                f"  {name}: {parts}; total {total:.1f} = {total / (decode_s + embed_s):.2f}x the stages alone"
            )
            # on a shared machine a build gets a share of the cores; its CPU seconds say what the
            # orchestration costs whatever that share (1.0: nothing beyond the stages' own work)
            print(
                f"  {name}: the stages' CPU alone / the build's CPU {(decode_s + embed_s) / total:.2f}; "
                f"cores the build got on average {total / (staged_s if name == 'staged' else fused_s):.2f}"
            )
        print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

        staged_busy, fused_busy = slow_source(args, config, fused_config, root)
        print(
            f"slow source ({args.delay_s:g} s per request, {args.slow_clips} clips): model busy "
            f"staged {staged_busy:.2f} (--fetch-workers {args.fetch_workers}), fused {fused_busy:.2f}"
        )
        print(f"fused: build/bound {fused_ratio:.2f} model-busy-under-slow-source {fused_busy:.2f}")
        print(f"build/bound {staged_ratio:.2f} model-busy-under-slow-source {staged_busy:.2f}")
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return 0


def slow_source(
    args: argparse.Namespace, config: LabelingConfig, fused_config: LabelingConfig, root: Path
) -> tuple[float, float]:
    from videonet_curate.fetch.options import FetchOptions
    from videonet_curate.sources.base import SourceArgs, SourceOptions
    from videonet_curate.sources.registry import make_source

    served = root / "served"
    served.mkdir()
    for name in SERVED:
        shutil.copy(args.samples / name, served / name)
    with serve(served, delay_s=args.delay_s) as host:
        listing = root / "slow.csv"
        lines = ["url,start,end"]
        for i in range(args.slow_clips):
            start = (i // len(SERVED)) % 4
            lines.append(f"{host.url(SERVED[i % len(SERVED)])},{start},{start + args.clip_seconds:g}")
        listing.write_text("\n".join(lines) + "\n")
        fetch = FetchOptions(min_height=100, max_rps=1000.0, max_concurrent=64, max_retries=0)
        results = []
        for name in ("staged", "fused"):
            out = root / f"slow-{name}"
            source = make_source(
                "urls",
                SourceArgs(
                    out_dir=out,
                    input_path=listing,
                    clip_seconds=args.clip_seconds,
                    options=SourceOptions(fetch=fetch),
                ),
            )
            source.check()
            remote = source.gather(use_ray=True)
            shards = plan_shards(remote.candidates, 8, name)
            if name == "staged":
                stats = StagedStats()
                stages = StageOptions(fetch_workers=args.fetch_workers, decode_workers=args.decode_workers)
                run_staged(shards, config, out, stages, materialize=remote.materialize, stats=stats)
                results.append(busy_fraction(stats.model_busy_s, stats.model_window))
            else:
                summaries = _run_shards_on_ray(shards, fused_config, out, 1, remote.materialize, None, 0.0)
                windows = [s["model_window"] for s in summaries if "model_window" in s]
                busy = sum(s["timings"]["embed"] + s["timings"]["score"] for s in summaries)
                span = (min(w[0] for w in windows), max(w[1] for w in windows)) if windows else None
                results.append(busy_fraction(busy, span))
    return results[0], results[1]


if __name__ == "__main__":
    raise SystemExit(main())
