"""Trust nothing a downloader says: decode every fetched file with PyAV and measure what it holds.

yt-dlp and ffmpeg can report success for an empty or truncated file (a server that ignores Range
requests yields a 262-byte mp4 with no frames), so a fetched clip counts only when its frames decode
and their time span reaches the ``--min-clip-seconds`` floor. A clip shorter than its segment is kept
with its true length and a note (:func:`shortfall_note`).
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
    return start.startswith(_TEXT_PREFIXES) or (
        bool(start) and all(32 <= b < 127 or b in b"\r\n\t" for b in start)
    )


def _has_container_signature(head: bytes) -> bool:
    """mp4/mov (ftyp box), Matroska/WebM (EBML), AVI (RIFF), FLV, MPEG-TS, MPEG-PS magic bytes."""
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide")
        or head.startswith((b"\x1a\x45\xdf\xa3", b"RIFF", b"FLV", b"\x00\x00\x01\xba"))
        or (len(head) > 188 and head[0] == 0x47 and head[188] == 0x47)
    )


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
    except av.error.FFmpegError as exc:
        # a known container that will not open is a damaged video; anything else is not a video at all
        reason = "decode_error" if _has_container_signature(head) else "not_a_video"
        raise FetchFailed(Failure(reason, f"{path.name}: cannot open the container ({exc})")) from exc
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


def check_min_duration(clip: DecodedClip, min_clip_s: float, name: str) -> None:
    """Raise too_short when the decoded frames span less than the ``--min-clip-seconds`` floor."""
    if clip.duration_s < min_clip_s:
        raise FetchFailed(
            Failure(
                "too_short",
                f"{name}: {clip.duration_s:.2f} s of frames, "
                f"under the --min-clip-seconds {min_clip_s:g} s floor",
            )
        )


def shortfall_note(clip: DecodedClip, expected_s: float | None, tolerance_s: float) -> str | None:
    """A ``detail`` note for a clip kept although shorter than its segment (None when it covers it).

    Such clips are normal: the source video ended before the annotated segment did (over a quarter of
    the CVDF Kinetics-700-2020 test clips are shorter than 10 s). They are kept with their true end.
    """
    if expected_s is None or clip.duration_s + tolerance_s >= expected_s:
        return None
    return (
        f"shorter than its segment: {clip.duration_s:.2f} s of frames of the {expected_s:.2f} s asked for "
        "(the source video ends early); kept with its true end_s"
    )
