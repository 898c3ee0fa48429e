"""The steps of labelling a candidate clip: fetch (materialise) -> decode and sample -> embed and score.

Each step is a function of one clip (:func:`fetch_clip`, :func:`decode_clip_frames`) or of a batch of
clips (:class:`videonet_curate.model_stage.ClipModel`), so the staged pipeline (stages.py, staged.py) runs
them on separate Ray actors, and :class:`ShardLabeler` runs them in sequence for one shard (``--no-ray``,
and the fused baseline of benchmarks/curate_stages.py). Every candidate ends as exactly one manifest row:
a failure is recorded with its reason and the shard goes on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videonet_curate import manifest as mf
from videonet_curate.embeddings import embeddings_table
from videonet_curate.shards import Shard, write_shard
from videonet_curate.uri import clip_reference, location

log = logging.getLogger(__name__)

# Candidate keys that are bookkeeping for the pipeline, not manifest columns.
_CANDIDATE_ONLY_KEYS = ("locator", "url")


@dataclass(frozen=True)
class LabelingConfig:
    """How shards are labelled; what decides their output goes into the run fingerprint
    (:func:`videonet_curate.pipeline.fingerprint_settings`)."""

    model: str = "efficientnet-lite0"
    templates: str = "openai"
    frames_per_clip: int = 8
    batch_frames: int = 64
    # Frames are scaled on decode so their short side stays >= 256 for aspect ratios up to 16:9: the
    # models resize to 224-256 anyway, and converting full-size frames dominated the GPU embed stage.
    decode_max_side: int = 456
    device: str = "cpu"
    precision: str = "auto"  # auto: bf16 on a GPU, fp32 on the CPU; or fp32 | fp16 | bf16
    threads: int = 1


# Fields of a materialised clip that go into its manifest row.
_MATERIALIZED_FIELDS = (
    "status",
    "reason",
    "detail",
    "attempts",
    "start_s",
    "end_s",
    "source_start_s",
    "source_end_s",
    "duration_s",
    "fps",
    "width",
    "height",
    "codec",
)


@dataclass
class FetchedClip:
    """A candidate after the fetch step: its row so far and the local file to decode (None: the row is
    final, e.g. the download failed)."""

    row: dict[str, Any]
    path: str | None
    seconds: float = 0.0


@dataclass
class DecodedClip:
    """A clip after decoding: uint8 frames ``(N, 3, S, S)`` at the model's input size, or None when the
    row is final (the clip could not be decoded)."""

    row: dict[str, Any]
    frames: np.ndarray | None
    seconds: float = 0.0


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` means bf16 on a GPU (the scores barely move, the throughput doubles) and fp32 on a CPU."""
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    return precision


def failed(row: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
    """Mark ``row`` failed with ``reason`` (an unknown reason becomes decode_error) and ``detail``."""
    row.update(
        status=mf.STATUS_FAILED, reason=reason if reason in mf.REASONS else "decode_error", detail=detail
    )
    return row


def start_row(candidate: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest row of a candidate before any work: its own columns, the rest empty."""
    values = {k: v for k, v in candidate.items() if k not in _CANDIDATE_ONLY_KEYS and k in mf.SCHEMA.names}
    row = mf.empty_row(**values)
    row.setdefault("attempts", None)
    return row


def fetch_clip(
    candidate: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    materialize: Callable[[Mapping[str, Any], Path], Mapping[str, Any]] | None,
) -> FetchedClip:
    """Make the candidate's bytes a local file (a local candidate already is one: its ``locator``)."""
    row = start_row(candidate)
    local_path = candidate.get("locator")
    started = time.perf_counter()
    if local_path is None:
        if materialize is None:
            return FetchedClip(
                failed(row, "internal", f"no way to fetch source {candidate.get('source')!r}"), None
            )
        got = materialize(candidate, location(out_dir))
        for key in _MATERIALIZED_FIELDS:
            if got.get(key) is not None:
                row[key] = got[key]
        if got.get("path") is None:
            row["status"] = got.get("status") or mf.STATUS_FAILED
            return FetchedClip(row, None, time.perf_counter() - started)
        local_path = str(got["path"])
    row["path"] = clip_reference(local_path, out_dir)  # relative to a local OUT; else a URI
    return FetchedClip(row, str(local_path), time.perf_counter() - started)


def decode_clip_frames(
    fetched: FetchedClip, config: LabelingConfig, spec: Any | Callable[[], Any]
) -> DecodedClip:
    """Sample the clip's frames and bring them to the model's input size (``spec``: its PreprocessSpec,
    or a function giving it, called once the frames are read: a decode actor reads its first clips while
    the model actor is still loading the model that has the spec)."""
    from videonet_curate.preprocess import resize_frames
    from videonet_curate.video import VideoError, read_frames_at, sample_timestamps

    row = fetched.row
    if fetched.path is None:
        return DecodedClip(row, None)
    started = time.perf_counter()
    try:
        stamps = sample_timestamps(float(row["start_s"]), float(row["end_s"]), config.frames_per_clip)
        frames = read_frames_at(fetched.path, stamps, max_side=config.decode_max_side, threads=config.threads)
        if len(frames) == 0:
            return DecodedClip(
                failed(row, "decode_error", "no frame could be decoded in the clip window"), None
            )
    except VideoError as exc:
        return DecodedClip(failed(row, exc.reason, str(exc)), None, time.perf_counter() - started)
    except Exception as exc:  # a decoder bug must not sink the shard; record it
        return _unexpected(row, fetched.path, exc, started)
    if callable(spec):  # outside the try: a model that failed to load is not a bad clip
        waited = time.perf_counter()
        spec = spec()
        started += time.perf_counter() - waited  # waiting for the model is not decoding time
    try:
        resized = resize_frames(np.asarray(frames), spec).contiguous().numpy()
    except Exception as exc:
        return _unexpected(row, fetched.path, exc, started)
    row["frames_sampled"] = len(resized)
    return DecodedClip(row, resized, time.perf_counter() - started)


def _unexpected(row: dict[str, Any], path: str, exc: Exception, started: float) -> DecodedClip:
    log.exception("unexpected error sampling %s", path)
    detail = f"{type(exc).__name__}: {exc}"
    return DecodedClip(failed(row, "decode_error", detail), None, time.perf_counter() - started)


def shard_summary(name: str, rows: list[dict[str, Any]], timings: Mapping[str, float]) -> dict[str, Any]:
    """What a finished shard reports: its clip count, statuses and its own stage seconds."""
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    return {"shard": name, "clips": len(rows), "statuses": statuses, "timings": dict(timings)}


def write_labelled_shard(
    out_dir: Path,
    shard: Shard,
    rows: list[dict[str, Any]],
    embeddings: Mapping[str, np.ndarray],
    info: Mapping[str, Any],
    dim: int,
) -> None:
    """Write a shard whose every candidate has its row: rows, their clip embeddings, then the done-marker."""
    rows = sorted(rows, key=lambda r: r["clip_id"])
    ids = [r["clip_id"] for r in rows if r["clip_id"] in embeddings]
    matrix = np.stack([embeddings[i] for i in ids]) if ids else np.zeros((0, dim))
    write_shard(out_dir, shard, mf.rows_to_table(rows), embeddings_table(ids, matrix), info)


class ShardLabeler:
    """The fused path: one model, whose holder fetches, decodes, embeds and scores a whole shard in
    sequence and writes it. Used without Ray and as the baseline the staged pipeline is measured against."""

    def __init__(
        self,
        config: LabelingConfig,
        out_dir: str | os.PathLike[str],
        materialize: Callable[[Mapping[str, Any], Path], Mapping[str, Any]] | None = None,
    ) -> None:
        from videonet_curate.model_stage import ClipModel

        self.config = config
        self.out_dir = location(out_dir)
        self.materialize = materialize
        self.model = ClipModel(config)
        self.timings = {"materialize": 0.0, "sample": 0.0, "embed": 0.0, "score": 0.0}

    def run_shard(self, shard: Shard) -> dict[str, Any]:
        """Label every candidate of ``shard``, write its outputs, return counts and its own stage seconds."""
        before = dict(self.timings)
        self._window: list[float] = []
        rows: list[dict[str, Any]] = []
        embeddings: dict[str, np.ndarray] = {}
        pending: list[DecodedClip] = []
        spec = self.model.preprocess_spec
        for candidate in shard.candidates:
            fetched = fetch_clip(candidate, self.out_dir, self.materialize)
            self.timings["materialize"] += fetched.seconds
            decoded = decode_clip_frames(fetched, self.config, spec)
            self.timings["sample"] += decoded.seconds
            if decoded.frames is None:
                rows.append(decoded.row)
                continue
            pending.append(decoded)
            if sum(len(p.frames) for p in pending) >= self.config.batch_frames:
                self._flush(pending, rows, embeddings)
                pending = []
        self._flush(pending, rows, embeddings)
        write_labelled_shard(self.out_dir, shard, rows, embeddings, self.model.info, self.model.embedding_dim)
        timings = {stage: seconds - before[stage] for stage, seconds in self.timings.items()}
        summary = shard_summary(shard.name, rows, timings)
        if self._window:  # wall clock of this shard's first and last model batch (benchmarks)
            summary["model_window"] = (min(self._window), max(self._window))
        return summary

    def _flush(
        self, pending: list[DecodedClip], rows: list[dict[str, Any]], embeddings: dict[str, np.ndarray]
    ) -> None:
        if not pending:
            return
        scored = self.model.score([(p.row, p.frames) for p in pending])
        for stage in ("embed", "score"):
            self.timings[stage] += scored.seconds[stage]
        self._window += [scored.started_at, scored.ended_at]
        for row, embedding in zip(scored.rows, scored.embeddings, strict=True):
            rows.append(row)
            embeddings[row["clip_id"]] = embedding
