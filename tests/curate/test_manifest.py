import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from videonet_curate import manifest as mf


def _rows():
    return [
        mf.empty_row(
            clip_id="a-0",
            source="local",
            source_id="a.mp4",
            path="../in/a.mp4",
            start_s=0.0,
            end_s=10.0,
            status="kept",
            label=89,
            label_name="sulphur-crested cockatoo",
            score=0.8,
        ),
        mf.empty_row(
            clip_id="b-0",
            source="local",
            source_id="b.mp4",
            path=None,
            start_s=0.0,
            end_s=0.0,
            status="failed",
            reason="not_a_video",
            detail="no video stream",
        ),
    ]


def test_round_trip_keeps_rows_and_metadata(tmp_path):
    path = mf.write_manifest(
        mf.rows_to_table(_rows()),
        tmp_path / "manifest.parquet",
        model_id="efficientnet-lite0",
        prototype_set="classifier-rows",
        config={"k": 1},
    )
    table = mf.read_manifest(tmp_path)
    assert table.column("clip_id").to_pylist() == ["a-0", "b-0"]
    assert table.schema.names[: len(mf.SCHEMA.names)] == mf.SCHEMA.names
    meta = mf.read_metadata(path)
    assert meta["schema_version"] == mf.SCHEMA_VERSION
    assert meta["model_id"] == "efficientnet-lite0"
    assert meta["config"] == {"k": 1}
    assert mf.kept_rows(table).num_rows == 1


def test_no_temporary_file_is_left_behind(tmp_path):
    mf.write_manifest(mf.rows_to_table(_rows()), tmp_path / "manifest.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.parquet"]


def test_failed_write_leaves_the_old_manifest_intact(tmp_path, monkeypatch):
    target = tmp_path / "manifest.parquet"
    mf.write_manifest(mf.rows_to_table(_rows()), target)
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError):
        mf.write_manifest(mf.rows_to_table(_rows()[:1]), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.parquet"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "maybe"}, "unknown status"),
        ({"reason": "gremlins"}, "unknown reason"),
        ({"clip_id": "b-0"}, "not unique"),
        ({"label": None}, "no label"),
    ],
)
def test_validation_names_the_problem(change, message):
    rows = _rows()
    rows[0].update(change)
    with pytest.raises(mf.ManifestError, match=message):
        mf.validate(mf.rows_to_table(rows))


def test_missing_required_column_is_rejected(tmp_path):
    table = mf.rows_to_table(_rows()).drop_columns(["start_s"])
    pq.write_table(table, tmp_path / "manifest.parquet")
    with pytest.raises(mf.ManifestError, match="start_s"):
        mf.read_manifest(tmp_path / "manifest.parquet")


def test_unknown_extra_columns_survive(tmp_path):
    table = mf.rows_to_table(_rows()).append_column("future_column", pa.array([1, 2]))
    mf.write_manifest(table, tmp_path / "manifest.parquet")
    assert "future_column" in mf.read_manifest(tmp_path).column_names


def test_missing_and_unreadable_manifests_say_what_to_pass(tmp_path):
    with pytest.raises(mf.ManifestError, match="videonet-curate build"):
        mf.read_manifest(tmp_path / "nope.parquet")
    bad = tmp_path / "manifest.parquet"
    bad.write_text("not parquet")
    with pytest.raises(mf.ManifestError, match="not a readable Parquet"):
        mf.read_manifest(bad)


def test_clip_paths_resolve_relative_to_the_manifest(tmp_path):
    assert (
        mf.resolve_clip_path(tmp_path / "manifest.parquet", "clips/a.mp4")
        == (tmp_path / "clips/a.mp4").resolve()
    )
    assert mf.resolve_clip_path(tmp_path, "/abs/a.mp4").as_posix() == "/abs/a.mp4"
