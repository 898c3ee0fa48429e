"""Probing a video file with PyAV: what its first video stream holds, without decoding all of it."""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import av
import av.error

from videonet_curate.video.container import frame_rate, open_video, rewound, stream_start_pts
from videonet_curate.video.errors import VideoDecodeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learned about a file's first video stream."""

    duration_s: float
    fps: float
    width: int
    height: int
    codec: str
    num_frames: int  # from the container when it says, else round(duration_s * fps)
    has_audio: bool
    start_time_s: float = 0.0  # presentation time of the stream's first frame, in the file's clock


def _duration_by_demux(container: Any, stream: Any, first_pts: int) -> float:
    """End of the last packet minus start, or packets / fps when packets carry no pts (raw streams)."""
    end, packets = None, 0
    for packet in container.demux(stream):
        if packet.size:
            packets += 1
        if packet.pts is not None:
            end = max(end or first_pts, packet.pts + (packet.duration or 0))
    if end is not None:
        return float((end - first_pts) * stream.time_base)
    return packets / (frame_rate(stream) or 25.0)


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Open ``path`` and decode its first frame; raise :class:`NotAVideoError` / :class:`VideoDecodeError`.

    Duration: stream duration x time_base, else the container's duration, else the end of the last
    packet found by demuxing the whole file (no decoding).
    """
    with ExitStack() as stack:
        container, stream = stack.enter_context(open_video(path))
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(path, f"the first video frame does not decode ({exc})") from exc
        if first is None:
            raise VideoDecodeError(path, "the video stream holds no decodable frame (truncated or corrupt)")
        first_pts = stream_start_pts(container, stream)
        fps = frame_rate(stream)
        info = dict(
            fps=fps,
            width=int(stream.codec_context.width or first.width),
            height=int(stream.codec_context.height or first.height),
            codec=stream.codec_context.name,
            has_audio=bool(container.streams.audio),
            start_time_s=float(first_pts * stream.time_base),
        )
        if stream.duration:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            # the container's clock may start before this stream's (audio first)
            late_start_s = info["start_time_s"] - float(container.start_time or 0) / av.time_base
            duration = float(container.duration) / av.time_base - max(0.0, late_start_s)
        else:
            duration = _duration_by_demux(*rewound(stack, path, container, stream), first_pts)
        return VideoInfo(duration_s=duration, num_frames=stream.frames or int(round(duration * fps)), **info)


@dataclass(frozen=True)
class VideoScan:
    """What decoding every frame of a file showed (:func:`scan_video`)."""

    duration_s: float  # time span covered by decoded frames (first pts to last pts + one frame)
    fps: float
    width: int
    height: int
    codec: str
    frames: int


def scan_video(path: str | os.PathLike[str]) -> VideoScan:
    """Decode every frame of ``path`` and measure the span they cover; typed errors as :func:`probe_video`.

    For files nobody vouches for (a downloader's output): a header can promise frames a truncated file
    does not hold, so only decoding all of them proves the span.
    """
    with open_video(path) as (container, stream):
        step = 1.0 / float(stream.average_rate) if stream.average_rate else 0.0
        first = last = None
        frames = 0
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                first = frame.time if first is None else min(first, frame.time)
                last = frame.time if last is None else max(last, frame.time)
                frames += 1
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(path, f"decoding failed after {frames} frames ({exc})") from exc
        if frames == 0 or first is None or last is None:
            raise VideoDecodeError(path, "no decodable frames (truncated or corrupt)")
        return VideoScan(
            duration_s=float(last - first) + step,
            fps=float(stream.average_rate or 0.0),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            codec=stream.codec_context.name,
            frames=frames,
        )
