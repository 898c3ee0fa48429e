"""Trust nothing a downloader says: decode every fetched file with PyAV and measure what it holds.

yt-dlp and ffmpeg can report success for an empty or truncated file (a server that ignores Range
requests yields a 262-byte mp4 with no frames), so a fetched clip counts only when its frames decode
and their time span reaches the ``--min-clip-seconds`` floor. A clip shorter than its segment is kept
with its true length and a note (:func:`shortfall_note`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from videonet_curate.fetch.taxonomy import Failure, FetchFailed
from videonet_curate.uri import StorageError, basename, is_uri, resolve, storage_errors
from videonet_curate.video import VideoError, VideoScan, scan_video

log = logging.getLogger(__name__)

_TEXT_PREFIXES = (b"<!doctype", b"<html", b"<?xml", b"{", b"<head", b"<body")


def _looks_like_text(head: bytes) -> bool:
    start = head.lstrip().lower()
    return start.startswith(_TEXT_PREFIXES) or (
        bool(start) and all(32 <= b < 127 or b in b"\r\n\t" for b in start)
    )


def _size_and_head(path: Path | str) -> tuple[int, bytes]:
    """The size of a local file or an object (URI), 0 when absent, and its first 512 bytes."""
    if is_uri(path):
        fs, key = resolve(path)
        with storage_errors(str(path)):
            try:
                size = int(fs.size(key) or 0)
            except FileNotFoundError:
                return 0, b""
            return size, fs.cat_file(key, start=0, end=512) if size else b""
    path = Path(path)
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        return 0, b""
    with open(path, "rb") as handle:
        return size, handle.read(512)


def decode_clip(path: Path | str) -> VideoScan:
    """Decode every video frame of ``path`` (a local file, or an object: a URI, read with range requests);
    raise :class:`FetchFailed` (not_a_video/decode_error, network when the store cannot be read)."""
    name = basename(path)
    try:
        size, head = _size_and_head(path)
        if size == 0:
            raise FetchFailed(Failure("not_a_video", f"{name} is empty (0 bytes)"))
        if _looks_like_text(head):
            raise FetchFailed(Failure("not_a_video", f"{name} holds text/HTML, not a video ({size} bytes)"))
        return scan_video(path)
    except VideoError as exc:
        raise FetchFailed(Failure(exc.reason, f"{name}: {exc.message} ({size} bytes)")) from exc
    except StorageError as exc:  # the store, not the clip: worth another build (--retry-failed network)
        raise FetchFailed(Failure("network", str(exc))) from exc


def check_min_duration(clip: VideoScan, min_clip_s: float, name: str) -> None:
    """Raise too_short when the decoded frames span less than the ``--min-clip-seconds`` floor."""
    if clip.duration_s < min_clip_s:
        raise FetchFailed(
            Failure(
                "too_short",
                f"{name}: {clip.duration_s:.2f} s of frames, "
                f"under the --min-clip-seconds {min_clip_s:g} s floor",
            )
        )


def shortfall_note(clip: VideoScan, expected_s: float | None, tolerance_s: float) -> str | None:
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
