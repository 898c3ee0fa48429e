"""Video reading with PyAV, in one place: opening and timing, probing, frame reading, the frame-picking rule.

- :mod:`.errors`: one error hierarchy (:class:`VideoError`, with a manifest ``reason`` code);
- :mod:`.container`: opening a file's first video stream and reading its clock;
- :mod:`.probe`: what a file holds (:func:`probe_video`), or every frame decoded (:func:`scan_video`);
- :mod:`.reader`: frames at given times (:func:`read_frames_at`, ``max_side`` or ``short_side``);
- :mod:`.timing`: pure rules: clip windows, sampling times, and :func:`pick_frame`.

Times are seconds from the first frame of the video stream. The frame "at" time ``t`` is the first
frame whose presentation time is ``>= t``; a time past the last frame gets the last frame.
"""

from videonet_curate.video.container import END_TOLERANCE_S
from videonet_curate.video.errors import NotAVideoError, VideoDecodeError, VideoError
from videonet_curate.video.probe import VideoInfo, VideoScan, probe_video, scan_video
from videonet_curate.video.reader import decode_all_frames, read_frames_at
from videonet_curate.video.timing import (
    FramePick,
    clip_windows,
    frame_grid,
    frame_grid_length,
    pick_frame,
    sample_timestamps,
)

__all__ = [
    "END_TOLERANCE_S",
    "FramePick",
    "NotAVideoError",
    "VideoDecodeError",
    "VideoError",
    "VideoInfo",
    "VideoScan",
    "clip_windows",
    "decode_all_frames",
    "frame_grid",
    "frame_grid_length",
    "pick_frame",
    "probe_video",
    "read_frames_at",
    "sample_timestamps",
    "scan_video",
]
