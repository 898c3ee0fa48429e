"""From a curated manifest to a deterministic stream of (clip, two frame times) pairs.

The stream is a pure function of ``(seed, global sample index)``: sample ``g`` belongs to epoch
``g // n_clips`` and takes clip ``permutation(seed, epoch)[g % n_clips]``; its frame times and its
augmentations draw from a generator seeded by ``(seed, g)``. Resuming at step ``k`` therefore means
starting at ``g = k * batch_size``, with any number of DataLoader workers.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Sampler

from videonet_curate.manifest import (
    ManifestError,
    kept_rows,
    read_manifest,
    resolve_clip_path,
)
from videonet_curate.uri import exists, is_uri, join, list_files, location, parent

log = logging.getLogger(__name__)


class TrainingDataError(ValueError):
    """The manifest cannot feed training (missing, invalid, no kept rows, files absent)."""


@dataclass(frozen=True)
class Clip:
    clip_id: str
    path: Path | str  # str: a URI (s3://bucket/videos/x.mp4), read by range requests
    start_s: float
    end_s: float


def _manifest_file(manifest: Path | str) -> Path | str:
    if is_uri(manifest):
        return manifest if str(manifest).endswith(".parquet") else join(manifest, "manifest.parquet")
    return manifest / "manifest.parquet" if manifest.is_dir() else manifest


def verify_if_published(manifest: Path | str) -> bool:
    """Run ``videonet_curate.publish.verify_published`` on a published directory, when both exist."""
    if is_uri(manifest):
        directory = parent(_manifest_file(manifest))
        checksums = join(directory, "checksums.sha256")
    else:
        directory = manifest if manifest.is_dir() else manifest.parent
        checksums = directory / "checksums.sha256"
    if not exists(checksums):
        return False
    try:
        from videonet_curate.publish import verify_published  # built by another package; optional
    except ImportError:
        log.warning(
            "%s has checksums.sha256 but videonet_curate.publish.verify_published is unavailable; "
            "skipping verification",
            directory,
        )
        return False
    try:
        verify_published(directory)
    except Exception as exc:  # its own typed errors; surface them as ours with the fix
        raise TrainingDataError(
            f"published manifest {directory} failed verification: {exc}. "
            "Re-download or re-publish it (`videonet-curate publish`)."
        ) from exc
    return True


def load_clips(manifest: str | Path, *, check_files: bool = True) -> list[Clip]:
    """The kept clips of a manifest (a path or a URI), with absolute paths or URIs; typed errors for every
    way this fails."""
    manifest = location(manifest)
    if not exists(manifest):
        raise TrainingDataError(
            f"manifest {manifest} does not exist: pass a manifest.parquet or its directory"
        )
    verify_if_published(manifest)
    try:
        table = read_manifest(manifest)
    except ManifestError as exc:
        raise TrainingDataError(f"manifest {manifest} is not valid: {exc}") from exc
    kept = kept_rows(table).select(["clip_id", "path", "start_s", "end_s"]).to_pylist()
    if not kept:
        statuses = sorted(set(table.column("status").to_pylist()))
        raise TrainingDataError(
            f"manifest {manifest} has no rows with status 'kept' ({table.num_rows} rows, statuses {statuses}); "
            "curate with looser thresholds or pass another manifest"
        )
    manifest_file = _manifest_file(manifest)
    clips = [
        Clip(
            r["clip_id"], resolve_clip_path(manifest_file, r["path"]), float(r["start_s"]), float(r["end_s"])
        )
        for r in kept
    ]
    bad_span = [c.clip_id for c in clips if not c.end_s > c.start_s]
    if bad_span:
        raise TrainingDataError(f"manifest {manifest}: kept clips with end_s <= start_s: {bad_span[:5]}")
    if check_files:
        missing = missing_files([c.path for c in clips])
        if missing:
            raise TrainingDataError(
                f"manifest {manifest}: {len(missing)} of {len(clips)} kept clips point at missing files, "
                f"e.g. {missing[:3]}; paths are relative to the manifest's directory - move the videos "
                "back or rebuild the manifest"
            )
    return clips


def missing_files(paths: list[Path | str]) -> list[str]:
    """The paths (or URIs) that are not files, in order. Object storage is listed once per prefix rather
    than asked once per clip (a manifest of 500k clips would be 500k requests)."""
    listed: dict[str, set[str]] = {}
    missing = []
    for path in dict.fromkeys(paths):  # a video cut into many clips is checked once
        if is_uri(path):
            prefix = parent(path)
            if prefix not in listed:
                listed[prefix] = {join(prefix, rel) for rel in list_files(prefix) if "/" not in rel}
            if str(path) not in listed[prefix]:
                missing.append(str(path))
        elif not Path(path).is_file():
            missing.append(str(path))
    return missing


def sample_generator(seed: int, index: int) -> np.random.Generator:
    """The per-sample random source: a function of (seed, global sample index) only."""
    return np.random.default_rng([seed, index, 0x5EED])


@functools.lru_cache(maxsize=2)
def _epoch_permutation(seed: int, epoch: int, n_clips: int) -> np.ndarray:
    # cached per process: drawing it costs O(n_clips) (~15 ms at 500k clips), far more than a sample
    return np.random.default_rng([seed, epoch, 0xC11B]).permutation(n_clips)


def clip_for_index(seed: int, index: int, n_clips: int) -> int:
    """Clip of global sample ``index``: a fresh permutation of the clips per epoch."""
    epoch, offset = divmod(index, n_clips)
    return int(_epoch_permutation(seed, epoch, n_clips)[offset])


def sample_pair_times(
    u_gap: float, u_start: float, start_s: float, end_s: float, max_gap_s: float
) -> tuple[float, float]:
    """Two frame times within ``[start_s, end_s]`` at most ``max_gap_s`` apart.

    ``gap = u_gap * min(max_gap_s, end_s - start_s)`` and ``t1 = start_s + u_start * (span - gap)``,
    ``t2 = t1 + gap``, for uniforms ``u_gap, u_start`` in [0, 1). ``max_gap_s = 0`` gives one frame
    for both views (the image-SSL ablation).
    """
    span = max(end_s - start_s, 0.0)
    gap = u_gap * min(max_gap_s, span)
    t1 = start_s + u_start * (span - gap)
    return t1, t1 + gap


class StepBatchSampler(Sampler[list[int]]):
    """Batches of consecutive global sample indices, from ``start_step`` to ``end_step``."""

    def __init__(self, batch_size: int, start_step: int, end_step: int) -> None:
        self.batch_size, self.start_step, self.end_step = batch_size, start_step, end_step

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.end_step):
            first = step * self.batch_size
            yield list(range(first, first + self.batch_size))

    def __len__(self) -> int:
        return max(self.end_step - self.start_step, 0)
