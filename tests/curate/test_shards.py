import pyarrow as pa

from videonet_curate import manifest as mf
from videonet_curate.shards import (
    fingerprint,
    is_done,
    plan_shards,
    read_done_info,
    remove_stale,
    shard_paths,
    write_shard,
)


def _cands(n):
    return [{"clip_id": f"clip-{i:03d}"} for i in range(n)]


def test_plan_is_independent_of_discovery_order_and_covers_everything():
    a = plan_shards(_cands(10), 4, "fp")
    b = plan_shards(list(reversed(_cands(10))), 4, "fp")
    assert [s.name for s in a] == [s.name for s in b]
    assert [len(s.candidates) for s in a] == [4, 4, 2]
    assert sorted(c["clip_id"] for s in a for c in s.candidates) == [c["clip_id"] for c in _cands(10)]


def test_shard_names_change_with_config_and_content():
    base = plan_shards(_cands(4), 4, fingerprint({"model": "a"}))[0].name
    assert plan_shards(_cands(4), 4, fingerprint({"model": "b"}))[0].name != base
    assert plan_shards(_cands(5)[1:], 4, fingerprint({"model": "a"}))[0].name != base
    assert plan_shards(_cands(4), 4, fingerprint({"model": "a"}))[0].name == base


def test_done_marker_is_the_commit_point(tmp_path):
    shard = plan_shards(_cands(2), 2, "fp")[0]
    assert not is_done(tmp_path, shard)
    rows = mf.rows_to_table(
        [
            mf.empty_row(
                clip_id="clip-000",
                source="local",
                source_id="x",
                start_s=0.0,
                end_s=1.0,
                status="failed",
                reason="decode_error",
            )
        ]
    )
    emb = pa.table({"clip_id": pa.array([], pa.string()), "embedding": pa.array([], pa.list_(pa.float32()))})
    paths = write_shard(tmp_path, shard, rows, emb, {"model_id": "m"})
    assert is_done(tmp_path, shard)
    assert read_done_info(tmp_path, [shard])["model_id"] == "m"
    paths.done.unlink()
    assert not is_done(tmp_path, shard)


def test_remove_stale_keeps_only_the_current_plan(tmp_path):
    old = plan_shards(_cands(2), 2, "old")[0]
    new = plan_shards(_cands(2), 2, "new")[0]
    rows = mf.rows_to_table([])
    emb = pa.table({"clip_id": pa.array([], pa.string()), "embedding": pa.array([], pa.list_(pa.float32()))})
    write_shard(tmp_path, old, rows, emb)
    write_shard(tmp_path, new, rows, emb)
    (tmp_path / "shards" / ".leftover.tmp").write_text("partial")
    removed = remove_stale(tmp_path, [new])
    assert removed == 4
    assert is_done(tmp_path, new) and not shard_paths(tmp_path, old).rows.exists()


def test_shards_on_s3_commit_with_their_marker_and_are_found_by_one_listing(s3_bucket, tmp_path):
    """The same writer with OUT on S3: objects only (no temporary key), the marker as the commit point,
    finished shards found from one listing, stale ones removed; the same as on local disk."""
    from videonet_curate.shards import done_shards, read_shards
    from videonet_curate.uri import remove, using_options

    old, new, other = plan_shards(_cands(2), 2, "old")[0], *plan_shards(_cands(4), 2, "new")
    rows = mf.rows_to_table([])
    emb = pa.table({"clip_id": pa.array([], pa.string()), "embedding": pa.array([], pa.list_(pa.float32()))})
    out = s3_bucket.uri("run")
    with using_options(s3_bucket.options()):
        for shard in (old, new, other):
            write_shard(out, shard, rows, emb, {"model_id": "m"})
            write_shard(tmp_path, shard, rows, emb, {"model_id": "m"})
        remove(shard_paths(out, other).done)  # written, not committed
        (tmp_path / "shards" / f"{other.name}.done").unlink()
        assert (
            done_shards(out, [old, new, other])
            == done_shards(tmp_path, [old, new, other])
            == {old.name, new.name}
        )
        assert read_done_info(out, [new])["model_id"] == "m"
        assert [r.num_rows for r, _ in read_shards(out, [new])] == [0]
        assert remove_stale(out, [new, other]) == 3
    assert s3_bucket.keys() == sorted(
        f"run/shards/{n}" for n in (f"{new.name}.done", f"{new.name}.emb.parquet", f"{new.name}.rows.parquet",
                                    f"{other.name}.emb.parquet", f"{other.name}.rows.parquet")
    )  # fmt: skip
