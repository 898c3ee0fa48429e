"""Fetch benchmark: the loopback download + cut + normalise path, and what Ray orchestration costs.

Serves the sample clips from a loopback HTTP server (Range support, 127.0.0.1) and materialises the
same segments three ways, side by side in one run:
  1. a plain loop in this process                    -> clips/s/core of the fetch path
  2. Ray tasks on one worker (num_cpus=1, serial)    -> Ray overhead vs the loop, as a ratio
  3. Ray tasks on --workers workers                  -> scaling (bounded by the cores you have)
Ray's start-up is timed separately and not charged to (2) or (3).

    python benchmarks/fetch.py --clips 12 --workers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "curate"))  # the loopback server lives with the tests

from loopback import serve  # noqa: E402

from videonet_curate.fetch import FetchOptions, materialize  # noqa: E402

SOURCES = ("bikes.mp4", "box.mp4", "cockatoo.mp4", "cup.mp4")


def _candidates(n: int, seconds: float) -> list[dict]:
    out = []
    for i in range(n):
        name = SOURCES[i % len(SOURCES)]
        start = float((i // len(SOURCES)) % 3)
        out.append(
            {
                "clip_id": f"{name[:-4]}_{i:04d}",
                "source": "kinetics",
                "source_id": name[:-4],
                "url": None,
                "start_s": start,
                "end_s": start + seconds,
                "source_label": None,
            }
        )
    return out


def _loop(cands: list[dict], opts: FetchOptions, clips_dir: Path) -> tuple[float, int]:
    started = time.perf_counter()
    kept = sum(materialize(c, opts, clips_dir).status == "kept" for c in cands)
    return time.perf_counter() - started, kept


def _ray_run(cands: list[dict], opts: FetchOptions, clips_dir: Path, workers: int) -> tuple[float, int]:
    import ray

    @ray.remote(num_cpus=1)
    def fetch_one(cand: dict) -> str:
        return materialize(cand, opts, clips_dir).status

    started = time.perf_counter()
    pending, statuses = [], []
    for cand in cands:  # at most `workers` tasks in flight, like a pool of that size
        if len(pending) >= workers:
            done, pending = ray.wait(pending, num_returns=1)
            statuses += ray.get(done)
        pending.append(fetch_one.remote(cand))
    statuses += ray.get(pending)
    return time.perf_counter() - started, statuses.count("kept")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=4.0, help="segment length")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--samples",
        type=Path,
        default=Path(
            os.environ.get("VIDEONET_SAMPLES", Path.home() / ".cache" / "videonet-curate" / "samples")
        )
        / "videos",
    )
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    work = Path(tempfile.mkdtemp(prefix="fetch-bench-"))
    served = work / "served"
    served.mkdir()
    for name in SOURCES:
        shutil.copy(args.samples / name, served / name)
    cands = _candidates(args.clips, args.seconds)
    try:
        with serve(served) as lb:
            opts = FetchOptions(
                url_template=lb.base_url + "/{youtube_id}.mp4",
                min_height=100,
                max_rps=1000.0,
                max_concurrent=64,
            )
            materialize(cands[0], opts, work / "warmup")  # imports, ffmpeg page cache
            loop_s, loop_kept = _loop(cands, opts, work / "loop")

            import ray

            t = time.perf_counter()
            ray.init(num_cpus=max(1, args.workers), include_dashboard=False, logging_level="ERROR")
            ray_start_s = time.perf_counter() - t
            _ray_run(cands[:2], opts, work / "ray-warm", max(1, args.workers))  # start the worker processes
            ray1_s, ray1_kept = _ray_run(cands, opts, work / "ray1", 1)
            rayn_s, rayn_kept = _ray_run(cands, opts, work / "rayn", args.workers)
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n = args.clips
    print(f"machine: {os.cpu_count()} cores; {n} clips of {args.seconds:.0f} s from {', '.join(SOURCES)}")
    print(f"plain loop, 1 process : {loop_s:7.2f} s  {n / loop_s:6.2f} clips/s/core  (kept {loop_kept}/{n})")
    print(f"Ray, 1 worker         : {ray1_s:7.2f} s  {n / ray1_s:6.2f} clips/s      (kept {ray1_kept}/{n})")
    print(
        f"Ray, {args.workers} workers        : {rayn_s:7.2f} s  {n / rayn_s:6.2f} clips/s      (kept {rayn_kept}/{n})"
    )
    print(f"Ray start-up (once)   : {ray_start_s:7.2f} s")
    print(f"ratio Ray(1 worker) / plain loop = {ray1_s / loop_s:.3f}  (Ray orchestration overhead)")
    print(f"ratio plain loop / Ray({args.workers} workers) = {loop_s / rayn_s:.3f}  (speed-up)")


if __name__ == "__main__":
    main()
