"""Byte ranges of cache shards on object storage: coalesced into few large GETs, fetched concurrently.

Why these numbers (measured on loopback S3, moto's server, 2026-12-02; see benchmarks/RESULTS.md): a
ranged GET cost the server about 5.7 ms of CPU and the client 1.0 ms (pyarrow's C++ S3 client) to 3.1 ms
(s3fs over aiobotocore), nearly whatever its size from 16 KB to 1 MB, while each further MB cost about
1.8 ms on both sides together (pyarrow; 2.6 ms with s3fs). Two ranges less than ~4 MB apart are therefore
cheaper as one GET that also reads the hole between them. A real store has the same shape with latency in
place of CPU (tens of ms to a first byte, ~100 MB/s per connection: again a few MB), which is also why
S3's guidance uses 8-16 MB range requests. ``MAX_REQUEST`` bounds one GET (and the memory it holds).

The client: pyarrow's ``S3FileSystem`` (C++, releases the GIL; ``read_at`` on a shard opened once per
process) for ``s3://`` when the storage options say nothing it cannot express, else fsspec's
``cat_ranges`` (s3fs, gcsfs, ...). Clients are made in the process that reads (a DataLoader worker), never
inherited across a fork.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol
from urllib.parse import urlsplit

from videonet_curate.uri import StorageOptions, default_options, protocol_of, resolve

MERGE_GAP = 4 * 2**20  # ranges closer than this share one GET (see above)
MAX_REQUEST = 32 * 2**20  # no merged GET grows past this (a single range longer than it stays whole)
CONCURRENCY = 8  # GETs in flight per reading process

Range = tuple[str, int, int]  # (object path as fsspec writes it: bucket/key, start, end exclusive)


def coalesce(
    ranges: Sequence[Range], max_gap: int = MERGE_GAP, max_request: int = MAX_REQUEST
) -> tuple[list[Range], list[int]]:
    """``(requests, holder)``: the ranges merged into as few requests as ``max_gap`` and ``max_request``
    allow (fsspec's ``merge_offset_ranges``), and for each input range the index of the request that
    holds it whole."""
    from fsspec.utils import merge_offset_ranges

    if not ranges:
        return [], []
    keys, starts, ends = (list(column) for column in zip(*ranges, strict=True))
    paths, m_starts, m_ends = merge_offset_ranges(
        keys, starts, ends, max_gap=max_gap, max_block=max_request, sort=True
    )
    requests = list(zip(paths, m_starts, m_ends, strict=True))
    return requests, locate(ranges, requests)


def locate(ranges: Sequence[Range], requests: Sequence[Range]) -> list[int]:
    """For each range, the index of a request that covers it whole (the nearest one starting at or before
    it; requests may overlap where fsspec started a new one at the size cap). Raises ValueError when a
    range is covered by none."""
    by_key: dict[str, list[tuple[int, int, int]]] = {}
    for index, (key, start, end) in enumerate(requests):
        by_key.setdefault(key, []).append((start, end, index))
    for spans in by_key.values():
        spans.sort()
    holder = []
    for key, start, end in ranges:
        spans = by_key.get(key, [])
        at = bisect.bisect_right(spans, (start, float("inf"), 0)) - 1
        while at >= 0 and spans[at][1] < end:
            at -= 1
        if at < 0:
            raise ValueError(f"no request covers {key} [{start}, {end})")
        holder.append(spans[at][2])
    return holder


class RangeClient(Protocol):
    """Fetches byte ranges; a failed range comes back as its exception, the others still arrive.

    ``submit`` sends them all at once and returns one future per request, so a reader can use each
    range as it arrives; ``fetch`` waits for all of them."""

    def submit(self, requests: Sequence[Range]) -> list[Future[bytes]]: ...

    def fetch(self, requests: Sequence[Range]) -> list[bytes | BaseException]: ...

    def close(self) -> None:
        """Release what the client holds (threads, open objects); it is not used again."""


class FsspecRanges:
    """fsspec's concurrent ``cat_ranges`` (s3fs: asyncio GETs): every protocol fsspec knows."""

    def __init__(self, root: str, options: StorageOptions | None) -> None:
        self.fs = resolve(root, options)[0]

    def fetch(self, requests: Sequence[Range]) -> list[bytes | BaseException]:
        if not requests:
            return []
        paths, starts, ends = (list(column) for column in zip(*requests, strict=True))
        return self.fs.cat_ranges(paths, starts, ends, on_error="return")

    def submit(self, requests: Sequence[Range]) -> list[Future[bytes]]:
        """``fetch``'s results as finished futures (fsspec gathers its concurrent GETs in one call)."""
        return [_finished(result) for result in self.fetch(requests)]

    def close(self) -> None:
        """Nothing to release: fsspec caches its filesystem instances and their connections."""


def _finished(result: bytes | BaseException) -> Future[bytes]:
    future: Future[bytes] = Future()
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
    return future


class ArrowS3Ranges:
    """pyarrow's C++ S3 client: one input file per shard object (one HEAD each, per process), ranges
    read with ``read_at`` from a small thread pool (the C++ call releases the GIL)."""

    def __init__(self, filesystem: Any) -> None:
        self.fs = filesystem
        self._files: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="s3-ranges")

    def _file(self, key: str) -> Any:
        with self._lock:
            handle = self._files.get(key)
        if handle is None:
            handle = self.fs.open_input_file(key)
            with self._lock:
                handle = self._files.setdefault(key, handle)
        return handle

    def _read(self, key: str, start: int, end: int) -> bytes:
        return self._file(key).read_at(end - start, start)

    def submit(self, requests: Sequence[Range]) -> list[Future[bytes]]:
        return [self._pool.submit(self._read, *request) for request in requests]

    def fetch(self, requests: Sequence[Range]) -> list[bytes | BaseException]:
        futures = self.submit(requests)
        out: list[bytes | BaseException] = []
        for future in futures:
            try:
                out.append(future.result())
            except Exception as exc:  # noqa: BLE001 - handed back per range, as fsspec's on_error="return"
                out.append(exc)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._files = {}


def arrow_s3_filesystem(root: str, options: StorageOptions | None) -> Any | None:
    """pyarrow's ``S3FileSystem`` for an ``s3://`` root with these options, or None when they hold
    something only fsspec understands (a profile, extra fsspec keywords) or pyarrow lacks S3 support.
    Credentials come from the standard AWS chain (AWS_* variables, config files), as for s3fs."""
    if protocol_of(root) not in ("s3", "s3a"):
        return None
    options = options or default_options()
    if options.profile or options.extra:
        return None
    try:
        from pyarrow import fs as pafs

        kwargs: dict[str, Any] = {"anonymous": options.anon}
        if options.endpoint_url:
            endpoint = urlsplit(options.endpoint_url)
            kwargs["scheme"], kwargs["endpoint_override"] = endpoint.scheme, endpoint.netloc
        region = options.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region is None and not options.endpoint_url:  # AWS itself: ask where the bucket lives
            region = pafs.resolve_s3_region(root.split("://", 1)[1].split("/", 1)[0])
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(**kwargs)
    except (ImportError, AttributeError, OSError, ValueError):  # no S3 in this pyarrow build, region refused
        return None


def range_client(root: str, options: StorageOptions | None, prefer: str = "auto") -> RangeClient:
    """The client a reading process uses: ``prefer`` "auto" (pyarrow for S3 when it can, else fsspec),
    "pyarrow" or "fsspec"."""
    if prefer in ("auto", "pyarrow"):
        filesystem = arrow_s3_filesystem(root, options)
        if filesystem is not None:
            return ArrowS3Ranges(filesystem)
        if prefer == "pyarrow":
            raise ValueError(f"{root}: pyarrow's S3 client cannot express these storage options")
    return FsspecRanges(root, options)
