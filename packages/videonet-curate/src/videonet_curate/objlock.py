"""A build's lock on object storage: the object ``OUT/.lock``, owned through conditional writes.

- **Take**: ``PutObject`` with ``If-None-Match: *``. S3 (since 2024) and S3-compatible stores that
  implement conditional writes create the object for exactly one of two racing builds; the other gets
  412 and is refused with the holder's pid and host.
- **Hold**: a daemon thread rewrites the object every :data:`HEARTBEAT_S` seconds with ``If-Match`` on
  the ETag it last wrote, so the object's ``LastModified`` says the holder is alive.
- **Stale**: a lock whose holder ran on this host under a pid that is gone (kill -9) is stale at once;
  any other is stale when it was not refreshed for :data:`STALE_S` seconds, measured on the server's
  clock (its ``Date`` header against ``LastModified``), so clocks of the nodes do not matter.
- **Take over**: ``PutObject`` with ``If-Match`` on the ETag that was judged stale: of two builds
  taking over the same stale lock, one wins, the other is refused.
- **Lose**: a heartbeat whose ``If-Match`` fails means another build took the lock over (ours
  stalled longer than STALE_S): the main thread is interrupted (exit 130) rather than mixing outputs.
- **Release**: ``DeleteObject`` with ``If-Match`` on our last ETag.

Filesystems other than S3 (gs://, memory://) get a best-effort lock: read, then write, with a window in
which two builds starting within the same moment could both proceed; the README says so.
"""

from __future__ import annotations

import _thread
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any

from videonet_curate.uri import StorageError, mask_secrets, protocol_of, resolve, storage_errors

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
STALE_S = 90.0


class _Conflict(StorageError):
    """A conditional write or delete whose condition did not hold (HTTP 412); a StorageError, so that
    ``storage_errors`` lets it through unchanged."""


def holder_text(record: dict[str, Any] | None) -> str:
    if not record:
        return "another process"
    return f"pid {record.get('pid', '?')} on {record.get('host', '?')}, started {record.get('started', '?')}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(record: dict[str, Any], age_s: float | None, *, host: str, stale_s: float = STALE_S) -> bool:
    """Whether a lock ``record`` whose object was last written ``age_s`` seconds ago is abandoned."""
    if record.get("host") == host and isinstance(record.get("pid"), int):
        return not _pid_alive(record["pid"])
    return age_s is not None and age_s > stale_s


class _S3Lock:
    """The conditional requests, through s3fs's botocore client (no hand-written S3 client)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, key = resolve(uri)
        self.bucket, self.key, _ = self.fs.split_path(key)

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        import errno

        with storage_errors(self.uri, writing=True):
            try:
                return self.fs.call_s3(method, Bucket=self.bucket, Key=self.key, **kwargs)
            except FileExistsError:  # s3fs's translation of 412 for If-None-Match
                raise _Conflict(self.uri) from None
            except OSError as exc:  # ... and of 412 for If-Match (PreconditionFailed: EINVAL)
                if exc.errno == errno.EINVAL:
                    raise _Conflict(self.uri) from None
                raise

    def create(self, body: bytes) -> str:
        return self._call("put_object", Body=body, IfNoneMatch="*")["ETag"]

    def replace(self, body: bytes, etag: str) -> str:
        return self._call("put_object", Body=body, IfMatch=etag)["ETag"]

    def read(self) -> tuple[dict[str, Any], str, float | None] | None:
        """(record, ETag, age in seconds on the server's clock), or None when there is no lock."""
        from fsspec.asyn import sync

        async def get() -> tuple[dict[str, Any], bytes]:
            got = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            async with got["Body"] as stream:
                return got, await stream.read()

        try:
            with storage_errors(self.uri):
                got, data = sync(self.fs.loop, get)
        except FileNotFoundError:
            return None
        try:
            record = json.loads(data or b"{}")
        except ValueError:
            record = {}
        date = got.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        modified = got.get("LastModified")
        now = parsedate_to_datetime(date).timestamp() if date else time.time()
        age = now - modified.timestamp() if modified is not None else None
        return record, got["ETag"], age

    def delete(self, etag: str) -> None:
        self._call("delete_object", IfMatch=etag)


@contextmanager
def object_lock(
    uri: str, locked: type[Exception], *, flag_value: str, stale_s: float = STALE_S
) -> Iterator[str]:
    """Hold the lock object ``uri`` for the duration of the block; raise ``locked`` when a live build
    holds it (see the module docstring for the protocol)."""
    if protocol_of(uri) not in ("s3", "s3a"):
        with _best_effort_lock(uri, locked, flag_value=flag_value, stale_s=stale_s):
            yield uri
        return
    lock = _S3Lock(uri)
    host = socket.gethostname()
    record = {
        "pid": os.getpid(),
        "host": host,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "owner": secrets.token_hex(8),
    }
    body = json.dumps(record).encode()
    refused = (
        f"--out {flag_value} is in use by another build ({{}}); wait for it to finish or pass another --out"
    )
    try:
        etag = lock.create(body)
    except _Conflict:
        held = lock.read()
        if held is None:  # released between our two requests: try once more
            try:
                etag = lock.create(body)
            except _Conflict:
                raise locked(refused.format(holder_text(None))) from None
        else:
            holder, held_etag, age = held
            if not is_stale(holder, age, host=host, stale_s=stale_s):
                raise locked(refused.format(holder_text(holder))) from None
            log.warning("%s: taking over the lock of a build that is gone (%s)", uri, holder_text(holder))
            try:
                etag = lock.replace(body, held_etag)
            except _Conflict:
                raise locked(refused.format("another build took it over just now")) from None
    beat = _Heartbeat(lock, body, etag)
    beat.start()
    try:
        yield uri
    finally:
        beat.stop()
        if not beat.lost:
            try:
                lock.delete(beat.etag)
            except (_Conflict, StorageError) as exc:
                log.warning("%s: could not remove the lock (%s)", uri, mask_secrets(str(exc)))


class _Heartbeat(threading.Thread):
    def __init__(self, lock: _S3Lock, body: bytes, etag: str, every_s: float | None = None) -> None:
        super().__init__(name="videonet-lock-heartbeat", daemon=True)
        self.lock, self.body, self.etag = lock, body, etag
        self.every_s = HEARTBEAT_S if every_s is None else every_s  # read when taken: tests shorten it
        self.lost = False
        self._stop_event = threading.Event()
        self._guard = threading.Lock()

    def run(self) -> None:
        while not self._stop_event.wait(self.every_s):
            with self._guard:
                if self._stop_event.is_set():
                    return
                try:
                    self.etag = self.lock.replace(self.body, self.etag)
                except _Conflict:
                    self.lost = True
                    log.error(
                        "%s: another build took this build's lock over (this one stalled for over %g s); "
                        "stopping so that the two do not mix their outputs",
                        self.lock.uri,
                        STALE_S,
                    )
                    _thread.interrupt_main()
                    return
                except StorageError as exc:  # a transient error: the next beat tries again
                    log.warning("%s: lock heartbeat failed (%s)", self.lock.uri, exc)

    def stop(self) -> None:
        with self._guard:
            self._stop_event.set()


@contextmanager
def _best_effort_lock(
    uri: str, locked: type[Exception], *, flag_value: str, stale_s: float
) -> Iterator[None]:
    """Read-then-write: keeps a second build out, except one that starts in the same moment."""
    from videonet_curate.storage import atomic_write_bytes
    from videonet_curate.uri import read_bytes, remove

    host = socket.gethostname()
    try:
        holder = json.loads(read_bytes(uri) or b"{}")
    except FileNotFoundError:
        holder = None
    # no heartbeat here: only a holder that ran on this host under a pid now gone is known to be stale
    if holder is not None and not is_stale(holder, None, host=host, stale_s=stale_s):
        raise locked(
            f"--out {flag_value} is in use by another build ({holder_text(holder)}); wait for it to finish "
            f"or pass another --out (if that build is gone, delete {uri})"
        )
    record = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_bytes(uri, json.dumps(record).encode())
    try:
        yield
    finally:
        remove(uri)
