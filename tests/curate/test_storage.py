"""storage.py: atomic writes (umask honoured, nothing left behind on error) and the file hash."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from videonet_curate.storage import (
    atomic_open,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_writes_replace_the_file_with_the_umask_permissions(tmp_path: Path, umask_022) -> None:
    target = tmp_path / "sub" / "out.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]}, sort_keys=True)
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's 0600
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_atomic_path_serves_writers_that_want_a_file_name(tmp_path: Path, umask_022) -> None:
    target = tmp_path / "table.parquet"
    with atomic_path(target) as tmp:
        # hidden and ending in .tmp: no glob for the final kind (*.parquet, *.done) sees a half-written file
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".tmp"
        pq.write_table(pa.table({"x": [1, 2, 3]}), tmp)
        assert not target.exists()  # invisible until the block ends
    assert pq.read_table(target).column("x").to_pylist() == [1, 2, 3]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["table.parquet"]


@pytest.mark.parametrize("writer", ["open", "path"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path, writer: str) -> None:
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="writer broke"):
        if writer == "open":
            with atomic_open(target) as handle:
                handle.write(b"half")
                raise RuntimeError("writer broke")
        else:
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"half")
                raise RuntimeError("writer broke")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_open_refuses_read_and_append_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a write mode"), atomic_open(tmp_path / "x", "ab"):
        pass


def test_file_sha256_matches_hashlib_across_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(path, chunk_bytes=1024) == hashlib.sha256(data).hexdigest()
