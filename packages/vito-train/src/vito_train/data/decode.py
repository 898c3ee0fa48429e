"""Frames of a video at given times, by seeking with PyAV (no full decode of the file)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)

# Decoding forward from one frame to the next is cheaper than a second seek (which restarts at a
# keyframe) while the two are closer than about a GOP; beyond that, seek again.
RESEEK_AFTER_S = 2.0


class DecodeError(RuntimeError):
    """A clip that could not be opened or yielded no frame at the requested time."""


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side at ``short_side``; never upscales; 0 keeps the size."""
    short = min(width, height)
    if short_side <= 0 or short <= short_side:
        return width, height
    ratio = short_side / short
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def _to_rgb(frame: av.VideoFrame, short_side: int) -> np.ndarray:
    width, height = scaled_size(frame.width, frame.height, short_side)
    return frame.to_ndarray(format="rgb24", width=width, height=height)


def read_frames_at(path: str | Path, times_s: Sequence[float], *, short_side: int = 0) -> list[np.ndarray]:
    """RGB frames (H, W, 3, uint8) shown at ``times_s`` (seconds from the file's start), in input order.

    Each time gets the first frame whose presentation time reaches it (within half a frame); a time
    past the last frame gets the last frame. ``short_side`` downscales during colour conversion.
    """
    order = sorted(range(len(times_s)), key=lambda i: times_s[i])
    out: list[np.ndarray | None] = [None] * len(times_s)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DecodeError(f"{path}: no video stream")
            stream = container.streams.video[0]
            base = stream.time_base
            start_pts = stream.start_time or 0
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            half_frame = 0.5 / rate
            frames = None
            position = -np.inf  # time of the last decoded frame
            last = None
            for i in order:
                target = float(times_s[i])
                if last is not None and position >= target - half_frame:
                    out[i] = last  # same frame serves both views (max_gap_s = 0, or close times)
                    continue
                if frames is None or target - position > RESEEK_AFTER_S:
                    container.seek(
                        start_pts + int(target / base), stream=stream, backward=True, any_frame=False
                    )
                    frames = container.decode(stream)
                for frame in frames:
                    t = (frame.pts - start_pts) * base if frame.pts is not None else position + 1 / rate
                    position, last = float(t), frame
                    if position >= target - half_frame:
                        break
                if last is None:
                    raise DecodeError(f"{path}: no frame decoded at or after {target:.3f}s")
                out[i] = last
            return [_to_rgb(f, short_side) for f in out]  # type: ignore[arg-type]
    except DecodeError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DecodeError(f"{path}: {type(exc).__name__}: {exc}") from exc
