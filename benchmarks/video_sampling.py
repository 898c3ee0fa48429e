"""Seek sampling vs decoding a whole clip, side by side on the real sample videos.

Per video, on its first window of ``--clip-seconds`` (default 10 s): the time to probe it, to read
``--frames`` frames by seeking (``read_frames_at``), to read them in one sequential pass that converts only
the chosen frames (``read_frames_at(seek=False)``), and to decode the whole window into RGB then pick the
frames (``decode_all_frames``, the naive baseline). Each figure is the median of ``--repeats`` runs,
methods interleaved so that machine noise hits them alike.

    python benchmarks/video_sampling.py [--samples DIR] [--repeats 3] [--frames 8] [--max-side 224]
        [--last-window]   # also each long video's last window, where a naive decoder starts from 0
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from videonet_curate.video import (
    clip_windows,
    decode_all_frames,
    probe_video,
    read_frames_at,
    sample_timestamps,
)


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, decoder threads included)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _pick(frames: np.ndarray, times: np.ndarray, stamps: list[float]) -> np.ndarray:
    return frames[np.minimum(np.searchsorted(times, np.asarray(stamps) - 1e-9), len(times) - 1)]


METHODS = ("seek", "sequential", "decode_all")


def bench_window(
    path: Path, start: float, end: float, n_frames: int, repeats: int, max_side: int | None
) -> dict[str, tuple[float, float]]:
    """Median (wall, cpu) of each method reading ``n_frames`` frames from ``[start, end)``."""
    stamps = sample_timestamps(start, end, n_frames)

    def decode_all_then_pick() -> np.ndarray:
        frames, times = decode_all_frames(path, start, end, max_side=max_side)
        return _pick(frames, times, stamps)

    calls = {
        "seek": lambda: read_frames_at(path, stamps, max_side=max_side),
        "sequential": lambda: read_frames_at(path, stamps, max_side=max_side, seek=False),
        "decode_all": decode_all_then_pick,
    }
    # the methods must agree before their times mean anything
    reference = calls["seek"]()
    for name in ("sequential", "decode_all"):
        assert np.array_equal(reference, calls[name]()), f"{path.name} [{start}, {end}): {name} differs"
    runs: dict[str, list[tuple[float, float]]] = {m: [] for m in METHODS}
    for _ in range(repeats):
        for name in METHODS:  # interleaved: load on the machine hits every method alike
            runs[name].append(_timed(calls[name]))
    return {
        m: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for m, v in runs.items()
    }


def _ms(pair: tuple[float, float] | list[float]) -> str:
    return f"{pair[0] * 1e3:.0f} ({pair[1] * 1e3:.0f})"


def _ratio(slow: tuple[float, float] | list[float], fast: tuple[float, float] | list[float]) -> str:
    return f"{slow[0] / fast[0]:.2f}x ({slow[1] / fast[1]:.2f}x)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("VIDEONET_SAMPLES") or str(Path.home() / ".cache/videonet-curate/samples")
    parser.add_argument("--samples", type=Path, default=Path(default), help="samples dir (holds videos/)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--max-side", type=int, default=None, help="downscale on decode (e.g. 224)")
    parser.add_argument(
        "--last-window",
        action="store_true",
        help="also time each video's last window (a naive decoder starts from 0 for it)",
    )
    args = parser.parse_args()

    console = Console(width=160)
    console.print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"{args.frames} frames per {args.clip_seconds:g} s window; median of {args.repeats}; "
        f"max_side={args.max_side}; times in ms, wall (CPU of this process)"
    )
    table = Table(title="video sampling: seek vs one sequential pass vs decode-all-then-pick")
    for col in (
        "video",
        "codec",
        "size",
        "window s",
        "probe",
        "seek",
        "sequential",
        "decode-all",
        "decode-all/seek",
        "sequential/seek",
    ):
        table.add_column(col, justify="left" if col in ("video", "codec", "size", "window s") else "right")
    totals = {m: [0.0, 0.0] for m in (*METHODS, "probe")}
    ratios = []
    for path in sorted((args.samples / "videos").iterdir()):
        info = probe_video(path)
        probe = statistics.median(_timed(lambda p=path: probe_video(p))[0] for _ in range(args.repeats))
        windows = [(0.0, min(args.clip_seconds, info.duration_s))]
        if args.last_window and info.duration_s > 2 * args.clip_seconds:
            windows.append(clip_windows(info.duration_s, args.clip_seconds)[-1])
        for i, (start, end) in enumerate(windows):
            got = bench_window(path, start, end, args.frames, args.repeats, args.max_side)
            for m in METHODS:
                totals[m][0] += got[m][0]
                totals[m][1] += got[m][1]
            totals["probe"][0] += probe if i == 0 else 0.0
            ratios.append(got["decode_all"][0] / got["seek"][0])
            table.add_row(
                path.name if i == 0 else "",
                info.codec,
                f"{info.width}x{info.height}",
                f"{start:g}-{end:.1f}",
                f"{probe * 1e3:.1f}" if i == 0 else "",
                *(_ms(got[m]) for m in METHODS),
                _ratio(got["decode_all"], got["seek"]),
                _ratio(got["sequential"], got["seek"]),
            )
    t = totals
    table.add_row(
        "all (sum)",
        "",
        "",
        "",
        f"{t['probe'][0] * 1e3:.1f}",
        *(_ms(t[m]) for m in METHODS),
        _ratio(t["decode_all"], t["seek"]),
        _ratio(t["sequential"], t["seek"]),
    )
    console.print(table)
    console.print(
        f"decode-all / seek over all windows, wall (CPU): {_ratio(t['decode_all'], t['seek'])} "
        f"(sums of medians); geometric mean of per-window wall ratios "
        f"{statistics.geometric_mean(ratios):.2f}x"
    )


if __name__ == "__main__":
    main()
