"""Turn one candidate row into a validated local file: from the mirror, or downloaded and trimmed.

Called inside Ray workers (one candidate at a time) by the pipeline; pure of global state except the
per-process limiter and mirror caches. Every call returns a :class:`Materialized`, never raises for a
per-clip problem: the failure is classified (see :mod:`videonet_curate.fetch.taxonomy`).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from videonet_curate import manifest as mf
from videonet_curate.fetch.mirror import index_mirror
from videonet_curate.fetch.normalize import NormalizeSpec, needs_normalizing, normalize_clip
from videonet_curate.fetch.options import FetchOptions
from videonet_curate.fetch.ratelimit import Limiter, limiter_for, polite
from videonet_curate.fetch.retry import RetryPolicy, run_with_retries
from videonet_curate.fetch.taxonomy import Failure, FetchFailed
from videonet_curate.fetch.validate import check_min_duration, decode_clip, shortfall_note
from videonet_curate.fetch.ytdlp import download
from videonet_curate.safepath import contained, glob_literal, is_safe_name, printable
from videonet_curate.uri import basename, location
from videonet_curate.video import VideoScan

log = logging.getLogger(__name__)

YOUTUBE_WATCH_URL = "https://www.youtube.com/watch?v={youtube_id}"
PARTIAL_DIRNAME = ".partial"  # downloads in progress, under clips_dir; never a final name


@dataclass(frozen=True)
class Materialized:
    """What became of one candidate's bytes. ``start_s``/``end_s`` are times within ``path``."""

    path: Path | str | None  # a URI for a clip read in place from a mirror in object storage
    start_s: float
    end_s: float
    status: str  # mf.STATUS_KEPT (bytes ready), mf.STATUS_FAILED or mf.STATUS_MISSING
    reason: str | None = None
    detail: str | None = None
    attempts: int = 0
    source_start_s: float | None = None
    source_end_s: float | None = None
    duration_s: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None

    def as_row(self) -> dict[str, Any]:
        """Manifest columns (path as a string)."""
        row = asdict(self)
        row["path"] = str(self.path) if self.path is not None else None
        return row

    def get(self, key: str, default: Any = None) -> Any:  # lets the pipeline read it like a mapping
        return getattr(self, key, default)


def clip_filename(clip_id: str) -> str:
    return f"{clip_id}.mp4"


def source_url(candidate: Mapping[str, Any], opts: FetchOptions) -> str:
    """Where a candidate's bytes come from: --url-template, its own url, or its YouTube watch page."""
    if opts.url_template and candidate.get("source") == "kinetics":
        return opts.url_template.format(
            youtube_id=candidate["source_id"],
            clip_id=candidate["clip_id"],
            start=int(candidate["start_s"]) if candidate.get("start_s") is not None else 0,
            end=int(candidate["end_s"]) if candidate.get("end_s") is not None else 0,
        )
    if candidate.get("url"):
        return str(candidate["url"])
    if candidate.get("source") == "kinetics":
        return YOUTUBE_WATCH_URL.format(youtube_id=candidate["source_id"])
    return str(candidate["source_id"])


def template_serves_segments(template: str | None) -> bool:
    """A template naming the clip (or its times) points at files that already are the segment."""
    return bool(template) and any(f in template for f in ("{clip_id}", "{start", "{end"))


def _segment(candidate: Mapping[str, Any]) -> tuple[float, float] | None:
    start, end = candidate.get("start_s"), candidate.get("end_s")
    if start is None or end is None:
        return None
    return float(start), float(end)


def _result(
    candidate: Mapping[str, Any],
    *,
    path: Path | None,
    clip: VideoScan | None,
    failure: Failure | None,
    attempts: int,
    status: str | None = None,
    tolerance_s: float = 0.5,
) -> Materialized:
    segment = _segment(candidate)
    if clip is not None and path is not None:
        return Materialized(
            path=path,
            start_s=0.0,
            end_s=round(clip.duration_s, 3),  # the true end: a clip may be shorter than its segment
            status=mf.STATUS_KEPT,
            detail=shortfall_note(clip, segment[1] - segment[0] if segment else None, tolerance_s),
            attempts=attempts,
            source_start_s=segment[0] if segment else None,
            source_end_s=segment[1] if segment else None,
            duration_s=round(clip.duration_s, 3),
            fps=clip.fps,
            width=clip.width,
            height=clip.height,
            codec=clip.codec,
        )
    assert failure is not None
    return Materialized(
        path=None,
        # the manifest needs times even for failed rows: the source segment, or 0..0 for a whole video
        start_s=segment[0] if segment else 0.0,
        end_s=segment[1] if segment else 0.0,
        status=status or mf.STATUS_FAILED,
        reason=failure.reason,
        detail=failure.detail,
        attempts=attempts,
        source_start_s=segment[0] if segment else None,
        source_end_s=segment[1] if segment else None,
    )


@lru_cache(maxsize=4)
def _cached_mirror_index(root: str) -> dict[str, Path | str]:
    return index_mirror(root)


def _from_mirror(candidate: Mapping[str, Any], opts: FetchOptions) -> Materialized:
    path = candidate.get("mirror_path")
    if path is None:
        path = _cached_mirror_index(str(opts.mirror_dir)).get(candidate["clip_id"])
    if path is None:
        failure = Failure("missing_from_mirror", f"{candidate['clip_id']} is not under {opts.mirror_dir}")
        return _result(candidate, path=None, clip=None, failure=failure, attempts=0, status=mf.STATUS_MISSING)
    path = location(path)  # a URI stays one: the clip is read from the store, never copied
    try:
        clip = decode_clip(path)
        check_min_duration(clip, opts.min_clip_seconds, basename(path))
    except FetchFailed as exc:
        return _result(candidate, path=None, clip=None, failure=exc.failure, attempts=1)
    # mirror files are used in place: they already are the segment (or what the source video held of it)
    return _result(
        candidate, path=path, clip=clip, failure=None, attempts=1, tolerance_s=opts.duration_tolerance_s
    )


def _fetch_once(
    url: str,
    candidate: Mapping[str, Any],
    opts: FetchOptions,
    workdir: Path,
    final: Path,
    limiter: Limiter | None,
) -> VideoScan:
    """One attempt: download (politely), decode, trim/normalise where needed, validate, publish."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    segment = _segment(candidate)
    pre_cut = template_serves_segments(opts.url_template) and candidate.get("source") == "kinetics"
    wanted = segment[1] - segment[0] if segment else None
    with polite(limiter, urlparse(url).hostname or "local"):
        fetched, uncut = download(
            url, workdir, opts, segment=None if (pre_cut or segment is None) else segment
        )
    clip = decode_clip(fetched)
    # a whole stream (or a downloader that ignored the range) is longer than asked for: cut it here
    trim = (
        segment is not None
        and not pre_cut
        and (uncut or clip.duration_s > wanted + 2 * opts.duration_tolerance_s)
    )
    spec = NormalizeSpec(opts.max_fps, opts.short_side, opts.crf, opts.preset)
    if needs_normalizing(clip, spec, trim=trim):
        normalized = workdir / "normalized.mp4"
        normalize_clip(
            fetched,
            normalized,
            spec,
            source_fps=clip.fps,
            start_s=segment[0] if trim else None,
            end_s=segment[1] if trim else None,
        )
        fetched, clip = normalized, decode_clip(normalized)
    check_min_duration(clip, opts.min_clip_seconds, final.name)
    os.replace(fetched, final)  # same filesystem: the final name appears complete or not at all
    return clip


def materialize(
    candidate: Mapping[str, Any],
    opts: FetchOptions,
    clips_dir: Path,
    *,
    limiter: Limiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> Materialized:
    """Make ``clips_dir/{clip_id}.mp4`` hold exactly the candidate's segment (or use the mirror's file)."""
    if not is_safe_name(str(candidate.get("clip_id"))):
        # the readers never let such an id through; a tampered manifest (--retry-failed) might
        failure = Failure(
            "bad_id", f"clip id {printable(candidate.get('clip_id'))!r} is not a safe file name"
        )
        return _result(candidate, path=None, clip=None, failure=failure, attempts=0)
    if opts.mirror_dir is not None:
        return _from_mirror(candidate, opts)
    clips_dir = Path(clips_dir)
    final = contained(clips_dir, clips_dir / clip_filename(candidate["clip_id"]))
    partial_root = clips_dir / PARTIAL_DIRNAME
    for stale in partial_root.glob(glob_literal(candidate["clip_id"], ".*")):  # left by a killed run
        if stale.is_symlink():
            stale.unlink()  # never follow a planted link
        else:
            shutil.rmtree(contained(partial_root, stale), ignore_errors=True)
    if final.exists():  # finished before a crash: keep it if it still decodes
        try:
            clip = decode_clip(final)
            return _result(
                candidate,
                path=final,
                clip=clip,
                failure=None,
                attempts=0,
                tolerance_s=opts.duration_tolerance_s,
            )
        except FetchFailed:
            final.unlink(missing_ok=True)
    url = source_url(candidate, opts)
    limiter = limiter or limiter_for(opts.max_rps, opts.max_concurrent, opts.limiter_actor)
    workdir = contained(partial_root, partial_root / f"{candidate['clip_id']}.{os.getpid()}")
    policy = RetryPolicy(opts.max_retries, opts.backoff_base_s, opts.backoff_max_s, opts.max_retry_after_s)
    try:
        outcome = run_with_retries(
            lambda _attempt: _fetch_once(url, candidate, opts, workdir, final, limiter),
            policy,
            rng=rng,
            sleep=sleep,
            label=str(candidate["clip_id"]),
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if outcome.failure is not None:
        return _result(candidate, path=None, clip=None, failure=outcome.failure, attempts=outcome.attempts)
    return _result(
        candidate,
        path=final,
        clip=outcome.value,
        failure=None,
        attempts=outcome.attempts,
        tolerance_s=opts.duration_tolerance_s,
    )
