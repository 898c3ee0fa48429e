"""`videonet-curate build --out s3://` against a real S3 API (moto's server on loopback), as users run it
(a subprocess): input videos and every output in the bucket, kill -9 and rerun (on Ray), the same
manifest as a local build, publish + verify, the lock object. Few clips (two short videos cut into 4 s
clips), builds shared by the module's tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_env import cli_env
from typer.testing import CliRunner

from videonet_curate.cli import app

pytestmark = pytest.mark.slow

MEDIA = ("realshort.mp4", "bikes.mp4")  # 1 + 3 clips of at most 4 s
COMMON = ["--clip-seconds", "4", "--frames-per-clip", "2", "--shard-size", "1", "--threads", "1"]


def _build_cmd(bucket, out: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "videonet_curate",
        "build",
        "--source",
        "local",
        "--input",
        bucket.uri("media"),
        "--out",
        out,
        *bucket.option_args,
        *COMMON,
        *args,
    ]


def _run(bucket, out: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _build_cmd(bucket, out, *args), env=cli_env(), capture_output=True, text=True, timeout=600
    )


def _manifest_local(out: Path):
    from videonet_curate import manifest as mf

    return mf.read_manifest(out)


@pytest.fixture(scope="module")
def reference(sample_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same videos built from and into local directories (--no-ray): what S3 builds must equal."""
    media = tmp_path_factory.mktemp("media")
    for name in MEDIA:
        (media / name).symlink_to(sample_videos / name)
    out = tmp_path_factory.mktemp("reference") / "out"
    # in this process (--no-ray): the imports and the sample model are already loaded by earlier tests
    result = CliRunner().invoke(app, ["build", "--input", str(media), "--out", str(out), "--no-ray", *COMMON])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def s3_build(s3_module_bucket, sample_videos: Path):
    """The videos uploaded to s3://BUCKET/media and built into s3://BUCKET/run: killed (SIGKILL, no
    cleanup at all) once its first shard was committed, then run again, on Ray, to the end.
    Returns (bucket, keys left by the killed build, the rerun's result)."""
    bucket = s3_module_bucket
    for name in MEDIA:
        bucket.client().upload_file(str(sample_videos / name), bucket.name, f"media/{name}")
    out = bucket.uri("run")
    proc = subprocess.Popen(
        _build_cmd(bucket, out, "--no-ray"),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        while not any(k.endswith(".done") for k in bucket.keys("run/")):
            assert proc.poll() is None and time.monotonic() < deadline, (
                "the build ended before its first shard"
            )
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    left = bucket.keys("run/")
    resumed = _run(bucket, out, "--decode-workers", "1", "--model-workers", "1")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return bucket, left, resumed


def test_kill_9_mid_build_then_rerun_leaves_outputs_only(s3_build) -> None:
    """The killed build left its lock and finished shards, no manifest; the rerun took the dead build's
    lock over, skipped those shards, and left no temporary key and no lock."""
    bucket, left, resumed = s3_build
    assert "run/.lock" in left and "run/manifest.parquet" not in left
    done_before = sum(k.endswith(".done") for k in left)
    assert "taking over the lock" in resumed.stderr
    bucket.assert_build_outputs_only("run")
    summary = json.loads(
        bucket.client().get_object(Bucket=bucket.name, Key="run/summary.json")["Body"].read()
    )
    assert summary["shards"]["total"] == 4 and summary["shards"]["skipped_as_done"] >= done_before >= 1
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in resumed.stdout + resumed.stderr


def test_the_s3_build_equals_a_local_build_with_uri_paths(s3_build, reference: Path) -> None:
    bucket, _left, _resumed = s3_build
    table, local = bucket.read_manifest(bucket.uri("run")), _manifest_local(reference)
    assert table.num_rows == 4 and set(table.column("path").to_pylist()) == {
        bucket.uri("media", n) for n in MEDIA
    }
    columns = ["clip_id", "status", "reason", "label", "start_s", "end_s"]
    assert table.select(columns).to_pylist() == local.select(columns).to_pylist()
    np.testing.assert_allclose(table.column("score").to_numpy(), local.column("score").to_numpy(), atol=1e-4)
    # the same fingerprints: the same shard names on S3 as on the local disk
    on_s3 = {k.removeprefix("run/shards/") for k in bucket.keys("run/shards/")}
    assert on_s3 == {p.name for p in (reference / "shards").iterdir()}


def test_a_build_on_s3_publishes_and_verifies(s3_build) -> None:
    bucket, _left, _resumed = s3_build
    runner = CliRunner()
    to = bucket.uri("published")
    done = runner.invoke(app, ["publish", bucket.uri("run"), "--to", to, *bucket.option_args])
    assert done.exit_code == 0, done.output
    ok = runner.invoke(app, ["verify", to, *bucket.option_args])
    assert ok.exit_code == 0 and "verifies" in ok.output, ok.output


def test_a_live_lock_refuses_a_second_build_and_a_stale_one_is_taken_over(s3_bucket) -> None:
    from videonet_curate.objlock import _S3Lock, object_lock
    from videonet_curate.outlock import OutputLocked
    from videonet_curate.uri import using_options

    with using_options(s3_bucket.options()):
        uri = s3_bucket.uri("run", ".lock")
        with object_lock(uri, OutputLocked, flag_value="OUT"):
            with pytest.raises(OutputLocked, match=rf"in use by another build \(pid {os.getpid()} "):
                with object_lock(uri, OutputLocked, flag_value="OUT"):
                    pass
        assert s3_bucket.keys() == []  # released
        # a holder on another host that stopped refreshing the lock is stale after stale_s
        s3_bucket.client().put_object(
            Bucket=s3_bucket.name, Key="run/.lock", Body=json.dumps({"pid": 1, "host": "gone"}).encode()
        )
        with pytest.raises(OutputLocked, match="pid 1 on gone"):
            with object_lock(uri, OutputLocked, flag_value="OUT", stale_s=3600):
                pass
        with object_lock(uri, OutputLocked, flag_value="OUT", stale_s=-1.0):
            record, _etag, _age = _S3Lock(uri).read()
            assert record["pid"] == os.getpid()
        assert s3_bucket.keys() == []


def test_a_build_whose_lock_is_taken_over_stops_with_130_and_writes_nothing(
    s3_bucket, sample_videos: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    """A build on node-a stalls (here: held before its first step) past the stale age; a build on
    node-b takes its lock over. node-a's next heartbeat finds its ETag gone: the build is interrupted
    (exit 130) before it writes anything, and leaves node-b's lock alone."""
    import threading
    import types

    from videonet_curate import build as build_module
    from videonet_curate import objlock
    from videonet_curate.outlock import OutputLocked
    from videonet_curate.uri import using_options

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("_thread.interrupt_main reaches the main thread only")
    host = ["node-a"]
    monkeypatch.setattr(objlock, "socket", types.SimpleNamespace(gethostname=lambda: host[0]))
    monkeypatch.setattr(objlock, "HEARTBEAT_S", 0.2)
    holding, taken, release = threading.Event(), threading.Event(), threading.Event()
    real_build_locked = build_module._build_locked

    def stalled_build_locked(*args, **kwargs):
        holding.set()
        deadline = time.monotonic() + 10  # < objlock's own 15 s beat: only the shortened one can stop it
        while time.monotonic() < deadline:  # short sleeps: the interruption lands between them
            time.sleep(0.05)
        return real_build_locked(*args, **kwargs)  # never reached unless the lock loss went unnoticed

    monkeypatch.setattr(build_module, "_build_locked", stalled_build_locked)
    uri = s3_bucket.uri("run", ".lock")

    def node_b() -> None:
        assert holding.wait(60)
        host[0] = "node-b"
        with using_options(s3_bucket.options()):
            # stale_s < 0: node-a's lock counts as abandoned at once (a real one waits for 90 s)
            with objlock.object_lock(uri, OutputLocked, flag_value="OUT", stale_s=-5.0):
                taken.set()
                release.wait(60)

    taker = threading.Thread(target=node_b, daemon=True)
    taker.start()
    media = tmp_path / "media"
    media.mkdir()
    (media / "realshort.mp4").symlink_to(sample_videos / "realshort.mp4")
    try:
        result = CliRunner().invoke(
            app,
            [
                "build",
                "--input",
                str(media),
                "--out",
                s3_bucket.uri("run"),
                "--no-ray",
                *s3_bucket.option_args,
            ],
        )
        assert taken.is_set() and result.exit_code == 130, result.output
        assert "took this build's lock over" in caplog.text
        assert s3_bucket.keys() == ["run/.lock"]  # no shard, no manifest: nothing mixed
        with using_options(s3_bucket.options()):
            record, _etag, _age = objlock._S3Lock(uri).read()
        assert record["host"] == "node-b"  # the lost build did not delete the new holder's lock
    finally:
        release.set()
        taker.join(30)
    assert s3_bucket.keys() == []  # node-b released it


def test_bad_s3_arguments_exit_2_before_anything_is_written(s3_bucket) -> None:
    runner = CliRunner()
    missing = runner.invoke(
        app,
        ["build", "--input", "/nonexistent", "--out", "s3://no-such-bucket-here/run", *s3_bucket.option_args],
    )
    assert missing.exit_code == 2 and "bucket no-such-bucket-here does not exist" in missing.output, (
        missing.output
    )
    mirror = runner.invoke(
        app,
        [
            "build",
            "--source",
            "kinetics",
            "--mirror",
            s3_bucket.uri("m"),
            "--out",
            s3_bucket.uri("run"),
            *s3_bucket.option_args,
        ],
    )
    # an empty prefix (a typo, or the wrong endpoint) is bad input, before anything is written
    assert mirror.exit_code == 2 and f"--mirror {s3_bucket.uri('m')} holds no objects" in mirror.output, (
        mirror.output
    )
    assert s3_bucket.keys() == []


def test_retry_failed_reads_the_manifest_and_embeddings_of_an_s3_out(s3_build) -> None:
    """What --retry-failed reads from OUT (the old manifest's rows, the carried rows' embeddings) works on
    a URI: no row of this build failed, so all are carried, each with its embedding."""
    from videonet_curate.embeddings import empty_embeddings
    from videonet_curate.sources.remote import carry_embeddings, retry_candidates
    from videonet_curate.uri import using_options

    bucket, _left, _resumed = s3_build
    with using_options(bucket.options()):
        retry, carried = retry_candidates(bucket.uri("run"), ["network", "blocked"])
        assert retry == [] and len(carried) == 4
        rows = bucket.read_manifest(bucket.uri("run"))
        embeddings = carry_embeddings(bucket.uri("run"), empty_embeddings(), rows)
    kept = [r["clip_id"] for r in rows.to_pylist() if r["status"] in ("kept", "low_score")]
    assert sorted(embeddings.column("clip_id").to_pylist()) == sorted(kept)
