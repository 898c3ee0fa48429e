"""Curation at scale: rebalance of 10 million rows and de-duplication of 1 million 512-d embeddings.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/rebalance_dedup.py            # full sizes
    .venv/bin/python benchmarks/rebalance_dedup.py --rows 100000 --clips 20000  # quick

Goals on the 2-core development machine: rebalance <= 10 s, dedup <= 2 min. Synthetic data:
- rebalance: labels over 1,000 classes with a Zipf-like skew, float32 scores; water-filled to a budget of
  20% of the rows toward the uniform ImageNet target; also the table-level ``apply_rebalance`` on a
  10-million-row Arrow table with the columns it reads and writes;
- dedup: clips drawn around 2,000 "scene" centres (cosine ~0.6 to their centre, so unrelated clips sit below
  the threshold) plus planted groups of near-copies (cosine ~0.98); the bucketed path's recall of the
  planted duplicates is printed, and exact vs bucketed are compared side by side on a subset.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from videonet_curate.dedup import find_duplicates
from videonet_curate.rebalance import apply_rebalance, rebalance
from videonet_curate.targets import uniform_target


def machine() -> str:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()
    return f"{cpu}, {os.cpu_count()} logical cores, load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process over all its threads): on a shared machine the
    CPU seconds say what the work costs, the wall seconds what this run waited."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def bench_rebalance(rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = (rng.zipf(1.3, rows) % 1000).astype(np.int32)
    scores = rng.random(rows, dtype=np.float32)
    budget = rows // 5
    result, pure, pure_cpu = timed(lambda: rebalance(labels, scores, uniform_target(), budget=budget))
    print(
        f"rebalance (numpy) of {rows:,} rows to budget {budget:,}: {pure:.2f} s wall, {pure_cpu:.2f} s CPU "
        f"(TV {result.tv_before:.3f} -> {result.tv_after:.3f}, "
        f"KL {result.kl_before:.3f} -> {result.kl_after:.4f}, "
        f"{int(result.keep.sum()):,} kept)"
    )
    table = pa.table(
        {
            "status": pa.DictionaryArray.from_arrays(np.zeros(rows, np.int8), ["kept"]).cast(pa.string()),
            "reason": pa.nulls(rows, pa.string()),
            "detail": pa.nulls(rows, pa.string()),
            "label": pa.array(labels),
            "score": pa.array(scores),
        }
    )
    (out, _), tabled, tabled_cpu = timed(lambda: apply_rebalance(table, uniform_target(), budget=budget))
    print(
        f"apply_rebalance (Arrow table) of {rows:,} rows: {tabled:.2f} s wall, {tabled_cpu:.2f} s CPU "
        f"({out.num_rows:,} rows, goal <= 10 s)"
    )


def planted_embeddings(
    n: int, dim: int, seed: int, *, centres: int = 2000, group_size: int = 4, duplicate_fraction: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors; returns (x, group id per clip, -1 for clips outside any planted group)."""
    rng = np.random.default_rng(seed)
    centre_vectors = rng.standard_normal((centres, dim), dtype=np.float32)
    centre_vectors /= np.linalg.norm(centre_vectors, axis=1, keepdims=True)
    x = np.empty((n, dim), np.float32)
    chunk = 100_000
    for start in range(0, n, chunk):  # chunked to keep the temporaries small
        stop = min(n, start + chunk)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) / np.sqrt(dim)
        x[start:stop] = 0.6 * centre_vectors[rng.integers(0, centres, stop - start)] + 0.8 * noise
    groups = int(n * duplicate_fraction) // group_size
    group_of = np.full(n, -1, np.int64)
    members = rng.permutation(n)[: groups * group_size].reshape(groups, group_size)
    for column in range(1, group_size):
        noise = rng.standard_normal((groups, dim), dtype=np.float32) / np.sqrt(dim)
        x[members[:, column]] = x[members[:, 0]] + 0.2 * noise
    group_of[members] = np.arange(groups)[:, None]
    return x, group_of


def planted_recall(dup_of: np.ndarray, group_of: np.ndarray) -> tuple[float, int]:
    """Share of planted non-keepers marked duplicate of a clip in their own group; false marks."""
    planted = group_of >= 0
    marked = dup_of >= 0
    same_group = marked & planted & (group_of[np.where(marked, dup_of, 0)] == group_of)
    sizes = np.bincount(group_of[planted])
    expected = int((sizes - 1).sum())
    false_marks = int((marked & ~same_group).sum())
    return float(same_group.sum()) / max(expected, 1), false_marks


def bench_dedup(clips: int, dim: int, subset: int, threshold: float, seed: int) -> None:
    x, group_of = planted_embeddings(clips, dim, seed)
    scores = np.random.default_rng(seed + 1).random(clips)
    result, seconds, cpu = timed(lambda: find_duplicates(x, scores, threshold, exact_max=0))
    recall, false_marks = planted_recall(result.dup_of, group_of)
    print(
        f"dedup (bucketed) of {clips:,} x {dim}-d at cosine >= {threshold}: {seconds:.1f} s wall, "
        f"{cpu:.1f} s CPU "
        f"(goal <= 120 s); {result.groups:,} groups, {result.num_duplicates:,} duplicates; "
        f"planted recall {recall:.2%}, {false_marks} marks outside planted groups"
    )
    xs, ss = x[:subset], scores[:subset]
    exact, exact_s, exact_cpu = timed(lambda: find_duplicates(xs, ss, threshold, exact_max=subset))
    bucketed, bucketed_s, bucketed_cpu = timed(lambda: find_duplicates(xs, ss, threshold, exact_max=0))
    agree = float((exact.dup_of == bucketed.dup_of).mean())
    found = (exact.dup_of >= 0) & (bucketed.dup_of >= 0)
    print(
        f"side by side on {subset:,} clips: exact {exact_s:.1f} s wall / {exact_cpu:.1f} s CPU, bucketed "
        f"{bucketed_s:.1f} s wall / {bucketed_cpu:.1f} s CPU ({exact_cpu / bucketed_cpu:.1f}x less CPU); "
        f"dup_of agrees on {agree:.3%} of clips; bucketed finds "
        f"{found.sum() / max((exact.dup_of >= 0).sum(), 1):.2%} of exact's duplicates"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--clips", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument(
        "--subset", type=int, default=20_000, help="clips for the exact vs bucketed comparison"
    )
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-rebalance", action="store_true")
    parser.add_argument("--skip-dedup", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if not args.skip_rebalance:
        bench_rebalance(args.rows, args.seed)
    if not args.skip_dedup:
        bench_dedup(args.clips, args.dim, min(args.subset, args.clips), args.threshold, args.seed)
    print(f"machine at the end: {machine()}")


if __name__ == "__main__":
    main()
