"""Staged build vs its bound and vs the fused actor, on the CPU, side by side in one run, in rounds.

1. Throughput on the sample clips (``--source local``, copied ``--copies`` times): the whole `build`
   against the bound its stages allow on the same cores: the CPU seconds of decoding and of embedding the
   same clips alone, one thread each, summed and divided by the cores Ray has. Goal: build/bound >= 0.9.
   The "alone" reference and the build are measured in alternating rounds (alone, staged, alone, staged,
   ...; ``--rounds``): on a shared or throttled machine the alone CPU seconds themselves move by 10% or more
   between runs, so every round's figures are printed and build/bound is the median build throughput over
   the median bound, with the per-round ratios and their spread beside it. Today's fused actor (one actor
   per shard that decodes and embeds in sequence, ``--fused``) is measured the same way, in the first
   ``--fused-rounds`` rounds (after that round's staged build). Ray is started once before the builds (its
   start-up is printed, not charged: a cluster build joins a running Ray); everything else a build does is
   in its time: actor start-up and model load, labelling, merge, de-duplication, rebalancing, the manifest,
   embeddings, histogram and summary.
2. Where the time goes: the CPU seconds of every process of each build (driver, model and decode actors,
   Ray's own daemons; Linux /proc) next to the stages' CPU seconds alone, and the fixed cost of a build: a
   build of the 2 clips of one short video. That cost is paid once per build, whatever its length: the
   model actor's start (a Python process importing torch, torchvision and timm, then loading the model:
   ~7 CPU s) and the decode actor's (torch and PyAV: ~3 CPU s). The default input (12 copies: 324 clips,
   ~100-115 s of staged build on 2 cores) is long enough that it weighs 8-9% of the build (measured),
   and less still on a real input of thousands of clips; at 6 copies it weighed 16-21%. It is
   printed, not subtracted.
3. A slow source: the same segments served by a loopback HTTP server that waits ``--delay-s`` before
   every answer (``--source urls``). The model's busy fraction: the seconds it spent in model calls over
   the span from its first call's start to its last call's end. Goal >= 0.8 with ``--fetch-workers``
   high enough, where the fused actor sits idle through every download.

    nice -n 5 python benchmarks/curate_stages.py [--rounds 3] [--fused-rounds 1] [--copies 12]

About 19 minutes on an idle 2-core machine with the defaults (a round: ~3 min alone, ~1.8 min staged; the
fused build ~2.5 min).
Ends with the line ``build/bound X.XX model-busy-under-slow-source Y.YY`` (the staged path's figures).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    default = Path(os.environ.get("VIDEONET_SAMPLES", Path.home() / ".cache/videonet-curate/samples"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=Path, default=default / "videos")
    parser.add_argument("--copies", type=int, default=12, help="copies of each sample video (more clips)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of alone + staged build")
    parser.add_argument(
        "--fused-rounds", type=int, default=1, help="rounds that also build with the fused actor (0: none)"
    )
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch-frames", type=int, default=32)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="CPUs Ray gets")
    parser.add_argument("--decode-workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="model threads (default: the CLI's)")
    parser.add_argument("--delay-s", type=float, default=0.5, help="slow host: wait before every answer")
    parser.add_argument("--slow-clips", type=int, default=24)
    parser.add_argument("--fetch-workers", type=int, default=16)
    args = parser.parse_args(argv)
    if args.rounds < 1 or not 0 <= args.fused_rounds <= args.rounds:
        parser.error(
            f"--rounds {args.rounds} --fused-rounds {args.fused_rounds}: need 0 <= fused <= rounds >= 1"
        )
    return args


# -- the figures of a run (pure) -------------------------------------------------------------------------
@dataclass
class Build:
    """One timed build: wall seconds and CPU seconds by process role."""

    seconds: float
    cpu: dict[str, float]

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu.values())


@dataclass
class Round:
    """One round: the stages alone (CPU and wall seconds), then the staged build (and maybe the fused)."""

    load: float  # 1-minute load average at the round's start
    decode_s: float
    embed_s: float
    alone_wall: float
    staged: Build
    fused: Build | None = None

    @property
    def alone_s(self) -> float:
        return self.decode_s + self.embed_s


def bound_rate(clips: int, alone_cpu_s: float, cores: int) -> float:
    """Clips per second the stages allow on ``cores`` cores: their CPU seconds alone spread over them."""
    return clips / (alone_cpu_s / cores)


@dataclass
class Summary:
    """Medians over the rounds (and each figure's per-round values, for the spread)."""

    bounds: list[float]  # clips/s per round
    staged_rates: list[float]
    fused_rates: list[float] = field(default_factory=list)

    @property
    def bound(self) -> float:
        return statistics.median(self.bounds)

    @property
    def ratio(self) -> float:
        """build/bound: the median build throughput over the median bound."""
        return statistics.median(self.staged_rates) / self.bound

    @property
    def round_ratios(self) -> list[float]:
        return [rate / bound for rate, bound in zip(self.staged_rates, self.bounds, strict=True)]

    @property
    def fused_ratio(self) -> float | None:
        return statistics.median(self.fused_rates) / self.bound if self.fused_rates else None


def summarize(rounds: Sequence[Round], clips: int, cores: int) -> Summary:
    return Summary(
        bounds=[bound_rate(clips, r.alone_s, cores) for r in rounds],
        staged_rates=[clips / r.staged.seconds for r in rounds],
        fused_rates=[clips / r.fused.seconds for r in rounds if r.fused is not None],
    )


def spread(values: Sequence[float], fmt: str = ".2f") -> str:
    """``median (min-max)`` of ``values``."""
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def median_by_role(builds: Sequence[Build]) -> dict[str, float]:
    roles = {role for b in builds for role in b.cpu}
    return {role: statistics.median(b.cpu.get(role, 0.0) for b in builds) for role in roles}


def cpu_parts(cpu: dict[str, float]) -> str:
    return ", ".join(f"{role} {s:.1f}" for role, s in sorted(cpu.items(), key=lambda kv: -kv[1]))


# -- the measurements --------------------------------------------------------------------------------------
def cpu_seconds(fn) -> tuple[object, float, float]:
    """(value, CPU seconds, wall seconds) of ``fn()``."""
    started, wall = time.process_time(), time.perf_counter()
    value = fn()
    return value, time.process_time() - started, time.perf_counter() - wall


class Alone:
    """The stages alone, one thread, in this process: the model loaded once (its load is not timed, as a
    build's is), then per call the CPU seconds of decoding every clip and of embedding and scoring them."""

    def __init__(self, config: LabelingConfig) -> None:
        import torch

        torch.set_num_threads(1)
        self.config = LabelingConfig(**{**config.__dict__, "threads": 1})  # one decoder, one torch thread
        self.model = ClipModel(self.config)

    def decode(self, candidate: dict):
        fetched = fetch_clip(candidate, "/", None)
        return decode_clip_frames(fetched, self.config, self.model.preprocess_spec).frames

    def measure(self, candidates: list[dict]) -> tuple[float, float, float]:
        """(decode CPU s, embed+score CPU s, wall s of both: on a loaded machine they wait for a core)."""
        self.model.score([({"clip_id": "warm"}, self.decode(candidates[0]))])  # warm-up
        decoded, decode_s, decode_wall = cpu_seconds(lambda: [self.decode(c) for c in candidates])
        batches, batch = [], []
        for frames in decoded:
            batch.append(({"clip_id": "x"}, frames))
            if sum(len(f) for _, f in batch) >= self.config.batch_frames:
                batches.append(batch)
                batch = []
        batches.append(batch)
        _, embed_s, embed_wall = cpu_seconds(lambda: [self.model.score(b) for b in batches if b])
        return decode_s, embed_s, decode_wall + embed_wall


def timed_build(options: BuildOptions) -> tuple[Build, int]:
    """(the build's wall and CPU seconds by process role, rows) of one whole build."""
    with TreeCPU() as cpu:
        started = time.perf_counter()
        report = build(options)
        seconds = time.perf_counter() - started
    return Build(seconds, dict(cpu.by_role())), report.summary["rows"]


def busy_fraction(busy_s: float, window: tuple[float, float] | None) -> float:
    return busy_s / (window[1] - window[0]) if window and window[1] > window[0] else 0.0


def load_now() -> float:
    return os.getloadavg()[0]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from videonet_curate.build_cli import _default_threads

    threads = args.threads or _default_threads(1)
    config = LabelingConfig(frames_per_clip=args.frames, batch_frames=args.batch_frames, threads=threads)
    fused_config = LabelingConfig(**{**config.__dict__, "threads": args.cores})  # one forward, every core
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
            f"Ray gets {args.cores}; load average at the start "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        print(
            f"{clips} clips of <= {args.clip_seconds:g} s, {args.frames} frames each, batch "
            f"{args.batch_frames}; {args.rounds} rounds of alone + staged, the fused build in the first "
            f"{args.fused_rounds}"
        )
        alone = Alone(config)
        started = time.perf_counter()
        init_ray(num_cpus=args.cores)
        print(f"Ray start-up: {time.perf_counter() - started:.1f} s (once, before the builds; not charged)")
        stages = StageOptions(decode_workers=args.decode_workers, model_workers=1)
        base = {"source": "local", "clip_seconds": args.clip_seconds, "shard_size": 8}
        small = root / "small"
        small.mkdir()
        shutil.copy(args.samples / SMALL, small / SMALL)
        fixed, fixed_rows = timed_build(
            BuildOptions(out_dir=root / "fixed", input_path=small, labeling=config, stages=stages, **base)
        )
        base["input_path"] = inputs

        rounds: list[Round] = []
        for index in range(args.rounds):
            load = load_now()
            decode_s, embed_s, alone_wall = alone.measure(candidates)
            out = root / f"round{index}"
            staged, rows = timed_build(
                BuildOptions(out_dir=out / "staged", labeling=config, stages=stages, **base)
            )
            assert rows == clips, (rows, clips)
            fused = None
            if index < args.fused_rounds:
                fused, rows = timed_build(
                    BuildOptions(
                        out_dir=out / "fused", labeling=fused_config, stages=StageOptions(fused=True), **base
                    )
                )
                assert rows == clips, (rows, clips)
            shutil.rmtree(out, ignore_errors=True)
            rounds.append(Round(load, decode_s, embed_s, alone_wall, staged, fused))
            print_round(index, args, clips, rounds[-1])
        summary = summarize(rounds, clips, args.cores)
        print_summary(args, clips, rounds, summary, fixed, fixed_rows)

        staged_busy, fused_busy = slow_source(args, config, fused_config, root)
        print(
            f"slow source ({args.delay_s:g} s per request, {args.slow_clips} clips): model busy "
            f"staged {staged_busy:.2f} (--fetch-workers {args.fetch_workers}), fused {fused_busy:.2f}"
        )
        print(f"load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        if summary.fused_ratio is not None:
            print(
                f"fused: build/bound {summary.fused_ratio:.2f} model-busy-under-slow-source {fused_busy:.2f}"
            )
        print(f"build/bound {summary.ratio:.2f} model-busy-under-slow-source {staged_busy:.2f}")
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return 0


def print_round(index: int, args: argparse.Namespace, clips: int, r: Round) -> None:
    bound = bound_rate(clips, r.alone_s, args.cores)
    print(
        f"round {index + 1}/{args.rounds} (load {r.load:.1f} at its start): alone decode {r.decode_s:.1f} + "
        f"embed+score {r.embed_s:.1f} CPU s -> bound {bound:.2f} clips/s (by wall time "
        f"{clips / (r.alone_wall / args.cores):.2f})"
    )
    for name, b in (("staged", r.staged), ("fused", r.fused)):
        if b is None:
            continue
        print(
            f"  {name} {b.seconds:.1f} s = {clips / b.seconds:.2f} clips/s = {clips / b.seconds / bound:.2f} "
            f"of the round's bound; CPU s {cpu_parts(b.cpu)}; total {b.cpu_total:.1f} = "
            f"{b.cpu_total / r.alone_s:.2f}x the stages alone, {b.cpu_total / b.seconds:.2f} cores on average"
        )


def print_summary(
    args: argparse.Namespace,
    clips: int,
    rounds: Sequence[Round],
    summary: Summary,
    fixed: Build,
    fixed_rows: int,
) -> None:
    staged_s = [r.staged.seconds for r in rounds]
    print(f"medians over {len(rounds)} rounds, (min-max):")
    print(
        f"  alone: decode {spread([r.decode_s for r in rounds], '.1f')} + embed+score "
        f"{spread([r.embed_s for r in rounds], '.1f')} CPU s -> bound {spread(summary.bounds)} clips/s"
    )
    print(
        f"  staged: {spread(staged_s, '.1f')} s = {spread(summary.staged_rates)} clips/s; build/bound "
        f"{summary.ratio:.2f} (median rate / median bound); per round "
        f"{', '.join(f'{x:.2f}' for x in summary.round_ratios)}, median of those "
        f"{statistics.median(summary.round_ratios):.2f}"
    )
    staged_builds = [r.staged for r in rounds]
    alone_s = statistics.median(r.alone_s for r in rounds)
    total = statistics.median(b.cpu_total for b in staged_builds)
    print(
        f"  staged CPU s by process: {cpu_parts(median_by_role(staged_builds))}; total {total:.1f} = "
        f"{total / alone_s:.2f}x the stages alone ({alone_s:.1f})"
    )
    fused_builds = [r.fused for r in rounds if r.fused is not None]
    if fused_builds:
        fused_s = [b.seconds for b in fused_builds]
        print(
            f"  fused (measured in {len(fused_builds)} of the {len(rounds)} rounds): "
            f"{spread(fused_s, '.1f')} s = {spread(summary.fused_rates)} clips/s = "
            f"{summary.fused_ratio:.2f} of the median bound; CPU s "
            f"{cpu_parts(median_by_role(fused_builds))}"
        )
    print(
        f"fixed cost of a staged build: {fixed.seconds:.1f} s for {fixed_rows} clips of one short video "
        f"({fixed.seconds / statistics.median(staged_s):.0%} of the median staged build above)"
    )


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
