"""`videonet-curate build --source local` end to end on the real sample clips, with bad files among them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from videonet_curate import manifest as mf

pytestmark = pytest.mark.slow

GOOD = ["cockatoo.mp4", "bikes.mp4", "cup.mp4", "realshort.mp4", "cityCC0.mpg"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "videonet_curate", "build", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _build_small_clips(input_dir: Path, out: Path) -> subprocess.CompletedProcess:
    """The build under test; the resume test must repeat exactly the same command."""
    return _run(
        "--input", str(input_dir), "--out", str(out),
        "--clip-seconds", "5", "--shard-size", "3", "--frames-per-clip", "4",
    )  # fmt: skip


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory, sample_videos: Path) -> Path:
    root = tmp_path_factory.mktemp("input")
    (root / "nested").mkdir()
    for name in GOOD[:-1]:
        shutil.copy(sample_videos / name, root / name)
    shutil.copy(sample_videos / GOOD[-1], root / "nested" / "city.bin")  # a video whatever its extension
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("this is not a video\n" * 20)
    data = (sample_videos / "bikes.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory, input_dir: Path):
    out = tmp_path_factory.mktemp("out")
    proc = _build_small_clips(input_dir, out)
    return out, proc


def test_build_finishes_with_failures_accounted_for(built):
    out, proc = built
    assert proc.returncode == 1, proc.stderr[-3000:]
    table = mf.read_manifest(out / "manifest.parquet")
    rows = {r["clip_id"]: r for r in table.to_pylist()}
    by_source = {}
    for row in rows.values():
        by_source.setdefault(row["source_id"], []).append(row)
    assert set(by_source) == {*GOOD[:-1], "nested/city.bin", "empty.mp4", "notes.mp4", "truncated.mp4"}
    for name in ("empty.mp4", "notes.mp4"):
        (row,) = by_source[name]
        assert row["status"] == "failed" and row["reason"] == "not_a_video", row
    for row in by_source["truncated.mp4"]:
        # what survives of a truncated file may still be labelled; what does not is a decode error
        assert row["status"] in {"kept", "low_score", "failed"}
        if row["status"] == "failed":
            assert row["reason"] == "decode_error"
    # 14 s of cockatoo in 5 s clips -> 3 clips; windows cover the video
    cockatoo = sorted(by_source["cockatoo.mp4"], key=lambda r: r["start_s"])
    assert len(cockatoo) >= 2
    assert cockatoo[0]["start_s"] == 0.0 and cockatoo[-1]["end_s"] == pytest.approx(14.0, abs=0.6)
    assert len(by_source["realshort.mp4"]) == 1  # shorter than a clip -> one clip


def test_labels_are_plausible(built):
    out, _ = built
    table = mf.read_manifest(out / "manifest.parquet")
    labelled = [r for r in table.to_pylist() if r["label"] is not None]
    cockatoo = [r for r in labelled if r["source_id"] == "cockatoo.mp4"]
    # the bird fills the frame in the first seconds; later the camera wanders off it
    first = min(cockatoo, key=lambda r: r["start_s"])
    assert first["label"] == 89, [(r["start_s"], r["label_name"]) for r in cockatoo]
    (city,) = [r for r in labelled if r["source_id"] == "nested/city.bin" and r["start_s"] == 0.0]
    assert city["status"] == "kept"
    for row in labelled:
        assert 0 <= row["label"] < 1000 and 0.0 < row["score"] <= 1.0
        assert row["top5_labels"][0] == row["label"] and 1 <= len(row["top5_scores"]) <= 5
        assert row["margin"] >= 0
        assert row["frames_sampled"] == 4


def test_outputs_metadata_and_embeddings(built):
    out, _ = built
    meta = mf.read_metadata(out / "manifest.parquet")
    assert meta["model_id"].startswith("efficientnet-lite0") and meta["prototype_set"]
    assert meta["config"]["clip_seconds"] == 5.0
    table = mf.read_manifest(out)
    emb = pq.read_table(out / "embeddings.parquet")
    labelled = {r["clip_id"] for r in table.to_pylist() if r["label"] is not None}
    assert set(emb.column("clip_id").to_pylist()) == labelled
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == table.num_rows and sum(summary["status_counts"].values()) == table.num_rows
    assert (out / "class_histogram.png").stat().st_size > 1000
    for row in mf.kept_rows(table).to_pylist():
        assert mf.resolve_clip_path(out / "manifest.parquet", row["path"]).exists()


def test_rerun_skips_finished_shards_and_gives_the_same_manifest(built, input_dir):
    out, _ = built
    first = mf.read_manifest(out).select(["clip_id", "status", "label"]).to_pylist()
    proc = _build_small_clips(input_dir, out)
    assert proc.returncode == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shards"]["skipped_as_done"] == summary["shards"]["total"] > 0
    assert mf.read_manifest(out).select(["clip_id", "status", "label"]).to_pylist() == first


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--input", "/nonexistent/videos"], "does not exist"),
        (["--model", "no-such-model"], "no-such-model"),
    ],
)
def test_bad_arguments_exit_2_and_name_the_input(tmp_path, input_dir, args, needle):
    base = ["--input", str(input_dir), "--out", str(tmp_path / "o")]
    proc = _run(*base, *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert needle in proc.stderr
    assert not (tmp_path / "o" / "manifest.parquet").exists()


def test_empty_input_directory_exits_2(tmp_path):
    (tmp_path / "in").mkdir()
    proc = _run("--input", str(tmp_path / "in"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "holds no files" in proc.stderr


def test_unwritable_output_exits_2(tmp_path, input_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = _run("--input", str(input_dir), "--out", str(blocker / "sub"))
    assert proc.returncode == 2 and "--out" in proc.stderr
