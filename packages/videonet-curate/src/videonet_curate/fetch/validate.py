"""Trust nothing a downloader says: decode every fetched file with PyAV and measure what it holds.

yt-dlp and ffmpeg can report success for an empty or truncated file (a server that ignores Range
requests yields a 262-byte mp4 with no frames), so a fetched clip counts only when its frames decode
and their time span covers the requested segment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import av

from videonet_curate.fetch.taxonomy import Failure, FetchFailed

log = logging.getLogger(__name__)

_TEXT_PREFIXES = (b"<!doctype", b"<html", b"<?xml", b"{", b"<head", b"<body")


@dataclass(frozen=True)
class DecodedClip:
    """What decoding the whole file showed."""

    duration_s: float  # time span covered by decoded frames (first pts to last pts + one frame)
    fps: float
    width: int
    height: int
    codec: str
    frames: int


def _looks_like_text(head: bytes) -> bool:
    start = head.lstrip().lower()
    return start.startswith(_TEXT_PREFIXES) or (bool(start) and all(32 <= b < 127 or b in b"\r\n\t" for b in start))


def decode_clip(path: Path) -> DecodedClip:
    """Decode every video frame of ``path``; raise :class:`FetchFailed` (not_a_video/decode_error) if it fails."""
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        raise FetchFailed(Failure("not_a_video", f"{path.name} is empty (0 bytes)"))
    with open(path, "rb") as handle:
        head = handle.read(512)
    if _looks_like_text(head):
        raise FetchFailed(Failure("not_a_video", f"{path.name} holds text/HTML, not a video ({size} bytes)"))
    try:
        container = av.open(str(path))
    except (av.error.InvalidDataError, av.error.ValueError, av.error.EOFError) as exc:
        raise FetchFailed(Failure("not_a_video", f"{path.name}: not a video container ({exc})")) from exc
    with container:
        if not container.streams.video:
            raise FetchFailed(Failure("not_a_video", f"{path.name}: no video stream ({size} bytes)"))
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        first = last = None
        frames = 0
        step = 1.0 / float(stream.average_rate) if stream.average_rate else 0.0
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                first = frame.time if first is None else min(first, frame.time)
                last = frame.time if last is None else max(last, frame.time)
                frames += 1
        except av.error.FFmpegError as exc:
            raise FetchFailed(
                Failure("decode_error", f"{path.name}: decoding failed after {frames} frames ({exc})")
            ) from exc
        if frames == 0 or first is None or last is None:
            raise FetchFailed(Failure("decode_error", f"{path.name}: no decodable frames ({size} bytes)"))
        return DecodedClip(
            duration_s=float(last - first) + step,
            fps=float(stream.average_rate or 0.0),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            codec=stream.codec_context.name,
            frames=frames,
        )


def check_duration(clip: DecodedClip, expected_s: float | None, tolerance_s: float, name: str) -> None:
    """Raise too_short when the decoded span falls short of the requested segment by more than the tolerance."""
    if expected_s is not None and clip.duration_s + tolerance_s < expected_s:
        raise FetchFailed(
            Failure(
                "too_short",
                f"{name}: {clip.duration_s:.2f}s of frames, segment asks for {expected_s:.2f}s",
            )
        )
