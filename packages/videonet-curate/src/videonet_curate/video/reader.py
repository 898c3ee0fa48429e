"""Seek-based frame sampling with PyAV: the frames of a video at given times, decoded as little as possible.

Times are seconds from the first frame of the video stream (see :mod:`videonet_curate.video.container`).
The frame "at" time ``t`` is the first frame whose presentation time is ``>= t``; a time past the last frame gets
the last frame. :func:`read_frames_at` seeks when the keyframe index says a jump skips enough video, and
falls back to one sequential pass where a file cannot seek or its timestamps cannot be trusted.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Any

import av
import av.error
import numpy as np

from videonet_curate.video.container import (
    END_TOLERANCE_S,
    duration_ticks,
    frame_rate,
    open_video,
    rewound,
    stream_start_pts,
)
from videonet_curate.video.errors import VideoDecodeError

log = logging.getLogger(__name__)

# Without a trustworthy keyframe index, decode forward rather than seek when the next target is this close.
FORWARD_DECODE_S = 2.0
# With an index, seek only when it skips at least this much video: a seek flushes the (threaded) decoder
# and re-reads packets, which costs more than decoding a few frames forward.
MIN_SEEK_SKIP_S = 1.0


def output_size(
    width: int, height: int, *, max_side: int | None = None, short_side: int | None = None
) -> tuple[int, int]:
    """``(width, height)`` scaled, keeping the aspect, so the long side is at most ``max_side`` or the
    short side is ``short_side``; never upscales; None (or 0) keeps the size."""
    if max_side and short_side:
        raise ValueError("pass max_side or short_side, not both")
    side, bound = (max(width, height), max_side) if max_side else (min(width, height), short_side)
    if not bound or side <= bound:
        return width, height
    scale = bound / side
    return max(1, round(width * scale)), max(1, round(height * scale))


def upright(image: np.ndarray, rotation: float) -> np.ndarray:
    """``image`` (H, W, C) turned as its display matrix asks, as players and ffmpeg show it.

    ``rotation`` is :attr:`av.VideoFrame.rotation`: degrees counter-clockwise, from the display-matrix
    side data phones write instead of rotating the pixels. Rounded to quarter turns (the only ones
    cameras write); a mirroring in the matrix is not applied.
    """
    quarter_turns = round(float(rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns else image


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    # Scaling inside swscale's colour conversion: a 1080p frame is never converted at full size.
    # ``size`` bounds the coded picture; a quarter turn swaps its sides, which max_side/short_side allow.
    rgb = frame.to_ndarray(width=size[0], height=size[1], format="rgb24", interpolation="AREA")
    return upright(rgb, getattr(frame, "rotation", 0))


# (width, height) of a decoded frame -> (width, height) of the RGB array handed out
SizeRule = Callable[[int, int], tuple[int, int]]


class _SeekUnsupported(Exception):
    """Seeking does not work for this file; read it in one pass instead."""


class _SeekingReader:
    """Serves sorted target pts by seeking to the keyframe before each, or decoding forward when cheaper."""

    def __init__(
        self, path: str | os.PathLike[str], container: Any, stream: Any, start_pts: int, duration_ticks: float
    ) -> None:
        self.path, self.container, self.stream, self.start_pts = path, container, stream, start_pts
        self.frames: Iterator[av.VideoFrame] | None = None
        self.current: av.VideoFrame | None = None  # the last frame decoded
        entries = stream.index_entries
        self.keyframes = sorted(e.timestamp for e in entries if e.is_keyframe) if entries is not None else []
        self.index_end = max((e.timestamp for e in entries), default=None) if entries is not None else None
        self.forward_ticks = FORWARD_DECODE_S / float(stream.time_base)
        self.min_skip_ticks = MIN_SEEK_SKIP_S / float(stream.time_base)
        self.target = start_pts  # the pts being decoded towards
        # below this pts a later frame surely exists, so a target there never falls back to "the last frame"
        two_frames = 2 / (frame_rate(stream) or 25.0) / float(stream.time_base)
        self.skip_bound = start_pts + duration_ticks - two_frames

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Decode from the current demuxer position, skipping frames nobody needs.

        A non-reference frame (e.g. most B-frames) before the target can be neither the answer nor a
        reference of a later frame, so the decoder may drop it (``skip_frame = NONREF``, set per packet).
        """
        context = self.stream.codec_context
        for packet in self.container.demux(self.stream):
            skip = packet.pts is not None and packet.pts < self.target <= self.skip_bound
            context.skip_frame = "NONREF" if skip else "DEFAULT"
            yield from packet.decode()

    def _next(self) -> av.VideoFrame | None:
        try:
            frame = next(self.frames, None)
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(self.path, f"decoding failed ({exc})") from exc
        if frame is not None:
            if frame.pts is None:
                raise _SeekUnsupported("frames carry no pts")
            if self.current is not None and frame.pts <= self.current.pts:
                raise _SeekUnsupported("frame pts go backwards")
            self.current = frame
        return frame

    def _seek(self, pts: int) -> av.VideoFrame | None:
        try:
            if pts <= self.start_pts:
                # rewind the whole file: seeking to the first pts overshoots in some demuxers (MPEG-PS)
                self.container.seek(0)
            else:
                self.container.seek(pts, backward=True, any_frame=False, stream=self.stream)
        except av.error.FFmpegError as exc:
            raise _SeekUnsupported(str(exc)) from exc
        self.frames = self._decode()
        self.current = None
        return self._next()

    def _should_seek(self, target: int) -> bool:
        if self.current is None:
            return True
        here = self.current.pts
        if self.keyframes and self.index_end is not None and self.index_end >= target:
            # the index covers the target: seek only if the last keyframe before it lies well ahead of here
            i = bisect.bisect_right(self.keyframes, target) - 1
            return i >= 0 and self.keyframes[i] - here > self.min_skip_ticks
        return target - here > self.forward_ticks

    def _land_before(self, target: int) -> av.VideoFrame | None:
        """Seek so that the first decoded frame is at or before ``target`` (some demuxers overshoot)."""
        back_s = 0.0
        while True:
            offset = target - int(back_s / float(self.stream.time_base))
            first = self._seek(offset)
            if first is None or first.pts <= target or offset <= self.start_pts:
                return first
            back_s = max(1.0, 2 * back_s)  # overshot: back off 1, 2, 4 ... s, then rewind

    def frame_at(self, target: int) -> av.VideoFrame:
        if self.current is not None and self.current.pts >= target:
            # targets come sorted, so every frame before `current` lies before the previous target
            return self.current
        self.target = target
        if self._should_seek(target):
            frame = self._land_before(target)
            if frame is None:
                at_s = float((target - self.start_pts) * self.stream.time_base)
                raise VideoDecodeError(self.path, f"no frame decodes at or after {at_s:.2f} s (truncated?)")
        last = self.current
        while self.current.pts < target:
            if self._next() is None:
                break
            last = self.current
        if last.pts < target:
            gap_s = float((target - last.pts) * self.stream.time_base)
            if gap_s > END_TOLERANCE_S:
                end_s = float((last.pts - self.start_pts) * self.stream.time_base)
                raise VideoDecodeError(
                    self.path,
                    f"decodable frames end at {end_s:.2f} s, {gap_s:.2f} s before the requested "
                    "time: the file is truncated or its stated duration is wrong",
                )
        return last


def _target_pts(stream, start_pts: int, t: float) -> int:
    # ceil: the frame at t is the first at or after t (the epsilon absorbs float noise in t)
    return start_pts + max(0, math.ceil(t / float(stream.time_base) - 1e-6))


def _pts_out_of_order(container: Any, stream: Any) -> bool:
    """True for files whose packets carry decode order as pts (pts == dts) while the codec reorders
    frames (B-frames): the decoder then hands out frame pts that go backwards, so pts cannot be trusted.
    Reads the first packets: rewind before decoding."""
    if not stream.codec_context.has_b_frames:
        return False
    first = zip(container.demux(stream), range(64), strict=False)
    packets = [p for p, _ in first if p.pts is not None and p.size]
    return len(packets) > 2 and all(p.pts == p.dts for p in packets)


@contextmanager
def _decode_from_start(
    path: str | os.PathLike[str], threads: int = 0
) -> Iterator[tuple[Any, Any, Iterator[tuple[av.VideoFrame, int]]]]:
    """``(container, stream, frames)`` where ``frames`` yields ``(frame, pts)`` from the first frame on.

    When pts cannot be trusted (:func:`_pts_out_of_order`), the k-th frame out of the decoder (output order
    is presentation order) gets the k-th smallest packet pts; a frame without pts (raw streams) gets one
    extrapolated from the frame rate.
    """
    with ExitStack() as stack:
        container, stream = stack.enter_context(open_video(path, threads))
        reorder = _pts_out_of_order(container, stream)
        container, stream = rewound(stack, path, container, stream, threads)
        sorted_pts: list[int] = []
        if reorder:
            sorted_pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size)
            container, stream = rewound(stack, path, container, stream, threads)
        ticks_per_frame = 1.0 / ((frame_rate(stream) or 25.0) * float(stream.time_base))
        start_pts = stream_start_pts(container, stream)

        def frames() -> Iterator[tuple[av.VideoFrame, int]]:
            previous = None
            try:
                for k, frame in enumerate(container.decode(stream)):
                    if k < len(sorted_pts):
                        pts = sorted_pts[k]
                    elif frame.pts is not None:
                        pts = frame.pts
                    else:
                        pts = int(previous + ticks_per_frame) if previous is not None else start_pts
                    previous = pts
                    yield frame, pts
            except av.error.FFmpegError as exc:
                raise VideoDecodeError(path, f"decoding failed ({exc})") from exc

        yield container, stream, frames()


def _read_sequential(
    path: str | os.PathLike[str], timestamps: Sequence[float], size_for: SizeRule, threads: int
) -> np.ndarray:
    """One decode pass keeping, for each time, the first frame at or after it (the fallback path)."""
    with _decode_from_start(path, threads) as (container, stream, frames):
        start_pts = stream_start_pts(container, stream)
        order = sorted(range(len(timestamps)), key=lambda i: timestamps[i])
        targets = [_target_pts(stream, start_pts, timestamps[i]) for i in order]
        out: list[np.ndarray | None] = [None] * len(timestamps)
        size = None
        k, last, last_pts = 0, None, None
        for frame, pts in frames:
            size = size or size_for(frame.width, frame.height)
            image = None
            while k < len(order) and targets[k] <= pts:
                image = image if image is not None else _to_rgb(frame, size)
                out[order[k]] = image
                k += 1
            if k == len(order):
                break
            last, last_pts = frame, pts
        if k < len(order):
            if last is None:
                raise VideoDecodeError(path, "no frame decodes (truncated or corrupt)")
            gap_s = float((targets[-1] - last_pts) * stream.time_base)
            if gap_s > END_TOLERANCE_S:
                end_s = float((last_pts - start_pts) * stream.time_base)
                raise VideoDecodeError(path, f"decodable frames end at {end_s:.2f} s (truncated file?)")
            image = _to_rgb(last, size)
            for i in order[k:]:
                out[i] = image
        return np.stack(out)


def read_frames_at(
    path: str | os.PathLike[str],
    timestamps: Sequence[float],
    *,
    max_side: int | None = None,
    short_side: int | None = None,
    threads: int = 0,
    seek: bool = True,
) -> np.ndarray:
    """RGB frames ``(N, H, W, 3) uint8`` at ``timestamps`` (seconds from the first frame), in input order.

    Seeks to the keyframe before each time and decodes forward to the first frame at or after it; skips
    the seek when no keyframe lies in between (decoding on is cheaper). Falls back to one sequential pass
    when the format cannot seek. ``max_side`` (a bound on the long side) or ``short_side`` (the short
    side's length) downscales during colour conversion, keeping the aspect (:func:`output_size`).
    ``threads``: decoder threads (0 = FFmpeg picks). ``seek=False`` forces the sequential pass.
    """
    if len(timestamps) == 0:
        raise ValueError("timestamps is empty")
    size_for = partial(output_size, max_side=max_side, short_side=short_side)
    if not seek:
        return _read_sequential(path, timestamps, size_for, threads)
    with open_video(path, threads) as (container, stream):
        start_pts = stream_start_pts(container, stream)
        size = size_for(stream.codec_context.width, stream.codec_context.height)
        if _pts_out_of_order(container, stream):
            log.info("%s: frame pts are in decode order; reading sequentially", path)
            return _read_sequential(path, timestamps, size_for, threads)
        reader = _SeekingReader(path, container, stream, start_pts, duration_ticks(container, stream))
        order = sorted(range(len(timestamps)), key=lambda i: timestamps[i])
        out: list[np.ndarray | None] = [None] * len(timestamps)
        try:
            previous = None
            for i in order:
                frame = reader.frame_at(_target_pts(stream, start_pts, timestamps[i]))
                if previous is not None and frame is previous[0]:
                    out[i] = previous[1]
                    continue
                if not all(size):  # the codec did not state a size: take the frame's
                    size = size_for(frame.width, frame.height)
                image = _to_rgb(frame, size)
                previous = (frame, image)
                out[i] = image
            return np.stack(out)
        except _SeekUnsupported as exc:
            log.info("%s: seeking failed (%s); reading sequentially", path, exc)
    return _read_sequential(path, timestamps, size_for, threads)


def decode_all_frames(
    path: str | os.PathLike[str],
    start_s: float = 0.0,
    end_s: float | None = None,
    *,
    max_side: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(frames, times)``: every frame with time in ``[start_s, end_s)``, decoded in one pass from the start.

    The reference (and benchmark baseline) for :func:`read_frames_at`; eval reads short clips whole with it.
    """
    size_for = partial(output_size, max_side=max_side)
    with _decode_from_start(path) as (container, stream, frames):
        start_pts = stream_start_pts(container, stream)
        images, times = [], []
        size = None
        for frame, pts in frames:
            time = float((pts - start_pts) * stream.time_base)
            if end_s is not None and time >= end_s:
                break
            if time < start_s:
                continue
            size = size or size_for(frame.width, frame.height)
            images.append(_to_rgb(frame, size))
            times.append(time)
    if not images:
        raise VideoDecodeError(path, f"no frame in [{start_s}, {end_s})")
    return np.stack(images), np.asarray(times)
