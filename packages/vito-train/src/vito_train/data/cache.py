"""The frame cache: each kept clip decoded once into small JPEGs, read back by byte offset.

Layout of a cache directory (``vito-train prepare`` writes it, ``vito-train run --cache`` reads it)::

    plan.json                   what was asked (fps, short side, quality, clips per shard, clip list)
    shards/shard-00012.tar      JPEG frames of a group of clips, members ``{clip_id}/{frame:06d}.jpg``
    shards/shard-00012.parquet  one row per frame: clip_id, t_s, offset, length (bytes inside the tar)
    shards/shard-00012.done     JSON done-marker: frames written, clips that failed and why
    index.parquet               every shard's rows with a ``shard`` column (written when all are done)

Shards are plain tar files (``tar -tf`` lists them); training reads a frame with one ``pread`` at the
recorded offset, so there is no per-frame file and no tar parsing on the hot path. Every file is
written under a temporary name and renamed, so a crash leaves no partial shard visible.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from videonet_curate.manifest import atomic_write_table
from videonet_curate.storage import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

FORMAT = "vito-frame-cache/1"
PLAN_FILE = "plan.json"
INDEX_FILE = "index.parquet"
SHARDS_DIR = "shards"

INDEX_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("t_s", pa.float64()),  # frame time in the clip file's clock (as the manifest's start_s / end_s)
        ("offset", pa.int64()),  # byte offset of the JPEG inside the shard's tar
        ("length", pa.int32()),
    ]
)


class CacheError(ValueError):
    """A cache directory that cannot be used as asked (absent, incomplete, built with other settings)."""


@dataclass(frozen=True)
class CachePlan:
    fps: float
    short_side: int
    quality: int
    clips_per_shard: int
    clip_ids: tuple[str, ...]  # kept clips in manifest order; shard k holds a fixed slice of them
    manifest: str
    format: str = FORMAT

    @property
    def n_shards(self) -> int:
        return -(-len(self.clip_ids) // self.clips_per_shard)

    def shard_clip_ids(self, shard: int) -> tuple[str, ...]:
        return self.clip_ids[shard * self.clips_per_shard : (shard + 1) * self.clips_per_shard]

    def to_json(self) -> str:
        data = asdict(self)
        data["clip_ids"] = list(self.clip_ids)
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> CachePlan:
        data = json.loads(text)
        data["clip_ids"] = tuple(data["clip_ids"])
        return cls(**data)


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def shard_paths(root: Path, shard: int) -> tuple[Path, Path, Path]:
    """(tar, index parquet, done-marker) of one shard."""
    base = Path(root) / SHARDS_DIR / shard_name(shard)
    return base.with_suffix(".tar"), base.with_suffix(".parquet"), base.with_suffix(".done")


def write_shard(
    root: Path, shard: int, frames: Iterable[tuple[str, float, bytes]], failures: list[dict[str, str]]
) -> dict[str, Any]:
    """Write one shard from ``(clip_id, t_s, jpeg bytes)`` in order; then its index; then its marker.

    The marker comes last, so a shard with a marker is whole. Returns the marker's content.
    """
    tar_path, index_path, done_path = shard_paths(root, shard)
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, float]] = []
    with atomic_path(tar_path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            counters: dict[str, int] = {}
            for clip_id, t_s, data in frames:
                k = counters.get(clip_id, 0)
                counters[clip_id] = k + 1
                info = tarfile.TarInfo(f"{clip_id}/{k:06d}.jpg")
                info.size = len(data)
                tar.addfile(info, _BytesReader(data))
                rows.append((clip_id, t_s))
        # offsets as the tar module itself reads them back (headers are 512-byte blocks)
        with tarfile.open(tmp, "r") as tar:
            members = tar.getmembers()
    table = pa.table(
        {
            "clip_id": [r[0] for r in rows],
            "t_s": [r[1] for r in rows],
            "offset": [m.offset_data for m in members],
            "length": [m.size for m in members],
        },
        schema=INDEX_SCHEMA,
    )
    atomic_write_table(table, index_path)
    marker = {
        "shard": shard,
        "frames": len(rows),
        "clips": len({r[0] for r in rows}),
        "failures": failures,
        "tar_bytes": tar_path.stat().st_size,
    }
    atomic_write_text(done_path, json.dumps(marker))
    return marker


class _BytesReader:
    """The file-like object tarfile.addfile reads from, without copying ``data``."""

    def __init__(self, data: bytes) -> None:
        self.view, self.pos = memoryview(data), 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.view) if n < 0 else min(self.pos + n, len(self.view))
        out = self.view[self.pos : end].tobytes()
        self.pos = end
        return out


def read_done_marker(root: Path, shard: int) -> dict[str, Any] | None:
    """The shard's marker, or None when the shard is not (wholly) written."""
    tar_path, index_path, done_path = shard_paths(root, shard)
    if not (done_path.is_file() and tar_path.is_file() and index_path.is_file()):
        return None
    try:
        return json.loads(done_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_global_index(root: Path, plan: CachePlan) -> pa.Table:
    """Concatenate the shard indexes (with a ``shard`` column) into ``index.parquet``."""
    tables = []
    for shard in range(plan.n_shards):
        _, index_path, _ = shard_paths(root, shard)
        table = pq.read_table(index_path, schema=INDEX_SCHEMA)
        tables.append(table.append_column("shard", pa.array([shard] * table.num_rows, pa.int32())))
    index = pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()
    index = index.replace_schema_metadata({"format": FORMAT, "plan": plan.to_json()})
    atomic_write_table(index, Path(root) / INDEX_FILE)
    return index


@dataclass(frozen=True)
class CachedClip:
    clip_id: str
    shard: int
    times: np.ndarray  # (F,) ascending frame times
    offsets: np.ndarray  # (F,) byte offsets in the shard tar
    lengths: np.ndarray  # (F,)

    @property
    def start_s(self) -> float:
        return float(self.times[0])

    @property
    def end_s(self) -> float:
        return float(self.times[-1])


class FrameCache:
    """Read side of a cache: clips with their frame times, and ``read_jpeg`` by pread.

    Shards whose tar is missing or shorter than its index says are dropped at open time and
    listed in ``bad_shards`` (training goes on with the rest). File descriptors are opened lazily
    per process, so a cache object can be handed to DataLoader workers (fork or spawn).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        index_path = self.root / INDEX_FILE
        if not index_path.is_file():
            if (self.root / PLAN_FILE).is_file():
                raise CacheError(
                    f"frame cache {self.root} is incomplete (no {INDEX_FILE}): rerun "
                    "`vito-train prepare` with the same arguments to finish it"
                )
            raise CacheError(
                f"{self.root} is not a frame cache (no {INDEX_FILE}); build one with "
                "`vito-train prepare --manifest M --out CACHE`"
            )
        table = pq.read_table(index_path)
        meta = table.schema.metadata or {}
        if meta.get(b"format", b"").decode() != FORMAT:
            raise CacheError(
                f"{index_path}: format {meta.get(b'format')!r}, expected {FORMAT!r}; rebuild the cache"
            )
        self.plan = CachePlan.from_json(meta[b"plan"].decode())
        self.bad_shards: dict[int, str] = {}
        self.clips = self._clips(table)
        if not self.clips:
            raise CacheError(
                f"frame cache {self.root} holds no readable clip (bad shards: {self.bad_shards})"
            )
        self._fds: dict[int, int] = {}
        self._fd_pid = os.getpid()

    def _clips(self, table: pa.Table) -> list[CachedClip]:
        data = {name: table.column(name).to_numpy() for name in ("t_s", "offset", "length", "shard")}
        clip_ids = np.asarray(table.column("clip_id").to_pylist(), dtype=object)
        for shard in np.unique(data["shard"]):
            tar_path = shard_paths(self.root, int(shard))[0]
            rows = data["shard"] == shard
            needed = int((data["offset"][rows] + data["length"][rows]).max())
            size = tar_path.stat().st_size if tar_path.is_file() else -1
            if size < needed:
                self.bad_shards[int(shard)] = (
                    "missing" if size < 0 else f"truncated ({size} < {needed} bytes)"
                )
                log.warning(
                    "frame cache %s: skipping shard %d: %s", self.root, shard, self.bad_shards[int(shard)]
                )
        clips = []
        order = np.lexsort((data["t_s"], clip_ids.astype(str)))
        ids_sorted = clip_ids[order]
        boundaries = np.flatnonzero(ids_sorted[1:] != ids_sorted[:-1]) + 1
        for rows in np.split(order, boundaries):
            if not len(rows):
                continue
            shard = int(data["shard"][rows[0]])
            if shard in self.bad_shards:
                continue
            clips.append(
                CachedClip(
                    str(clip_ids[rows[0]]),
                    shard,
                    data["t_s"][rows].astype(np.float64),
                    data["offset"][rows].astype(np.int64),
                    data["length"][rows].astype(np.int64),
                )
            )
        # manifest order, so clip k is the same clip as in video mode
        rank = {clip_id: i for i, clip_id in enumerate(self.plan.clip_ids)}
        return sorted(clips, key=lambda c: rank.get(c.clip_id, len(rank)))

    def _fd(self, shard: int) -> int:
        if self._fd_pid != os.getpid():  # forked into a worker: the parent's descriptors are not ours
            self._fds, self._fd_pid = {}, os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            fd = os.open(shard_paths(self.root, shard)[0], os.O_RDONLY)
            self._fds[shard] = fd
        return fd

    def read_jpeg(self, clip: CachedClip, frame: int) -> bytes:
        """The JPEG bytes of one frame (raises OSError when the shard cannot be read)."""
        length = int(clip.lengths[frame])
        data = os.pread(self._fd(clip.shard), length, int(clip.offsets[frame]))
        if len(data) != length:
            raise OSError(f"shard {clip.shard} of {self.root}: read {len(data)} of {length} bytes")
        return data

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fds"] = {}
        return state

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
