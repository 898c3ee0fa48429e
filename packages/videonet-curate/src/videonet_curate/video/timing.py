"""Pure timing rules: clip windows, evenly spaced sampling times, and which frame a time picks.

Times are seconds from the first frame of the video stream (see :mod:`videonet_curate.video.container`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def clip_windows(
    duration_s: float, clip_seconds: float, min_clip_seconds: float = 1.0
) -> list[tuple[float, float]]:
    """Consecutive, non-overlapping ``(start_s, end_s)`` windows of ``clip_seconds`` covering the video.

    - a video shorter than ``min_clip_seconds`` gives no window (the caller records ``too_short``);
    - a video shorter than ``clip_seconds`` gives one window covering all of it;
    - the tail after the last full window becomes its own window when it lasts at least half a clip
      (and ``min_clip_seconds``), else it is merged into the previous window, which then runs to the end.
    """
    if clip_seconds <= 0:
        raise ValueError(f"clip_seconds must be positive, got {clip_seconds}")
    if not math.isfinite(duration_s) or duration_s < max(min_clip_seconds, 1e-9):
        return []
    full = int(math.floor(duration_s / clip_seconds + 1e-9))
    if full == 0:
        return [(0.0, float(duration_s))]
    windows = [(round(i * clip_seconds, 6), round((i + 1) * clip_seconds, 6)) for i in range(full)]
    tail = duration_s - full * clip_seconds
    if tail > 1e-6:
        if tail >= max(clip_seconds / 2, min_clip_seconds):
            windows.append((windows[-1][1], float(duration_s)))
        else:
            windows[-1] = (windows[-1][0], float(duration_s))
    return windows


def sample_timestamps(start_s: float, end_s: float, n: int) -> list[float]:
    """``n`` evenly spaced times: the centres of ``n`` equal bins, t_i = start + (i + 1/2)(end - start)/n."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if end_s < start_s:
        raise ValueError(f"end_s ({end_s}) is before start_s ({start_s})")
    step = (end_s - start_s) / n
    return [start_s + (i + 0.5) * step for i in range(n)]


def frame_grid_length(start_s: float, end_s: float, fps: float) -> int:
    """How many grid times ``start_s + k / fps`` lie within ``[start_s, end_s]`` (at least one)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return max(1, int(math.floor((end_s - start_s) * fps + 1e-9)) + 1)


def frame_grid(start_s: float, end_s: float, fps: float) -> list[float]:
    """A clip's frame grid: the times ``start_s + k / fps`` for k = 0, 1, ... within ``[start_s, end_s]``."""
    return [start_s + k / fps for k in range(frame_grid_length(start_s, end_s, fps))]


@dataclass(frozen=True)
class FramePick:
    """The grid frame a time picks: its index on the clip's frame grid and its grid time."""

    index: int
    time_s: float


def pick_frame(start_s: float, end_s: float, fps: float, t: float) -> FramePick:
    """The frame of the clip ``[start_s, end_s]`` that time ``t`` picks, on the clip's ``fps`` frame grid.

    The one frame-picking rule shared by every frame source: the grid time nearest ``t`` (a tie goes to
    the earlier one), clamped to the clip. A source that reads video then reads the frame at the picked
    ``time_s`` (the first frame at or after it); a source that caches the grid reads frame ``index``.
    So both sources hand out the same frame for the same clip and time.
    """
    n = frame_grid_length(start_s, end_s, fps)
    # ceil(x - 1/2): the nearest integer to x, ties rounding down (round() would round ties to even)
    index = min(max(math.ceil((t - start_s) * fps - 0.5), 0), n - 1)
    return FramePick(index=index, time_s=start_s + index / fps)
