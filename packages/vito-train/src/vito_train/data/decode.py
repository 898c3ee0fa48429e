"""Frames of a video at given times for training, read by videonet_curate's PyAV reader.

The one reader seeks to the keyframe before each time and decodes forward (or reads on when the next
time is close); training asks it for the short side it augments from, with one decoder thread per
DataLoader worker (the workers are the parallelism).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from videonet_curate.video import VideoDecodeError
from videonet_curate.video import read_frames_at as read_video_frames


def read_frames_at(path: str | Path, times_s: Sequence[float], *, short_side: int = 0) -> list[np.ndarray]:
    """RGB frames (H, W, 3, uint8) at ``times_s`` (seconds from the first frame), in input order.

    Each time gets the first frame at or after it; a time past the last frame gets the last frame.
    ``short_side`` downscales during colour conversion (0 keeps the size). Every failure, a missing
    file included, is a :class:`~videonet_curate.video.VideoError` naming the file.
    """
    try:
        return list(read_video_frames(path, times_s, short_side=short_side or None, threads=1))
    except OSError as exc:
        raise VideoDecodeError(path, f"{type(exc).__name__}: {exc}") from exc
