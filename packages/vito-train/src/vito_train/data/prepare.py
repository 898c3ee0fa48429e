"""``vito-train prepare``: decode every kept clip once into a frame cache (see cache.py).

Shards are independent jobs run in a process pool; a shard is skipped when its done-marker
exists, so an interrupted prepare resumes where it stopped. ``out`` may be a URI (``s3://bucket/cache``):
shards are encoded locally and each file is uploaded whole (see cache.py). A clip that fails to decode is
recorded in its shard's marker with the reason and the shard goes on; a shard whose worker
fails (or dies) gets no marker and is retried by the next prepare with the same arguments.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videonet_curate.storage import atomic_write_text
from videonet_curate.uri import StorageError, StorageOptions, is_uri, read_text
from videonet_curate.uri import exists as uri_exists
from videonet_curate.video import frame_grid  # the grid pick_frame picks from, in both modes
from vito_train.data.cache import (
    PLAN_FILE,
    CacheError,
    CachePlan,
    cache_path,
    read_done_marker,
    write_global_index,
    write_shard,
)
from vito_train.data.image_sets import ImageSet, ImageSetError, load_image_set
from vito_train.data.pairs import Clip, load_clips

log = logging.getLogger(__name__)

DECODE_CHUNK = 64  # frames per seek-and-decode call: bounds memory on long clips


@dataclass
class PrepareSummary:
    shards: int = 0
    shards_done_before: int = 0
    shards_written: int = 0
    shards_failed: dict[int, str] = field(default_factory=dict)
    frames: int = 0
    clips: int = 0
    clip_failures: list[dict[str, str]] = field(default_factory=list)
    complete: bool = False


def max_side_for(width: int, height: int, short_side: int) -> int | None:
    """The long-side bound that puts the short side at ``short_side`` (None: already that small)."""
    short, long = min(width, height), max(width, height)
    return None if short <= short_side else max(1, round(long * short_side / short))


def encode_clip(clip: Clip, fps: float, short_side: int, quality: int) -> list[tuple[float, bytes]]:
    """(time, JPEG bytes) of the clip's frames on the ``fps`` grid, short side scaled to ``short_side``.

    Frames come from videonet_curate's PyAV reader (seeks, or decodes forward when the next time is
    close, which on a dense grid means one pass); scaling happens in its colour conversion.
    """
    import torch
    from torchvision.io import encode_jpeg

    from videonet_curate.video import probe_video, read_frames_at  # PyAV: only the prepare side needs it

    info = probe_video(clip.path)
    max_side = max_side_for(info.width, info.height, short_side)
    out = []
    times = frame_grid(clip.start_s, clip.end_s, fps)
    for first in range(0, len(times), DECODE_CHUNK):
        chunk = times[first : first + DECODE_CHUNK]
        frames = read_frames_at(clip.path, chunk, max_side=max_side, threads=1)
        for t, frame in zip(chunk, frames, strict=True):
            jpeg = encode_jpeg(
                torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1), quality=quality
            )
            out.append((t, jpeg.numpy().tobytes()))
    return out


class VideoClipEncoder:
    """clip_id -> its (time, JPEG) frames, decoded from the manifest's video (picklable for workers)."""

    def __init__(self, clips: dict[str, Clip], plan: CachePlan) -> None:
        self.clips, self.plan = clips, plan

    def __call__(self, clip_id: str) -> list[tuple[float, bytes]]:
        return encode_clip(self.clips[clip_id], self.plan.fps, self.plan.short_side, self.plan.quality)


class ImageEncoder:
    """Image id (its index in the set, zero-padded) -> one frame at t=0: the image as JPEG, its short
    side scaled down to ``short_side`` (never up). The set is read once per worker process."""

    def __init__(self, spec: str, short_side: int, quality: int) -> None:
        self.spec, self.short_side, self.quality = spec, short_side, quality
        self._images: ImageSet | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}

    def __call__(self, clip_id: str) -> list[tuple[float, bytes]]:
        from torchvision.io import encode_jpeg
        from torchvision.transforms.v2 import functional as TF

        if self._images is None:
            self._images = load_image_set(self.spec, "train")
        image = self._images.image(int(clip_id))
        if min(image.shape[1:]) > self.short_side:
            image = TF.resize(image, self.short_side, antialias=True)
        return [(0.0, encode_jpeg(image.contiguous(), quality=self.quality).numpy().tobytes())]


def image_ids(n: int) -> tuple[str, ...]:
    """Cache ids of an image set's images: their index, zero-padded (file-name safe, sorts in order)."""
    return tuple(f"{i:09d}" for i in range(n))


def build_shard(
    root: str | Path,
    plan: CachePlan,
    shard: int,
    encode: Callable[[str], list[tuple[float, bytes]]],
    options: StorageOptions | None = None,
) -> dict:
    """Encode the shard's clips (or images) and write the shard; per-item failures are recorded."""
    from videonet_curate.video import VideoError

    failures: list[dict[str, str]] = []

    def frames():
        for clip_id in plan.shard_clip_ids(shard):
            try:
                encoded = encode(clip_id)
            except (VideoError, OSError, ValueError, RuntimeError) as exc:
                log.warning("prepare: clip %s skipped: %s", clip_id, exc)
                failures.append({"clip_id": clip_id, "reason": f"{type(exc).__name__}: {exc}"})
                continue
            for t, data in encoded:
                yield clip_id, t, data

    return write_shard(root, shard, frames(), failures, options)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; decode threads come from FFmpeg


def _check_plan(out: Any, plan: CachePlan, options: StorageOptions | None = None) -> None:
    """Write the plan, or make sure an existing one asks for the same cache."""
    path = cache_path(out, PLAN_FILE)
    if not uri_exists(path, options):
        atomic_write_text(path, plan.to_json(), options)
        return
    existing = CachePlan.from_json(read_text(path, options))
    if existing.format != plan.format:
        raise CacheError(
            f"{out} holds a frame cache of format {existing.format!r}; this version prepares "
            f"{plan.format!r} (WebDataset shards). `vito-train run --cache` still reads the old one; "
            "to prepare anew, choose a new --out"
        )
    if existing != plan:
        diffs = [
            k
            for k in ("fps", "short_side", "quality", "clips_per_shard", "clip_ids")
            if getattr(existing, k) != getattr(plan, k)
        ]
        raise CacheError(
            f"{out} holds a cache prepared with other settings ({diffs} differ): rerun with the "
            "same arguments and manifest to resume it, or choose a new --out"
        )


def prepare_cache(
    manifest: str | Path | None,
    out: str | Path,
    *,
    images: str | None = None,
    fps: float = 8.0,
    short_side: int = 256,
    quality: int = 90,
    clips_per_shard: int = 64,
    workers: int = 0,
    on_shard_done: Callable[[int, dict | None], None] | None = None,
    options: StorageOptions | None = None,
) -> PrepareSummary:
    """Build (or finish) the frame cache of a manifest's kept clips in ``out``, or of the training
    split of an image set (``images``: ``imagefolder:DIR``, ``fashion-mnist:DIR``, ...; one frame per
    image, so ``run --cache`` serves two views of one image; ``fps`` does not apply).

    ``workers``: processes (0 = all cores; 1 = in this process). ``on_shard_done(shard, marker)``
    is called as shards finish (marker None for a failed shard), e.g. to advance a progress bar.
    ``out`` may be a URI; ``options`` say how to reach its object storage.
    """
    if (manifest is None) == (images is None):
        raise CacheError("prepare needs exactly one of --manifest (videos) or --images (an image set)")
    if fps <= 0 or short_side < 16 or not 1 <= quality <= 100 or clips_per_shard < 1:
        raise CacheError(
            f"prepare needs fps > 0, short_side >= 16, 1 <= quality <= 100 and clips_per_shard >= 1 "
            f"(got fps={fps}, short_side={short_side}, quality={quality}, "
            f"clips_per_shard={clips_per_shard})"
        )
    out = str(out).rstrip("/") if is_uri(out) else Path(out)
    if images is not None:  # an image set: one "clip" of one frame per image
        image_set = load_image_set(images, "train")
        plan = CachePlan(
            fps=1.0,
            short_side=int(short_side),
            quality=int(quality),
            clips_per_shard=int(clips_per_shard),
            clip_ids=image_ids(len(image_set)),
            manifest=images,
        )
        encode: Callable[[str], list[tuple[float, bytes]]] = ImageEncoder(images, short_side, quality)
    else:
        clips = load_clips(manifest)
        plan = CachePlan(
            fps=float(fps),
            short_side=int(short_side),
            quality=int(quality),
            clips_per_shard=int(clips_per_shard),
            clip_ids=tuple(c.clip_id for c in clips),
            manifest=str(manifest) if is_uri(manifest) else str(Path(manifest).resolve()),
        )
        if len(set(plan.clip_ids)) != len(plan.clip_ids):
            raise CacheError(
                f"manifest {manifest} has duplicate clip_id values among kept rows; fix the manifest"
            )
        encode = VideoClipEncoder({c.clip_id: c for c in clips}, plan)
    if not is_uri(out):
        out.mkdir(parents=True, exist_ok=True)
    _check_plan(out, plan, options)
    summary = PrepareSummary(shards=plan.n_shards)
    todo = []
    for shard in range(plan.n_shards):
        marker = read_done_marker(out, shard, options)
        if marker is not None:
            summary.shards_done_before += 1
            if on_shard_done:
                on_shard_done(shard, marker)
        else:
            todo.append(shard)
    workers = workers or multiprocessing.cpu_count()
    if workers == 1 or len(todo) <= 1:
        for shard in todo:
            _record(summary, shard, lambda s=shard: build_shard(out, plan, s, encode, options), on_shard_done)
    else:
        context = multiprocessing.get_context("spawn")  # no forked torch/FFmpeg state in workers
        with ProcessPoolExecutor(
            min(workers, len(todo)), mp_context=context, initializer=_worker_init
        ) as pool:
            futures = {pool.submit(build_shard, out, plan, shard, encode, options): shard for shard in todo}
            for future in as_completed(futures):
                _record(summary, futures[future], future.result, on_shard_done)
    return _finish(out, plan, summary, options)


def _record(
    summary: PrepareSummary,
    shard: int,
    result: Callable[[], dict],
    on_shard_done: Callable[[int, dict | None], None] | None,
) -> None:
    try:
        marker = result()
    except Exception as exc:  # a worker that died or a shard that could not be written: retried next time
        log.error("prepare: shard %d failed: %s: %s", shard, type(exc).__name__, exc)
        summary.shards_failed[shard] = f"{type(exc).__name__}: {exc}"
        marker = None
    else:
        summary.shards_written += 1
    if on_shard_done:
        on_shard_done(shard, marker)


def _finish(
    out: Any, plan: CachePlan, summary: PrepareSummary, options: StorageOptions | None = None
) -> PrepareSummary:
    markers = [read_done_marker(out, s, options) for s in range(plan.n_shards)]
    done = [m for m in markers if m is not None]
    summary.frames = sum(m["frames"] for m in done)
    summary.clips = sum(m["clips"] for m in done)
    summary.clip_failures = [f for m in done for f in m["failures"]]
    summary.complete = len(done) == plan.n_shards
    if summary.complete:
        write_global_index(out, plan, options)
        atomic_write_text(
            cache_path(out, "summary.json"),
            json.dumps(
                {
                    "frames": summary.frames,
                    "clips": summary.clips,
                    "shards": plan.n_shards,
                    "clip_failures": summary.clip_failures,
                },
                indent=1,
            ),
            options,
        )
    return summary


def prepare_command(
    manifest: Path | None,
    out: str | Path,
    fps: float,
    short_side: int,
    quality: int,
    clips_per_shard: int,
    workers: int,
    images: str | None = None,
    options: StorageOptions | None = None,
) -> int:
    """The CLI body: progress bar, summary table; returns the exit code."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("preparing frame cache", total=None)

        def advance(_shard: int, _marker: dict | None) -> None:
            progress.advance(task)

        try:
            from vito_train.data.pairs import TrainingDataError

            if (manifest is None) == (images is None):
                raise CacheError("pass exactly one of --manifest (videos) or --images (an image set)")
            n_clips = len(load_image_set(images)) if images else len(load_clips(manifest))
            progress.update(task, total=-(-n_clips // clips_per_shard))
            summary = prepare_cache(
                manifest,
                out,
                images=images,
                fps=fps,
                short_side=short_side,
                quality=quality,
                clips_per_shard=clips_per_shard,
                workers=workers,
                on_shard_done=advance,
                options=options,
            )
        except (CacheError, TrainingDataError, ImageSetError, StorageError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            return 2
    table = Table(title=f"vito-train prepare {out}")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key in ("shards", "shards_done_before", "shards_written", "frames", "clips", "complete"):
        table.add_row(key, str(getattr(summary, key)))
    table.add_row("images failed" if images else "clips failed", str(len(summary.clip_failures)))
    table.add_row("shards failed", str(len(summary.shards_failed)))
    console.print(table)
    for failure in summary.clip_failures[:10]:
        console.print(f"  {'image' if images else 'clip'} {failure['clip_id']}: {failure['reason']}")
    for shard, reason in list(summary.shards_failed.items())[:10]:
        console.print(f"  shard {shard}: {reason} (rerun prepare to retry)")
    return 0 if summary.complete and not summary.clip_failures else 1  # 1: rerun, or clips failed
