"""Shards of candidate clips: a deterministic plan, atomic per-shard outputs and done-markers.

A shard's identity is the hash of the run fingerprint (what decides its output: model, sampling, scoring)
and its sorted clip ids. Re-running the same command therefore finds the same shard names and skips the
finished ones; a changed input or config gives new names, so stale outputs are never mixed in.
A shard counts as finished only when its done-marker exists, and the marker is written last, after the
shard's Parquet files were renamed into place.

OUT may be a URI (``s3://bucket/run``): every file then goes through the storage layer (storage.py), where
each object is written by one PUT of the whole file, visible complete or not at all; the marker's PUT starts
only after the data's PUTs returned, and S3 reads are strongly consistent, so a marker that is visible
means data that is visible. No temporary key is ever created in the bucket.
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
from videonet_curate.uri import arrow_location, exists, is_uri, join, list_files, read_text, remove

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
    rows: Path | str  # str: a URI
    embeddings: Path | str
    done: Path | str


def _shards_dir(out_dir: Path | str) -> Path | str:
    return join(out_dir, SHARDS_DIRNAME) if is_uri(out_dir) else Path(out_dir) / SHARDS_DIRNAME


def shard_paths(out_dir: Path | str, shard: Shard) -> ShardPaths:
    base = _shards_dir(out_dir)
    name = (lambda n: join(base, n)) if is_uri(base) else (lambda n: base / n)
    return ShardPaths(
        rows=name(f"{shard.name}.rows.parquet"),
        embeddings=name(f"{shard.name}.emb.parquet"),
        done=name(f"{shard.name}.done"),
    )


def _contained(out_dir: Path | str, path: Path | str) -> None:
    if not is_uri(path):  # object stores have no links to follow
        contained(out_dir, path)


def is_done(out_dir: Path | str, shard: Shard) -> bool:
    paths = shard_paths(out_dir, shard)
    return exists(paths.done) and exists(paths.rows) and exists(paths.embeddings)


def done_shards(out_dir: Path | str, shards: Sequence[Shard]) -> set[str]:
    """The names of the finished ``shards``. On object storage from one listing of OUT/shards (a HEAD
    per file would be three requests per shard: ~100k for a Kinetics-scale build); locally per shard."""
    if not is_uri(out_dir):
        return {s.name for s in shards if is_done(out_dir, s)}
    present = set(list_files(_shards_dir(out_dir)))
    return {
        s.name
        for s in shards
        if {f"{s.name}.done", f"{s.name}.rows.parquet", f"{s.name}.emb.parquet"} <= present
    }


def write_shard(
    out_dir: Path, shard: Shard, rows: pa.Table, embeddings: pa.Table, info: Mapping[str, Any] | None = None
) -> ShardPaths:
    """Write both Parquet files atomically, then the done-marker (also atomically) as the commit point.

    The marker holds ``info`` (e.g. the model id that labelled the shard) so a resumed run can report it.
    """
    paths = shard_paths(out_dir, shard)
    for path in (paths.rows, paths.embeddings, paths.done):
        _contained(out_dir, path)
    atomic_write_table(rows, paths.rows)
    atomic_write_table(embeddings, paths.embeddings)
    marker = {"rows": rows.num_rows, "clips": len(shard.candidates), **dict(info or {})}
    atomic_write_text(paths.done, json.dumps(marker))
    return paths


def read_done_info(out_dir: Path, shards: Sequence[Shard]) -> dict[str, Any]:
    """The info saved in the first finished shard's done-marker ({} when none is finished)."""
    for shard in shards:
        paths = shard_paths(out_dir, shard)
        try:
            return json.loads(read_text(paths.done))
        except FileNotFoundError:
            continue
    return {}


def read_shards(out_dir: Path, shards: Sequence[Shard]) -> Iterator[tuple[pa.Table, pa.Table]]:
    """The (rows, embeddings) tables of finished shards, in plan order."""
    for shard in shards:
        paths = shard_paths(out_dir, shard)
        yield _read_table(paths.rows), _read_table(paths.embeddings)


def _read_table(path: Path | str) -> pa.Table:
    where, filesystem = arrow_location(path)
    return pq.read_table(where, filesystem=filesystem)


def remove_stale(out_dir: Path | str, shards: Sequence[Shard]) -> int:
    """Delete shard files that belong to no shard of the current plan (and leftover temp files)."""
    if is_uri(out_dir):
        return _remove_stale_objects(str(_shards_dir(out_dir)), shards)
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


def _remove_stale_objects(base: str, shards: Sequence[Shard]) -> int:
    current = {s.name for s in shards}
    removed = 0
    for rel in list_files(base):
        name = rel.split(".")[0] if not rel.startswith(".") else ""
        if "/" in rel or rel.startswith(".") or name not in current:
            remove(join(base, rel))
            removed += 1
    return removed
