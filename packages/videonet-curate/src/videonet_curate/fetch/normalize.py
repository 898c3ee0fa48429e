"""Normalise a fetched clip with ffmpeg (via ffmpeg-python): trim, cap fps, bound the short side, H.264.

Only when needed: a clip that already is H.264 within the limits and needs no trim is left alone, so a
segment that yt-dlp already cut and re-encoded is not encoded twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from videonet_curate.fetch.taxonomy import Failure, FetchFailed
from videonet_curate.video import VideoScan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NormalizeSpec:
    max_fps: float | None = 30.0
    short_side: int | None = 360
    crf: int = 23
    preset: str = "veryfast"


def needs_normalizing(clip: VideoScan, spec: NormalizeSpec, *, trim: bool) -> bool:
    """Whether ``clip`` must be re-encoded to honour ``spec`` (or cut, when ``trim``)."""
    too_fast = spec.max_fps is not None and clip.fps > spec.max_fps + 0.01
    too_big = spec.short_side is not None and min(clip.width, clip.height) > spec.short_side
    return trim or too_fast or too_big or clip.codec != "h264"


def scale_expression(short_side: int) -> tuple[str, str]:
    """ffmpeg scale w/h expressions that shrink the shorter side to ``short_side`` (never enlarge), even sizes."""
    width = f"if(lt(iw,ih),min({short_side},iw),-2)"
    height = f"if(lt(iw,ih),-2,min({short_side},ih))"
    return width, height


def video_filter(spec: NormalizeSpec) -> str | None:
    """The ffmpeg ``-vf`` chain for ``spec``: fps capped (never raised), short side bounded (never enlarged)."""
    parts = []
    if spec.max_fps is not None:
        parts.append(f"fps='min({spec.max_fps},source_fps)'")
    if spec.short_side is not None:
        width, height = scale_expression(spec.short_side)
        parts.append(f"scale='{width}':'{height}'")
    return ",".join(parts) or None


def ffmpeg_output_args(spec: NormalizeSpec) -> list[str]:
    """Output arguments that make the cutting ffmpeg (run by yt-dlp) also normalise, in the same encode."""
    args = ["-an", "-c:v", "libx264", "-preset", spec.preset, "-crf", str(spec.crf), "-pix_fmt", "yuv420p"]
    chain = video_filter(spec)
    return args + (["-vf", chain] if chain else [])


def normalize_clip(
    src: Path,
    dst: Path,
    spec: NormalizeSpec,
    *,
    source_fps: float,
    start_s: float | None = None,
    end_s: float | None = None,
) -> None:
    """Write ``src`` (cut to ``start_s..end_s`` when given) as H.264 mp4 without audio to ``dst``."""
    input_args: dict[str, float] = {}
    if start_s:
        input_args["ss"] = start_s  # input-side seek: fast, and exact because we re-encode
    if end_s is not None:
        input_args["t"] = end_s - (start_s or 0.0)
    stream = ffmpeg.input(str(src), **input_args).video
    if spec.max_fps is not None and source_fps > spec.max_fps + 0.01:
        # only ever lower the rate: a 25 fps clip stays 25 under a cap of 30
        stream = stream.filter("fps", fps=spec.max_fps)
    if spec.short_side is not None:
        width, height = scale_expression(spec.short_side)
        stream = stream.filter("scale", width, height)
    output = ffmpeg.output(
        stream,
        str(dst),
        vcodec="libx264",
        crf=spec.crf,
        preset=spec.preset,
        pix_fmt="yuv420p",
        movflags="+faststart",
        an=None,
        f="mp4",
    )
    try:
        output.overwrite_output().run(capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        raise FetchFailed(
            Failure("decode_error", f"ffmpeg could not normalise {src.name}: {' / '.join(tail)}")
        ) from exc
