"""Shards of candidate clips: a deterministic plan, atomic per-shard outputs and done-markers.

A shard's identity is the hash of the run fingerprint (what decides its output: model, sampling, scoring)
and its sorted clip ids. Re-running the same command therefore finds the same shard names and skips the
finished ones; a changed input or config gives new names, so stale outputs are never mixed in.
A shard counts as finished only when its done-marker exists, and the marker is written last, after the
shard's Parquet files were renamed into place.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from videonet_curate.manifest import atomic_write_table
from videonet_curate.safepath import contained
from videonet_curate.storage import atomic_write_text

SHARDS_DIRNAME = "shards"


@dataclass(frozen=True)
class Shard:
    """A unit of work: candidate dicts that one worker labels and writes out together."""

    index: int
    key: str  # content hash: fingerprint + clip ids
    candidates: tuple[Mapping[str, Any], ...]

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}-{self.key}"


def fingerprint(config: Mapping[str, Any]) -> str:
    """A short stable hash of the settings that decide a shard's output."""
    blob = json.dumps(dict(config), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def plan_shards(
    candidates: Sequence[Mapping[str, Any]], shard_size: int, run_fingerprint: str
) -> list[Shard]:
    """Split candidates (sorted by clip_id, so the plan does not depend on discovery order) into shards."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    ordered = sorted(candidates, key=lambda c: c["clip_id"])
    shards = []
    for index, start in enumerate(range(0, len(ordered), shard_size)):
        chunk = tuple(ordered[start : start + shard_size])
        digest = hashlib.sha256(run_fingerprint.encode())
        for cand in chunk:
            digest.update(b"\0" + str(cand["clip_id"]).encode())
        shards.append(Shard(index=index, key=digest.hexdigest()[:12], candidates=chunk))
    return shards


@dataclass(frozen=True)
class ShardPaths:
    rows: Path
    embeddings: Path
    done: Path


def shard_paths(out_dir: Path, shard: Shard) -> ShardPaths:
    base = Path(out_dir) / SHARDS_DIRNAME
    return ShardPaths(
        rows=base / f"{shard.name}.rows.parquet",
        embeddings=base / f"{shard.name}.emb.parquet",
        done=base / f"{shard.name}.done",
    )


def is_done(out_dir: Path, shard: Shard) -> bool:
    paths = shard_paths(out_dir, shard)
    return paths.done.exists() and paths.rows.exists() and paths.embeddings.exists()


def write_shard(
    out_dir: Path, shard: Shard, rows: pa.Table, embeddings: pa.Table, info: Mapping[str, Any] | None = None
) -> ShardPaths:
    """Write both Parquet files atomically, then the done-marker (also atomically) as the commit point.

    The marker holds ``info`` (e.g. the model id that labelled the shard) so a resumed run can report it.
    """
    paths = shard_paths(out_dir, shard)
    for path in (paths.rows, paths.embeddings, paths.done):
        contained(out_dir, path)
    atomic_write_table(rows, paths.rows)
    atomic_write_table(embeddings, paths.embeddings)
    marker = {"rows": rows.num_rows, "clips": len(shard.candidates), **dict(info or {})}
    atomic_write_text(paths.done, json.dumps(marker))
    return paths


def read_done_info(out_dir: Path, shards: Sequence[Shard]) -> dict[str, Any]:
    """The info saved in the first finished shard's done-marker ({} when none is finished)."""
    for shard in shards:
        paths = shard_paths(out_dir, shard)
        if paths.done.exists():
            return json.loads(paths.done.read_text())
    return {}


def read_shards(out_dir: Path, shards: Sequence[Shard]) -> Iterator[tuple[pa.Table, pa.Table]]:
    """The (rows, embeddings) tables of finished shards, in plan order."""
    for shard in shards:
        paths = shard_paths(out_dir, shard)
        yield pq.read_table(paths.rows), pq.read_table(paths.embeddings)


def remove_stale(out_dir: Path, shards: Sequence[Shard]) -> int:
    """Delete shard files that belong to no shard of the current plan (and leftover temp files)."""
    base = Path(out_dir) / SHARDS_DIRNAME
    if not base.is_dir():
        return 0
    contained(out_dir, base)  # OUT/shards planted as a link elsewhere: delete nothing there
    current = {s.name for s in shards}
    removed = 0
    for path in base.iterdir():
        name = path.name.split(".")[0] if not path.name.startswith(".") else ""
        if path.name.startswith(".") or name not in current:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
