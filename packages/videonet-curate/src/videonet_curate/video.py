"""PyAV probing of video files, clip windows and sampling times (frames are read by :mod:`videonet_curate.frames`).

Times are seconds from the first frame of the video stream: a stream whose first packet has a
non-zero pts (MPEG-2 program streams often start at 0.5 s) still runs from 0 to ``duration_s``.
The frame "at" time ``t`` is the first frame whose presentation time is ``>= t``; a time past the
last frame gets the last frame.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
from av.stream import Discard

log = logging.getLogger(__name__)

# How far past the last decodable frame a requested time may lie before we call the file truncated.
END_TOLERANCE_S = 1.0
# The leading bytes of containers ffmpeg reads: a file that starts like one but will not open is damaged.
_CONTAINER_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"),
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (4, b"wide"),
    (4, b"skip"),  # ISO BMFF (mp4/mov)
    (0, b"RIFF"),  # AVI
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"\x00\x00\x01\xba"),  # MPEG program stream
    (0, b"FLV"),
    (0, b"OggS"),
)


class VideoError(ValueError):
    """A file that cannot serve frames; ``reason`` is a manifest reason code."""

    reason = "decode_error"

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path, self.message = str(path), message
        super().__init__(f"{path}: {message}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # picklable across Ray workers
        return type(self), (self.path, self.message)


class NotAVideoError(VideoError):
    """Not a video container: an empty file, text, HTML, an image, or a container without video."""

    reason = "not_a_video"


class VideoDecodeError(VideoError):
    """A video container that is damaged: it does not open fully or its frames do not decode."""

    reason = "decode_error"


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


def _looks_like_a_container(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(16)
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _CONTAINER_SIGNATURES)


@contextmanager
def _open_video(
    path: str | os.PathLike[str], threads: int = 0
) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open ``path`` and its first video stream, mapping FFmpeg failures to typed errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (check the input directory)")
    if path.stat().st_size == 0:
        raise NotAVideoError(path, "empty file (0 bytes); delete it or fetch it again")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        if _looks_like_a_container(path):
            raise VideoDecodeError(
                path,
                f"starts like a video container but FFmpeg cannot read it ({exc.strerror}): "
                "truncated or corrupt (e.g. an MP4 cut before its moov index); download it again",
            ) from exc
        raise NotAVideoError(path, f"FFmpeg does not recognise a container ({exc.strerror})") from exc
    try:
        if not container.streams.video:
            raise NotAVideoError(
                path, f"the {container.format.name} container has no video stream (audio or data only)"
            )
        if container.format.name == "image2" or container.format.name.endswith("_pipe"):
            raise NotAVideoError(path, f"a still image ({container.format.name}), not a video")
        stream = container.streams.video[0]
        # Frame + slice threads: several times faster on h264; decoded pixels are identical.
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        for other in container.streams:
            if other.index != stream.index:
                other.discard = Discard.all  # don't demux audio/subtitle packets we never decode
        yield container, stream
    finally:
        container.close()


def _start_pts(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    if stream.start_time is not None:
        return int(stream.start_time)
    if container.start_time is not None:
        return int(Fraction(container.start_time, av.time_base) / stream.time_base)
    return 0


def _frame_rate(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def _rewound(
    stack: ExitStack, path: str | os.PathLike[str], container: Any, stream: Any, threads: int = 0
) -> tuple[Any, Any]:
    """Back to the first packet: seek to 0, or reopen when the input cannot seek (raw elementary streams)."""
    try:
        container.seek(0)
        return container, stream
    except av.error.FFmpegError:
        return stack.enter_context(_open_video(path, threads))


def _duration_by_demux(container: Any, stream: Any, start_pts: int) -> float:
    """End of the last packet minus start, or packets / fps when packets carry no pts (raw streams)."""
    end, packets = None, 0
    for packet in container.demux(stream):
        if packet.size:
            packets += 1
        if packet.pts is not None:
            end = max(end or start_pts, packet.pts + (packet.duration or 0))
    if end is not None:
        return float((end - start_pts) * stream.time_base)
    return packets / (_frame_rate(stream) or 25.0)


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Open ``path`` and decode its first frame; raise :class:`NotAVideoError` / :class:`VideoDecodeError`.

    Duration: stream duration x time_base, else the container's duration, else the end of the last
    packet found by demuxing the whole file (no decoding).
    """
    with ExitStack() as stack:
        container, stream = stack.enter_context(_open_video(path))
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(path, f"the first video frame does not decode ({exc})") from exc
        if first is None:
            raise VideoDecodeError(path, "the video stream holds no decodable frame (truncated or corrupt)")
        start_pts = _start_pts(container, stream)
        fps = _frame_rate(stream)
        info = dict(
            fps=fps,
            width=int(stream.codec_context.width or first.width),
            height=int(stream.codec_context.height or first.height),
            codec=stream.codec_context.name,
            has_audio=bool(container.streams.audio),
            start_time_s=float(start_pts * stream.time_base),
        )
        if stream.duration:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            # the container's clock may start before this stream's (audio first)
            late_start_s = info["start_time_s"] - float(container.start_time or 0) / av.time_base
            duration = float(container.duration) / av.time_base - max(0.0, late_start_s)
        else:
            duration = _duration_by_demux(*_rewound(stack, path, container, stream), start_pts)
        return VideoInfo(duration_s=duration, num_frames=stream.frames or int(round(duration * fps)), **info)


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


# Reading frames lives in videonet_curate.frames (which imports this module); these names stay importable
# from here, resolved lazily so that either module can be imported first.
_FRAME_READERS = ("decode_all_frames", "read_frames_at")


def __getattr__(name: str) -> Any:
    if name in _FRAME_READERS:
        from videonet_curate import frames

        return getattr(frames, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
