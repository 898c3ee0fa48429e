"""``OUT/.lock``: one build at a time per output directory.

Two builds into one ``--out`` would delete each other's shards (each removes the shards its own plan
does not name). The lock is an ``flock`` on ``OUT/.lock``: the kernel drops it when its process dies, so
the lock of a killed build (kill -9, a lost node) is stale at once and the next build takes it over.
The file holds the holder's pid, host and start time, for the refusal message only.

On object storage (``--out s3://bucket/run``) there is no flock; the lock is the object ``OUT/.lock``
(objlock.py): created with a conditional PUT (``If-None-Match: *``, which S3 and S3-compatible stores
that implement conditional writes honour: exactly one of two racing builds creates it), refreshed by a
heartbeat, and taken over from a dead holder with ``If-Match`` on the ETag that was judged stale.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILENAME = ".lock"


class OutputLocked(RuntimeError):
    """Another live build holds OUT/.lock (the message says who and what to do)."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started', '?')}"


@contextmanager
def build_lock(out_dir: Path | str) -> Iterator[Path | str]:
    """Hold ``out_dir/.lock`` for the duration of a build, or raise :class:`OutputLocked` at once."""
    from videonet_curate.uri import is_uri, join

    if is_uri(out_dir):
        from videonet_curate.objlock import object_lock

        with object_lock(join(out_dir, LOCK_FILENAME), OutputLocked, flag_value=str(out_dir)) as uri:
            yield uri
        return
    path = Path(out_dir) / LOCK_FILENAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputLocked(
                f"--out {out_dir} is in use by another build ({_holder(path)}); wait for it to finish or "
                "pass another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file between our open and lock: lock the new one
    stale = os.fstat(fd).st_size > 0
    if stale:
        log.warning("%s: taking over the lock of a build that is gone (%s)", path, _holder(path))
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)  # before unlocking: a waiting build then creates a fresh file
        os.close(fd)
