"""The frame cache: each kept clip decoded once into small JPEGs, in WebDataset tar shards.

Layout of a cache directory or URI (``vito-train prepare`` writes it, ``vito-train run --cache`` reads
it; ``s3://bucket/cache`` works as well as a local directory)::

    plan.json                   what was asked (fps, short side, quality, clips per shard, clip list)
    shards/shard-00012.tar      WebDataset shard: one sample per clip, members ``{key}.{frame:06d}.jpg``
                                then ``{key}.json`` (clip_id and frame times); ``key`` is the clip_id
                                with ``.`` and ``%`` percent-encoded (WebDataset splits keys at a dot)
    shards/shard-00012.parquet  one row per frame: clip_id, t_s, offset, length (bytes inside the tar)
    shards/shard-00012.done     JSON done-marker: frames written, clips that failed and why
    index.parquet               every shard's rows with a ``shard`` column (written when all are done)

The shards are plain tar files that ``tar -tf`` lists and ``webdataset.WebDataset`` iterates (one
sample per clip with its frames and times). Training does not iterate them: it reads the two frames a
sample needs at their recorded offsets (one ``pread`` locally; on object storage the byte ranges of a
whole batch, those a few MB apart coalesced into one GET, fetched concurrently: range_reads.py), so a
rank or a loader worker reads only the bytes of its own samples and the holes between them, nothing is
copied whole to local disk, and sample ``g`` stays a pure function of the seed (the exact-resume and
any-world-size guarantees of ``distributed.py`` hold unchanged). Every file is written under a temporary
name and renamed (on object storage: uploaded whole), and a shard's done-marker only after its tar and
index, so a crash leaves no partial shard visible.

Caches of format ``vito-frame-cache/1`` (members ``{clip_id}/{frame:06d}.jpg``) are still read.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from videonet_curate.manifest import atomic_write_table
from videonet_curate.storage import atomic_path, atomic_write_text
from videonet_curate.uri import StorageOptions, is_uri, join, read_text, resolve, storage_errors
from videonet_curate.uri import exists as uri_exists
from vito_train.data.range_reads import MERGE_GAP, RangeClient, coalesce, range_client

log = logging.getLogger(__name__)

FORMAT = "vito-frame-cache/2"
READABLE_FORMATS = (FORMAT, "vito-frame-cache/1")
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


def cache_path(root: str | os.PathLike[str], *parts: str) -> Path | str:
    """A file of the cache: a Path for a local cache, a URI string for one on object storage."""
    return join(root, *parts) if is_uri(root) else Path(root).joinpath(*parts)


def shard_paths(root: str | os.PathLike[str], shard: int) -> tuple[Any, Any, Any]:
    """(tar, index parquet, done-marker) of one shard (Paths, or URIs for a cache on object storage)."""
    name = shard_name(shard)
    return tuple(cache_path(root, SHARDS_DIR, f"{name}{ext}") for ext in (".tar", ".parquet", ".done"))


def sample_key(clip_id: str) -> str:
    """The clip's WebDataset key: its id with ``%`` and ``.`` percent-encoded (a key ends at the first
    dot of a member name; clip ids from videonet-curate have none, hand-written ones may)."""
    return clip_id.replace("%", "%25").replace(".", "%2E")


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, _BytesReader(data))
    return info


def _write_tar(path: Path, frames: Iterable[tuple[str, float, bytes]]) -> list[tuple[str, float]]:
    """The WebDataset tar of ``frames`` (grouped by clip, in order); returns (clip_id, t_s) per frame."""
    rows: list[tuple[str, float]] = []
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        clip: str | None = None
        times: list[float] = []

        def close_sample() -> None:  # the clip's metadata member ends its sample
            if clip is not None:
                meta = json.dumps({"clip_id": clip, "t_s": times}).encode()
                _add_member(tar, f"{sample_key(clip)}.json", meta)

        for clip_id, t_s, data in frames:
            if clip_id != clip:
                close_sample()
                clip, times = clip_id, []
            _add_member(tar, f"{sample_key(clip_id)}.{len(times):06d}.jpg", data)
            times.append(float(t_s))
            rows.append((clip_id, t_s))
        close_sample()
    return rows


def write_shard(
    root: str | os.PathLike[str],
    shard: int,
    frames: Iterable[tuple[str, float, bytes]],
    failures: list[dict[str, str]],
    options: StorageOptions | None = None,
) -> dict[str, Any]:
    """Write one shard from ``(clip_id, t_s, jpeg bytes)`` in order; then its index; then its marker.

    The marker comes last, so a shard with a marker is whole. Returns the marker's content.
    """
    tar_path, index_path, done_path = shard_paths(root, shard)
    with atomic_path(tar_path, options) as tmp:
        rows = _write_tar(tmp, frames)
        # offsets as the tar module itself reads them back (headers are 512-byte blocks)
        with tarfile.open(tmp, "r") as tar:
            frames_in_tar = [m for m in tar.getmembers() if m.name.endswith(".jpg")]
        tar_bytes = os.path.getsize(tmp)
    table = pa.table(
        {
            "clip_id": [r[0] for r in rows],
            "t_s": [r[1] for r in rows],
            "offset": [m.offset_data for m in frames_in_tar],
            "length": [m.size for m in frames_in_tar],
        },
        schema=INDEX_SCHEMA,
    )
    atomic_write_table(table, index_path, options=options)
    marker = {
        "shard": shard,
        "frames": len(rows),
        "clips": len({r[0] for r in rows}),
        "failures": failures,
        "tar_bytes": tar_bytes,
    }
    atomic_write_text(done_path, json.dumps(marker), options)
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


def read_done_marker(
    root: str | os.PathLike[str], shard: int, options: StorageOptions | None = None
) -> dict[str, Any] | None:
    """The shard's marker, or None when the shard is not (wholly) written."""
    tar_path, index_path, done_path = shard_paths(root, shard)
    if not all(uri_exists(p, options) for p in (done_path, tar_path, index_path)):
        return None
    try:
        return json.loads(read_text(done_path, options))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def read_table(
    path: str | os.PathLike[str], options: StorageOptions | None = None, **kwargs: Any
) -> pa.Table:
    """A Parquet file of the cache, local or on object storage."""
    if not is_uri(path):
        return pq.read_table(path, **kwargs)
    fs, key = resolve(path, options)
    with storage_errors(str(path), options):
        return pq.read_table(key, filesystem=fs, **kwargs)


def write_global_index(
    root: str | os.PathLike[str], plan: CachePlan, options: StorageOptions | None = None
) -> pa.Table:
    """Concatenate the shard indexes (with a ``shard`` column) into ``index.parquet``."""
    tables = []
    for shard in range(plan.n_shards):
        _, index_path, _ = shard_paths(root, shard)
        table = read_table(index_path, options, schema=INDEX_SCHEMA)
        tables.append(table.append_column("shard", pa.array([shard] * table.num_rows, pa.int32())))
    index = pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()
    index = index.replace_schema_metadata({"format": FORMAT, "plan": plan.to_json()})
    atomic_write_table(index, cache_path(root, INDEX_FILE), options=options)
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
    """Read side of a cache: clips with their frame times, and their JPEGs by offset.

    Shards whose tar is missing or shorter than its index says are dropped at open time and
    listed in ``bad_shards`` (training goes on with the rest). File descriptors (local) and the
    object-storage client are opened lazily per process, so a cache object can be handed to
    DataLoader workers (fork or spawn).

    ``range_client`` picks the object-storage client (range_reads.py): "auto" (pyarrow's C++ S3 client
    when it can express the storage options, else fsspec), "pyarrow" or "fsspec"; ``merge_gap`` how far
    apart two ranges of a shard may lie and still be one GET.
    """

    range_client = "auto"
    merge_gap = MERGE_GAP  # object storage: ranges closer than this in one shard share a GET

    def __init__(self, root: str | os.PathLike[str], options: StorageOptions | None = None) -> None:
        self.root = str(root).rstrip("/") if is_uri(root) else Path(root)
        self.options = options
        index_path = cache_path(self.root, INDEX_FILE)
        if not uri_exists(index_path, options):
            if uri_exists(cache_path(self.root, PLAN_FILE), options):
                raise CacheError(
                    f"frame cache {self.root} is incomplete (no {INDEX_FILE}): rerun "
                    "`vito-train prepare` with the same arguments to finish it"
                )
            raise CacheError(
                f"{self.root} is not a frame cache (no {INDEX_FILE}); build one with "
                "`vito-train prepare --manifest M --out CACHE`"
            )
        table = read_table(index_path, options)
        meta = table.schema.metadata or {}
        if meta.get(b"format", b"").decode() not in READABLE_FORMATS:
            raise CacheError(
                f"{index_path}: format {meta.get(b'format')!r}, expected one of {READABLE_FORMATS}; "
                "rebuild the cache with `vito-train prepare` into a new --out"
            )
        self.plan = CachePlan.from_json(meta[b"plan"].decode())
        self.bad_shards: dict[int, str] = {}
        self.clips = self._clips(table)
        if not self.clips:
            raise CacheError(
                f"frame cache {self.root} holds no readable clip (bad shards: {self.bad_shards})"
            )
        self._fds: dict[int, int] = {}
        self._ranges: RangeClient | None = None
        self._fd_pid = os.getpid()

    @property
    def remote(self) -> bool:
        return is_uri(self.root)

    def _shard_sizes(self) -> dict[int, int]:
        """Bytes of every shard tar present (one listing on object storage)."""
        shards_dir = cache_path(self.root, SHARDS_DIR)
        if self.remote:
            fs, key = resolve(shards_dir, self.options)
            with storage_errors(str(shards_dir), self.options):
                fs.invalidate_cache(key)
                found = fs.find(key, detail=True) if fs.exists(key) else {}
            entries = {name.rsplit("/", 1)[-1]: info["size"] for name, info in found.items()}
        else:
            names = os.listdir(shards_dir) if os.path.isdir(shards_dir) else []
            entries = {n: os.path.getsize(os.path.join(shards_dir, n)) for n in names}
        sizes = {}
        for name, size in entries.items():
            if name.startswith("shard-") and name.endswith(".tar"):
                sizes[int(name[len("shard-") : -len(".tar")])] = int(size)
        return sizes

    def _clips(self, table: pa.Table) -> list[CachedClip]:
        data = {name: table.column(name).to_numpy() for name in ("t_s", "offset", "length", "shard")}
        clip_ids = np.asarray(table.column("clip_id").to_pylist(), dtype=object)
        sizes = self._shard_sizes()
        for shard in np.unique(data["shard"]):
            rows = data["shard"] == shard
            needed = int((data["offset"][rows] + data["length"][rows]).max())
            size = sizes.get(int(shard), -1)
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

    def _in_this_process(self) -> None:
        if self._fd_pid != os.getpid():  # forked into a worker: the parent's descriptors are not ours
            self._fds, self._ranges, self._fd_pid = {}, None, os.getpid()

    def _fd(self, shard: int) -> int:
        self._in_this_process()
        fd = self._fds.get(shard)
        if fd is None:
            fd = os.open(shard_paths(self.root, shard)[0], os.O_RDONLY)
            self._fds[shard] = fd
        return fd

    def _range_client(self) -> RangeClient:
        # made in the process that reads: an S3 client (its threads, connections) must not cross a fork
        self._in_this_process()
        if self._ranges is None:
            self._ranges = range_client(str(self.root), self.options, self.range_client)
        return self._ranges

    def _shard_keys(self, shards: Iterable[int]) -> dict[int, str]:
        return {s: resolve(shard_paths(self.root, s)[0], self.options)[1] for s in set(shards)}

    def read_jpeg(self, clip: CachedClip, frame: int) -> bytes:
        """The JPEG bytes of one frame (raises OSError when the shard cannot be read)."""
        return self.read_jpegs([(clip, frame)])[0]

    def read_jpegs(self, frames: list[tuple[CachedClip, int]]) -> list[bytes]:
        """The JPEG bytes of several frames; on object storage their byte ranges are fetched concurrently
        (nearby ranges merged, all requests in flight together), which hides the store's latency."""
        if not frames:
            return []
        if not self.remote:
            return [
                self._checked(os.pread(self._fd(c.shard), int(c.lengths[f]), int(c.offsets[f])), c, f)
                for c, f in frames
            ]
        out: list[bytes | None] = [None] * len(frames)
        for positions, blobs in self.fetch_jpegs(frames):
            if isinstance(blobs, OSError):
                raise blobs
            for position, blob in zip(positions, blobs, strict=True):
                out[position] = blob
        return out  # type: ignore[return-value]  # every position arrived (or we raised)

    def fetch_jpegs(
        self, frames: list[tuple[CachedClip, int]]
    ) -> Iterator[tuple[list[int], list[bytes] | OSError]]:
        """Object storage: send the GETs for ``frames`` now (byte ranges less than ``merge_gap`` apart in
        one shard coalesced into one GET: range_reads.MERGE_GAP) and return an iterator that yields, as
        each GET completes, ``(positions in frames, their JPEG bytes)``, or ``(positions, OSError)`` for a
        failed GET, so a reader can decode what has arrived while the rest is in flight. Raises OSError
        (StorageError) when the store cannot be reached at all."""
        keys = self._shard_keys(clip.shard for clip, _ in frames)
        ranges = [
            (keys[clip.shard], int(clip.offsets[f]), int(clip.offsets[f]) + int(clip.lengths[f]))
            for clip, f in frames
        ]
        requests, holder = coalesce(ranges, self.merge_gap)
        with storage_errors(str(self.root), self.options):
            futures = self._range_client().submit(requests)
        held: list[list[int]] = [[] for _ in requests]
        for position, index in enumerate(holder):
            held[index].append(position)
        return self._arrivals(frames, ranges, requests, held, futures)

    def _arrivals(
        self,
        frames: list[tuple[CachedClip, int]],
        ranges: list[tuple[str, int, int]],
        requests: list[tuple[str, int, int]],
        held: list[list[int]],
        futures: list[Future[bytes]],
    ) -> Iterator[tuple[list[int], list[bytes] | OSError]]:
        index_of = {id(future): index for index, future in enumerate(futures)}
        for future in as_completed(futures):
            index = index_of[id(future)]
            positions, request_start = held[index], requests[index][1]
            if not positions:  # a request the size cap split off whose ranges another one holds whole
                continue
            shard = frames[positions[0]][0].shard
            try:
                blob = future.result()
            except Exception as exc:  # noqa: BLE001 - any client error is this shard's read failing
                yield positions, OSError(f"shard {shard} of {self.root}: {type(exc).__name__}: {exc}")
                continue
            try:
                blobs = [
                    self._checked(blob[ranges[p][1] - request_start : ranges[p][2] - request_start], *frame)
                    for p in positions
                    for frame in [frames[p]]
                ]
            except OSError as exc:  # a short read: the object is shorter than the index says
                yield positions, exc
                continue
            yield positions, blobs

    def _checked(self, blob: bytes, clip: CachedClip, frame: int) -> bytes:
        if len(blob) != int(clip.lengths[frame]):
            raise OSError(
                f"shard {clip.shard} of {self.root}: read {len(blob)} of {clip.lengths[frame]} bytes"
            )
        return blob

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fds"], state["_ranges"] = {}, None
        return state

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        if self._ranges is not None:
            self._ranges.close()
        self._ranges = None
