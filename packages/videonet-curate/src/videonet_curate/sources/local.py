"""Candidate clips from a directory of video files.

Every regular file under the input directory is a candidate (hidden files and directories excepted);
no extension filter: :func:`videonet_curate.video.probe_video` decides what is a video, and what is not
gets a ``failed`` row instead of silently vanishing.

Clip ids have the form ``{slug}-{hash8}-{start_ms:09d}``, e.g. ``videos_cockatoo_mp4-3f2a91c0-000010000``:

- ``slug``: the path relative to the input directory with every run of characters outside
  ``[A-Za-z0-9]`` replaced by ``_`` (at most 80 characters, keeping the end, where the file name is);
- ``hash8``: the first 8 hex digits of SHA-1 of the relative POSIX path, so paths whose slugs collide
  (``a b.mp4`` and ``a_b.mp4``) keep distinct ids;
- ``start_ms``: the window start in milliseconds, zero-padded so ids sort in time order.

The id depends only on the relative path and the window start: rerunning on the same tree gives the
same ids, and moving the input directory elsewhere does not change them.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from videonet_curate import manifest as mf
from videonet_curate.safepath import is_inside, printable
from videonet_curate.sources.base import Gathered, Source, SourceInputError
from videonet_curate.uri import StorageError, is_under, is_uri, join, list_files, relative
from videonet_curate.video import VideoError, VideoInfo, clip_windows, probe_video

SOURCE = "local"
SLUG_MAX_CHARS = 80


def iter_video_files(input_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Every regular file under ``input_dir``, recursively, sorted by relative path; hidden entries skipped.

    Directory symlinks are not followed (no cycles); file symlinks are yielded. A URI (``s3://b/media``)
    yields the URIs of the objects under it, by the same rules (no key part starting with ``.``).
    """
    if is_uri(input_dir):
        yield from (
            join(input_dir, rel)
            for rel in list_files(input_dir)
            if not any(part.startswith(".") for part in rel.split("/"))
        )
        return
    root = Path(input_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory; pass --input DIR, a directory of video files")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # prune hidden directories
        for name in filenames:
            path = Path(dirpath) / name
            if not name.startswith(".") and path.is_file():
                found.append(path)
    # one order for the whole tree, by relative path, whatever the file system lists first
    yield from sorted(found, key=lambda p: p.relative_to(root).as_posix())


def relative_source_id(path: str | os.PathLike[str], input_dir: str | os.PathLike[str]) -> str:
    """``path`` relative to ``input_dir`` as a POSIX string (the local source's ``source_id``)."""
    if is_uri(path):
        return relative(path, input_dir)
    return Path(os.path.relpath(Path(path), Path(input_dir))).as_posix()


def local_clip_id(source_id: str, start_s: float) -> str:
    """``{slug}-{hash8}-{start_ms:09d}`` (see the module docstring)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", source_id).strip("_")[-SLUG_MAX_CHARS:].lstrip("_") or "file"
    # surrogateescape: a file name that is not UTF-8 still hashes to its own bytes' id
    digest = hashlib.sha1(source_id.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{slug}-{digest}-{round(start_s * 1000):09d}"


def local_candidates(
    path: str | os.PathLike[str],
    info: VideoInfo,
    input_dir: str | os.PathLike[str],
    clip_seconds: float,
    *,
    min_clip_seconds: float = 1.0,
) -> list[dict[str, Any]]:
    """One candidate row per :func:`~videonet_curate.video.clip_windows` window of a probed file.

    Empty when the video is shorter than ``min_clip_seconds``.
    """
    source_id = relative_source_id(path, input_dir)
    return [
        {
            "clip_id": local_clip_id(source_id, start),
            "source": SOURCE,
            "source_id": source_id,
            "start_s": start,
            "end_s": end,
            "duration_s": info.duration_s,
            "fps": info.fps,
            "width": info.width,
            "height": info.height,
            "codec": info.codec,
            "detail": _short_window_note(start, end, clip_seconds, info.duration_s),
        }
        for start, end in clip_windows(info.duration_s, clip_seconds, min_clip_seconds)
    ]


def _short_window_note(start: float, end: float, clip_seconds: float, duration_s: float) -> str | None:
    """Kept rows of windows shorter than --clip-seconds say why (the video ends there)."""
    if end - start >= clip_seconds - 1e-6:
        return None
    return (
        f"{end - start:.2f} s window, shorter than --clip-seconds {clip_seconds:g}: "
        f"the video ends at {duration_s:.2f} s"
    )


def is_utf8_name(source_id: str) -> bool:
    """False for a path that is not valid UTF-8 (Python decodes such bytes to lone surrogates)."""
    try:
        source_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def bad_name_row(path: str | os.PathLike[str], input_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``failed``/``bad_id`` row of a file whose name is not valid UTF-8.

    Such a name cannot be stored in the manifest (Parquet strings are UTF-8) nor read back by the
    trainer, so the file is recorded, under a printable ``source_id`` (bytes as ``\\xNN``), and skipped.
    """
    raw = relative_source_id(path, input_dir)
    shown = raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return {
        "clip_id": local_clip_id(raw, 0.0),
        "source": SOURCE,
        "source_id": shown,
        "start_s": 0.0,
        "end_s": 0.0,
        "status": mf.STATUS_FAILED,
        "reason": "bad_id",
        "detail": f"file name {printable(shown)!r} is not valid UTF-8; "
        "rename it (e.g. convmv -f latin1 -t utf-8)",
    }


def failure_row(
    path: str | os.PathLike[str],
    input_dir: str | os.PathLike[str],
    error: BaseException,
    *,
    reason: str | None = None,
) -> dict[str, Any]:
    """A ``failed`` row for a file that yields no candidate (not a video, undecodable, too short).

    ``reason`` defaults to the error's own code (:class:`~videonet_curate.video.VideoError.reason`), and
    to ``internal`` for any other exception.
    """
    if reason is None:
        reason = error.reason if isinstance(error, VideoError) else "internal"
    if reason not in mf.REASONS:
        raise ValueError(f"unknown reason code {reason!r}; expected one of {sorted(mf.REASONS)}")
    source_id = relative_source_id(path, input_dir)
    return {
        "clip_id": local_clip_id(source_id, 0.0),
        "source": SOURCE,
        "source_id": source_id,
        "start_s": 0.0,
        "end_s": 0.0,
        "status": mf.STATUS_FAILED,
        "reason": reason,
        "detail": str(error),
    }


def too_short_row(
    path: str | os.PathLike[str],
    info: VideoInfo,
    input_dir: str | os.PathLike[str],
    min_clip_seconds: float = 1.0,
) -> dict[str, Any]:
    """The ``failed``/``too_short`` row of a video for which :func:`local_candidates` gives no window."""
    message = f"{Path(path).name} lasts {info.duration_s:.2f} s, under the {min_clip_seconds:g} s minimum"
    row = failure_row(path, input_dir, ValueError(message), reason="too_short")
    row.update(
        end_s=info.duration_s,
        duration_s=info.duration_s,
        fps=info.fps,
        width=info.width,
        height=info.height,
        codec=info.codec,
    )
    return row


# -- discovery: probe every file, on Ray workers unless --no-ray or a small input -------------------------
def _probe_batch(args: tuple[list[str], str, float, float]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Probe a batch of files: ("ok", candidates) or ("failed", [failure row]) for each."""
    paths, input_dir, clip_seconds, min_clip_seconds = args
    results = []
    for path in paths:
        try:
            info = probe_video(path)
        except VideoError as exc:
            results.append(("failed", [failure_row(path, input_dir, exc)]))
            continue
        cands = local_candidates(path, info, input_dir, clip_seconds, min_clip_seconds=min_clip_seconds)
        if not cands:  # shorter than the shortest clip worth labelling: still a row, with its reason
            results.append(("failed", [too_short_row(path, info, input_dir, min_clip_seconds)]))
            continue
        for cand in cands:
            cand["locator"] = str(path) if is_uri(path) else str(Path(path).resolve())
        results.append(("ok", cands))
    return results


def _ray_map_ordered(fn: Callable[[Any], Any], items: Sequence[Any], num_cpus: float = 1) -> list[Any]:
    import ray

    remote = ray.remote(num_cpus=num_cpus)(fn)
    return ray.get([remote.remote(item) for item in items])


# Probing a file costs ~25 ms of CPU. A probe on Ray costs more than that before it starts: the worker
# that runs it is often fresh (a build's actors take the idle ones) and imports PyAV and this package,
# ~1 CPU s, and the tasks add a second of latency at the start of every build (measured on the 36 sample
# files: 3.0 CPU s in the workers against 0.9 here). So a small input is probed in this process.
PROBE_HERE_MAX_FILES = 128


def probe_on_ray(use_ray: bool, files: int) -> bool:
    """Whether to probe ``files`` files on Ray workers: with Ray, unless there are few enough to probe
    here faster and this process sees the files (not a Ray Client driver, whose --input is the
    cluster's mount, not necessarily this machine's)."""
    if not use_ray:
        return False
    if files > PROBE_HERE_MAX_FILES:
        return True
    from ray.util.client import ray as client

    return client.is_connected()


def discover_local(
    input_dir: Path | str,
    clip_seconds: float,
    *,
    use_ray: bool = True,
    batch_size: int = 16,
    min_clip_seconds: float = 1.0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Probe every file under ``input_dir``: (clip candidates, failure rows of files that are not videos)."""
    files, bad_names = [], []
    for path in iter_video_files(input_dir):
        # one file name that is not UTF-8 must not abort the build: it becomes a failed row
        (files if is_utf8_name(relative_source_id(path, input_dir)) else bad_names).append(str(path))
    batches = [
        (files[i : i + batch_size], str(input_dir), clip_seconds, min_clip_seconds)
        for i in range(0, len(files), batch_size)
    ]
    if probe_on_ray(use_ray, len(files)):
        outputs = _ray_map_ordered(_probe_batch, batches)
    else:
        outputs = [_probe_batch(b) for b in batches]
    candidates: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = [bad_name_row(path, input_dir) for path in bad_names]
    for batch in outputs:
        for kind, rows in batch:
            (candidates if kind == "ok" else failures).extend(rows)
    return candidates, failures


def check_local_input(input_path: Path | str | None, out_dir: Path | str | None = None) -> Path | str:
    """The --input directory, after checking it exists, holds files and does not contain --out."""
    if input_path is None:
        raise SourceInputError("--source local needs --input DIR: a directory of video files")
    if is_uri(input_path):
        return _check_input_uri(str(input_path), out_dir)
    if not input_path.exists():
        raise SourceInputError(f"--input {input_path} does not exist; pass a directory of video files")
    if not input_path.is_dir():
        raise SourceInputError(
            f"--input {input_path} is not a directory; pass the directory that holds the videos"
        )
    if out_dir is not None and not is_uri(out_dir) and is_inside(out_dir, input_path):
        # refused rather than skipped: a rerun would otherwise have to know which folders are ours,
        # and an input tree is often read-only or shared
        raise SourceInputError(
            f"--out {out_dir} lies inside --input {input_path}: the next build would read its own outputs "
            "as input videos; pass an --out outside the input directory"
        )
    if not any(p.is_file() for p in input_path.rglob("*")):
        raise SourceInputError(f"--input {input_path} holds no files; pass a directory of video files")
    return input_path


def _check_input_uri(input_uri: str, out_dir: str | os.PathLike[str] | None) -> str:
    """An --input URI: it must hold objects, and must not hold --out."""
    if out_dir is not None and is_under(out_dir, input_uri):
        raise SourceInputError(
            f"--out {out_dir} lies inside --input {input_uri}: the next build would read its own outputs "
            "as input videos; pass an --out outside the input prefix"
        )
    try:
        if not list_files(input_uri):
            raise SourceInputError(
                f"--input {input_uri} holds no objects; pass the prefix that holds the videos "
                "(and --storage-option endpoint_url=... for an S3-compatible store)"
            )
    except StorageError as exc:
        raise SourceInputError(f"--input {exc}") from None
    return input_uri


class LocalSource(Source):
    """``--source local``: every file under --input, cut into --clip-seconds windows; nothing to fetch."""

    name = SOURCE

    def check(self) -> None:
        check_local_input(self.args.input_path, self.args.out_dir)

    def gather(self, *, use_ray: bool) -> Gathered:
        input_dir = check_local_input(self.args.input_path, self.args.out_dir)
        candidates, failures = discover_local(
            input_dir, self.args.clip_seconds, use_ray=use_ray, min_clip_seconds=self.args.min_clip_seconds
        )
        return Gathered(candidates, failures, None, {"files_not_video": len(failures)})
