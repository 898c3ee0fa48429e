"""The one containment check every write goes through, and the id rules."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from videonet_curate import manifest as mf
from videonet_curate.safepath import PathEscapeError, contained, is_safe_name, is_youtube_id
from videonet_curate.shards import plan_shards, write_shard


def test_contained_resolves_dotdot_and_links(tmp_path: Path) -> None:
    root = tmp_path / "out"
    (root / "clips").mkdir(parents=True)
    assert contained(root, root / "clips" / "a.mp4") == (root / "clips" / "a.mp4").resolve()
    with pytest.raises(PathEscapeError, match="outside"):
        contained(root, root / "clips" / ".." / ".." / "victim")
    os.symlink(tmp_path, root / "link")
    with pytest.raises(PathEscapeError):
        contained(root, root / "link" / "victim")


def test_id_rules() -> None:
    assert is_youtube_id("-abc_DEF123") and is_youtube_id("dQw4w9WgXcQ")
    for bad in ["../x", "short", "twelve_chars", "dQw4w9WgXc/", "dQw4w9WgXc\n", ""]:
        assert not is_youtube_id(bad)
    assert is_safe_name("dQw4w9WgXcQ_000001_000011") and is_safe_name("-bk_000010_000020")
    for bad in ["..", "a/b", "../a", ".hidden", "a..b", "x" * 201, "a b"]:
        assert not is_safe_name(bad)


def test_a_planted_shards_link_cannot_redirect_shard_writes(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "shards")
    shard = plan_shards([{"clip_id": "a"}], 1, "fp")[0]
    emb = pa.table({"clip_id": pa.array([], pa.string())})
    with pytest.raises(PathEscapeError):
        write_shard(out, shard, mf.rows_to_table([]), emb)
    assert not any(elsewhere.iterdir())
