"""Opening a video with PyAV and reading its clock: the first video stream, its start and frame rate.

Times everywhere in :mod:`videonet_curate.video` are seconds from the first frame of the video stream:
a stream whose first packet has a non-zero pts (MPEG-2 program streams often start at 0.5 s) still runs
from 0 to its duration. Anything a decoded frame needs from the container before it is used (the
stream's display orientation, say) belongs here, next to :func:`open_video`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
from av.stream import Discard

from videonet_curate.video.errors import NotAVideoError, VideoDecodeError

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
_TS_PACKET = 188  # MPEG transport stream: a 0x47 sync byte every 188 bytes


def looks_like_a_container(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a file, 512 are enough) starts like a video container."""
    if any(head[offset : offset + len(magic)] == magic for offset, magic in _CONTAINER_SIGNATURES):
        return True
    return len(head) > _TS_PACKET and head[0] == 0x47 and head[_TS_PACKET] == 0x47


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(512)


@contextmanager
def open_video(
    path: str | os.PathLike[str], threads: int = 0
) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open ``path`` and its first video stream, mapping FFmpeg failures to typed errors.

    ``path`` may be a URI (``s3://bucket/clip.mp4``, see :mod:`videonet_curate.uri`): FFmpeg then reads
    through a buffered fsspec file object, with range requests where it seeks (no full download)."""
    with ExitStack() as stack:
        source, head = _open_source(path, stack)
        with _opened(path, source, head, threads) as opened:
            yield opened


def _open_source(path: str | os.PathLike[str], stack: ExitStack) -> tuple[Any, Any]:
    """(what ``av.open`` reads, a function giving the first 512 bytes) after the existence checks."""
    from videonet_curate.uri import is_uri, resolve, storage_errors

    if is_uri(path):
        fs, key = resolve(path)
        with storage_errors(str(path)):
            if not fs.isfile(key):
                raise FileNotFoundError(f"{path}: no such object (check the input URI)")
            size = fs.size(key)
        if size == 0:
            raise NotAVideoError(path, "empty object (0 bytes); delete it or fetch it again")
        with storage_errors(str(path)):
            handle = stack.enter_context(fs.open(key, "rb", block_size=1 << 21))

        def head() -> bytes:
            handle.seek(0)
            return handle.read(512)

        return handle, head
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (check the input directory)")
    if path.stat().st_size == 0:
        raise NotAVideoError(path, "empty file (0 bytes); delete it or fetch it again")
    return str(path), lambda: _read_head(path)


@contextmanager
def _opened(
    path: str | os.PathLike[str], source: Any, head: Any, threads: int
) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    try:
        container = av.open(source, metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        if looks_like_a_container(head()):
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


def stream_start_pts(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """The pts of the stream's first frame: time 0 of every time in this package."""
    if stream.start_time is not None:
        return int(stream.start_time)
    if container.start_time is not None:
        return int(Fraction(container.start_time, av.time_base) / stream.time_base)
    return 0


def frame_rate(stream: av.video.stream.VideoStream) -> float:
    """The stream's frame rate as stated (average, guessed, base); 0.0 when it states none."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def duration_ticks(container: Any, stream: Any) -> float:
    """The stated duration in stream ticks (0 when neither stream nor container states one)."""
    if stream.duration:
        return float(stream.duration)
    if container.duration:
        return float(container.duration) / av.time_base / float(stream.time_base)
    return 0.0


def rewound(
    stack: ExitStack, path: str | os.PathLike[str], container: Any, stream: Any, threads: int = 0
) -> tuple[Any, Any]:
    """Back to the first packet: seek to 0, or reopen when the input cannot seek (raw elementary streams)."""
    try:
        container.seek(0)
        return container, stream
    except av.error.FFmpegError:
        return stack.enter_context(open_video(path, threads))
