"""`build --source kinetics --mirror` with object storage, against a real S3 API (moto's server on
loopback): a local mirror built into ``--out s3://``, and a mirror that is itself in the bucket
(``--mirror s3://``), read in place with range requests. Three real rows of a Kinetics CSV: one clip in a
label folder, one flat, one absent. Both builds run in this process (--no-ray; the Ray actors' reading of
URIs is test_build_s3.py's), once for the module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from videonet_curate.cli import app
from videonet_curate.fetch.mirror import index_mirror
from videonet_curate.fetch.validate import decode_clip
from videonet_curate.uri import using_options

pytestmark = pytest.mark.slow

SLICE = Path(__file__).resolve().parents[1] / "data" / "kinetics-slice.csv"
# row of the slice -> (sample video, folder in the mirror); the third row has no file: missing
MIRRORED = {0: ("cup.mp4", "abseiling"), 1: ("realshort.mp4", "")}


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory: pytest.TempPathFactory, sample_videos: Path):
    """(annotations CSV, local mirror, {clip_id: file relative to the mirror}, the missing clip id)."""
    root = tmp_path_factory.mktemp("kinetics")
    lines = SLICE.read_text().splitlines()
    (root / "val.csv").write_text("\n".join(lines[:4]) + "\n")
    mirror, files, missing = root / "mirror", {}, None
    for i, line in enumerate(lines[1:4]):
        _label, youtube_id, start, end, *_ = line.split(",")
        clip_id = f"{youtube_id}_{int(start):06d}_{int(end):06d}"
        if i not in MIRRORED:
            missing = clip_id
            continue
        sample, folder = MIRRORED[i]
        rel = f"{folder}/{clip_id}.mp4" if folder else f"{clip_id}.mp4"
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample_videos / sample, mirror / rel)
        files[clip_id] = rel
    (mirror / "abseiling" / "notes.txt").write_text("not a clip")  # ignored by the index
    return root / "val.csv", mirror, files, missing


def _build(bucket, annotations: Path, mirror: str, out: str):
    args = ["build", "--no-ray", "--source", "kinetics", "--annotations", str(annotations)]
    args += ["--mirror", mirror, "--out", out, *bucket.option_args]
    args += ["--frames-per-clip", "2", "--min-score", "0", "--shard-size", "1", "--threads", "1"]
    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def builds(s3_module_bucket, kinetics):
    """The local mirror built into s3://BUCKET/local-mirror; the same mirror uploaded to
    s3://BUCKET/mirror and built into s3://BUCKET/s3-mirror. Returns (bucket, {name: CLI result})."""
    bucket = s3_module_bucket
    annotations, mirror, files, _missing = kinetics
    for rel in [*files.values(), "abseiling/notes.txt"]:
        bucket.client().upload_file(str(mirror / rel), bucket.name, f"mirror/{rel}")
    results = {
        "local-mirror": _build(bucket, annotations, str(mirror), bucket.uri("local-mirror")),
        "s3-mirror": _build(bucket, annotations, bucket.uri("mirror"), bucket.uri("s3-mirror")),
    }
    return bucket, results


def _rows(bucket, name: str) -> dict[str, dict]:
    return {r["clip_id"]: r for r in bucket.read_manifest(bucket.uri(name)).to_pylist()}


@pytest.mark.parametrize("name", ["local-mirror", "s3-mirror"])
def test_a_kinetics_mirror_build_into_s3_reads_the_clips_from_the_mirror(builds, kinetics, name) -> None:
    bucket, results = builds
    _annotations, mirror, files, missing = kinetics
    result = results[name]
    assert result.exit_code == 1, result.output  # 1: a row is missing from the mirror
    rows = _rows(bucket, name)
    assert set(rows) == {*files, missing}
    assert (rows[missing]["status"], rows[missing]["reason"]) == ("missing", "missing_from_mirror")
    for clip_id, rel in files.items():
        row = rows[clip_id]
        assert row["status"] == "kept" and row["frames_sampled"] == 2, row
        # the clip is used where it lies in the mirror: a local file, or the object in the bucket
        expected = f"file://{mirror / rel}" if name == "local-mirror" else bucket.uri("mirror", rel)
        assert row["path"] == expected
        assert row["end_s"] == pytest.approx(decode_clip(mirror / rel).duration_s, abs=0.01)
    summary = json.loads(
        bucket.client().get_object(Bucket=bucket.name, Key=f"{name}/summary.json")["Body"].read()
    )
    assert summary["source"]["mirror_hits"] == 2, summary
    bucket.assert_build_outputs_only(name)


def test_an_s3_mirror_gives_the_manifest_of_the_same_local_mirror(builds) -> None:
    bucket, _results = builds
    local, remote = _rows(bucket, "local-mirror"), _rows(bucket, "s3-mirror")
    columns = [
        "status",
        "reason",
        "label",
        "start_s",
        "end_s",
        "duration_s",
        "source_start_s",
        "source_end_s",
    ]
    assert {c: [r[k] for k in columns] for c, r in remote.items()} == {
        c: [r[k] for k in columns] for c, r in local.items()
    }
    for clip_id, row in remote.items():
        if row["score"] is not None:
            assert row["score"] == pytest.approx(local[clip_id]["score"], abs=1e-4)


def test_a_mirror_indexes_the_same_in_a_bucket_and_on_disk(builds, kinetics) -> None:
    bucket, _results = builds
    _annotations, mirror, files, _missing = kinetics
    with using_options(bucket.options()):
        remote = index_mirror(bucket.uri("mirror"))
    local = index_mirror(mirror)
    assert list(remote) == list(local)  # the same walk order (it decides which of two copies is used)
    assert remote == {clip_id: bucket.uri("mirror", rel) for clip_id, rel in files.items()}
    assert {clip_id: str(p) for clip_id, p in local.items()} == {c: str(mirror / r) for c, r in files.items()}
