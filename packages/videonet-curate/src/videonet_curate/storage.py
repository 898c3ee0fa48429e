"""Where outputs land: atomic writes and file hashes, the one place every package writes files through.

A file appears complete or not at all: data goes to a temporary name in the same directory, is
fsynced, then renamed over the final name (``os.replace`` is atomic within a filesystem). The
temporary file is created with mode 0666 less the process umask, like any ``open()``, so outputs keep
the permissions users expect; on error it is removed.

Every function here also takes a URI (``s3://bucket/key``, ``gs://...``, anything fsspec resolves);
see ``uri.py`` for how a URI becomes a filesystem. Object stores have no rename, so there the data is
written to a local temporary file first and uploaded to the final key in one PUT (or one multipart
upload, which S3 makes visible only when it completes): a key appears complete or not at all.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from videonet_curate.uri import StorageOptions, is_uri, resolve, storage_errors


def _temporary_name(path: Path) -> Path:
    # hidden, next to the target (same filesystem), unique per writer, ending in .tmp so that no glob for
    # the final kind (*.done, *.parquet) ever matches it; writers that pick a format by the file name
    # (matplotlib, PIL) are told the format
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str], options: StorageOptions | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that wants a file name (pyarrow, numpy, torch,
    PIL, matplotlib); when the block ends cleanly it is fsynced and renamed to ``path``.

    The temporary file exists (empty, with the umask's permissions) when the block starts, so writers
    that open by name keep those permissions. Missing parent directories are created. For a URI the
    temporary file is local and is uploaded to the final key when the block ends cleanly.
    """
    if is_uri(path):
        with _local_then_upload(str(path), options) as tmp:
            yield tmp
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _local_then_upload(uri: str, options: StorageOptions | None) -> Iterator[Path]:
    """A local temporary file, uploaded to ``uri`` in one PUT when the block ends cleanly."""
    import tempfile

    fs, key = resolve(uri, options)
    handle, name = tempfile.mkstemp(prefix=".videonet-", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        with storage_errors(uri, options, writing=True):
            fs.put_file(str(tmp), key)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(
    path: str | os.PathLike[str],
    mode: str = "wb",
    *,
    options: StorageOptions | None = None,
    **kwargs: Any,
) -> Iterator[IO[Any]]:
    """``open(path, mode)`` that writes to a temporary name and renames it to ``path`` on success
    (missing parent directories are created; a URI is uploaded when the block ends)."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a new file; mode {mode!r} is not a write mode")
    if is_uri(path):
        with _local_then_upload(str(path), options) as tmp, open(tmp, mode, **kwargs) as handle:
            yield handle
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        with open(tmp, "x" + mode[1:], **kwargs) as handle:  # exclusive create, umask honoured
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, options: StorageOptions | None = None
) -> None:
    """Write ``data`` to ``path`` atomically (a URI: one PUT of the whole object)."""
    if is_uri(path):
        fs, key = resolve(str(path), options)
        with storage_errors(str(path), options, writing=True):
            fs.pipe_file(key, bytes(data))
        return
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, options: StorageOptions | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), options)


def json_safe(value: Any) -> Any:
    """NaN and infinities as null (strict JSON has neither; ``json.dumps`` would write a bare NaN that
    strict parsers reject), numpy scalars as Python numbers, recursively through dicts, lists, tuples."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def atomic_write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    indent: int | None = 2,
    options: StorageOptions | None = None,
    **kwargs: Any,
) -> None:
    """Write ``obj`` as strict JSON (NaN as null, a trailing newline) to ``path`` atomically; ``kwargs``
    go to ``json.dumps``."""
    kwargs.setdefault("allow_nan", False)
    atomic_write_text(path, json.dumps(json_safe(obj), indent=indent, **kwargs) + "\n", options)


def file_sha256(
    path: str | os.PathLike[str], *, chunk_bytes: int = 1 << 22, options: StorageOptions | None = None
) -> str:
    """Hex SHA-256 of a file's (or object's) bytes, read in chunks (weights and videos are large)."""
    digest = hashlib.sha256()
    if is_uri(path):
        fs, key = resolve(str(path), options)
        with storage_errors(str(path), options), fs.open(key, "rb", block_size=chunk_bytes) as handle:
            while chunk := handle.read(chunk_bytes):
                digest.update(chunk)
        return digest.hexdigest()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
