"""`videonet-curate` against malformed and hostile inputs, as a user meets them.

Every case asserts the exit code of the contract (README, "Exit codes"), one error line that names the
input, and that nothing outside the output root changed (the whole tmp tree is snapshotted before and
after). Commands run in-process with typer's CliRunner; only the signal cases need a subprocess.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_report import write_build_output
from typer.testing import CliRunner

from videonet_curate.cli import app

REAL_ID = "0wR5jVB-WPk"  # the first row of kinetics-400_val.csv
runner = CliRunner()


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every entry under ``root``: its kind and content hash (files), so any change shows."""
    state: dict[str, tuple[str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            key = os.fsencode(path.relative_to(root)).hex()
            if path.is_symlink():
                state[key] = ("link", hash(os.readlink(path)))
            elif path.is_dir():
                state[key] = ("dir", 0)
            else:
                state[key] = ("file", int(hashlib.sha1(path.read_bytes()).hexdigest()[:12], 16))
    return state


def outside(state: dict[str, tuple[str, int]], root: Path, out: Path | None) -> dict[str, tuple[str, int]]:
    if out is None:
        return state
    prefix = os.fsencode(out.relative_to(root)).hex()
    sep = os.fsencode("/").hex()
    return {k: v for k, v in state.items() if k != prefix and not k.startswith(prefix + sep)}


def invoke(
    root: Path, args: list[str], *, out: Path | None, code: int, names: str, max_seconds: float | None = None
) -> str:
    """Run ``videonet-curate ARGS``; check the exit code, the one-line message and the untouched tree."""
    before = outside(snapshot(root), root, out)
    started = time.perf_counter()
    result = runner.invoke(app, args)
    elapsed = time.perf_counter() - started
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith(("error:", "internal error:"))]
    if code in (2, 3):
        assert len(errors) == 1, result.stderr
        assert names in errors[0], (names, errors[0])
    if max_seconds is not None:
        assert elapsed < max_seconds, f"took {elapsed:.1f} s to refuse"
    assert outside(snapshot(root), root, out) == before, "something outside the output root changed"
    if code == 2 and out is not None:
        assert not out.exists(), f"exit 2 left {sorted(p.name for p in out.rglob('*'))} in {out}"
    return errors[0] if errors else ""


def build(*args: str) -> list[str]:
    return ["build", "--no-ray", "--frames-per-clip", "2", "--batch-frames", "2", *args]


@pytest.fixture
def root(tmp_path: Path, sample_videos: Path) -> Path:
    """A user's working tree: some videos, a victim directory that must never be touched."""
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(sample_videos / "realshort.mp4", videos / "short.mp4")
    (tmp_path / "victim_000001_000011.keep").mkdir()
    (tmp_path / "victim_000001_000011.keep" / "precious.txt").write_text("do not delete")
    return tmp_path


def csv_file(root: Path, text: str | bytes, name: str = "k.csv") -> Path:
    path = root / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# -- names and ids --------------------------------------------------------------------------------------
def test_dotdot_youtube_id_is_a_failed_row_never_a_path(root: Path) -> None:
    hostile = "../../../victim"
    annotations = csv_file(
        root,
        f"label,youtube_id,time_start,time_end,split\nx,{hostile},1,11,val\nx,{REAL_ID},1,11,val\n",
    )
    out = root / "out"
    args = build("--source", "kinetics", "--annotations", str(annotations), "--out", str(out))
    args += ["--url-template", "http://127.0.0.1:9/{youtube_id}.mp4", "--max-retries", "0"]
    invoke(root, args, out=out, code=1, names="")
    rows = {r["source_id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    bad = rows[hostile]
    assert (bad["status"], bad["reason"]) == ("failed", "bad_id") and "not a YouTube id" in bad["detail"]
    assert "/" not in bad["clip_id"] and bad["path"] is None
    assert rows[REAL_ID]["reason"] == "network"  # the good row went on (the port is closed)
    # rerun over an existing clips/.partial, as after a killed run: still nothing outside OUT changes
    (out / "clips" / ".partial" / f"{REAL_ID}_000001_000011.123").mkdir(parents=True)
    invoke(root, args, out=out, code=1, names="")
    assert (root / "victim_000001_000011.keep" / "precious.txt").read_text() == "do not delete"


def test_materialize_refuses_an_unsafe_clip_id_from_a_tampered_manifest(root: Path) -> None:
    from videonet_curate.fetch import FetchOptions, materialize

    clips = root / "out" / "clips"
    (clips / ".partial").mkdir(parents=True)
    before = outside(snapshot(root), root, root / "out")
    candidate = {"clip_id": "../../../victim_000001_000011", "source": "kinetics", "source_id": "x"}
    candidate.update(start_s=1.0, end_s=11.0)
    got = materialize(candidate, FetchOptions(url_template="http://127.0.0.1:9/{clip_id}.mp4"), clips)
    assert (got.status, got.reason, got.path) == ("failed", "bad_id", None)
    # a glob character in an id is literal, never a wildcard over other clips' partial downloads
    (clips / ".partial" / "abcdefghijk_000001_000011.7").mkdir()
    star = {**candidate, "clip_id": "a*_000001_000011"}
    materialize(star, FetchOptions(url_template="http://127.0.0.1:9/{clip_id}.mp4", max_retries=0), clips)
    assert (clips / ".partial" / "abcdefghijk_000001_000011.7").is_dir()
    assert outside(snapshot(root), root, root / "out") == before


def test_a_file_name_that_is_not_utf8_is_a_failed_row_not_an_abort(root: Path) -> None:
    videos = root / "videos"
    (videos / "short.mp4").unlink()
    (videos / os.fsdecode(b"caf\xe9.mp4")).write_bytes(b"x")
    (videos / "notes.txt").write_text("not a video")
    out = root / "out"
    invoke(root, build("--input", str(videos), "--out", str(out)), out=out, code=1, names="")
    rows = {r["reason"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert rows["bad_id"]["source_id"] == "caf\\xe9.mp4" and "UTF-8" in rows["bad_id"]["detail"]
    assert rows["not_a_video"]["source_id"] == "notes.txt"
    # nothing kept: the balance distances are undefined, and strict JSON has no NaN: null instead
    summary = json.loads(
        (out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}")
    )
    assert summary["curation"]["balance"]


# -- CSVs (Kinetics annotations) ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "names"),
    [
        (b"label,youtube_id,time_start,time_end,split\nabseiling,caf\xe9,1,11,val\n", "not UTF-8"),
        ("label,video,start,end\nx,abc,1,11\n", "lacks columns"),
        (
            "label,youtube_id,time_start,time_end,split\nx,,1,11,val\nx,abc,one,11,val\nx,abc,5,2,val\n",
            "no usable row",
        ),
        (
            "label,youtube_id,time_start,time_end,split\nx,../../etc,1,11,val\nx,short,1,11,val\n",
            "no usable row",
        ),
        ("", "is empty"),
        (b"\x00\x01\x02binary", "NUL bytes"),
    ],
    ids=["cp1252", "columns", "only-malformed", "only-bad-ids", "empty", "binary"],
)
def test_bad_annotation_csv_is_exit_2(root: Path, content: str | bytes, names: str) -> None:
    annotations = csv_file(root, content)
    out = root / "out"
    line = invoke(
        root,
        build(
            "--source",
            "kinetics",
            "--annotations",
            str(annotations),
            "--out",
            str(out),
            "--mirror",
            str(root / "videos"),
        ),
        out=out,
        code=2,
        names=names,
    )
    assert str(annotations) in line


@pytest.mark.parametrize(
    ("template", "names"),
    [
        ("http://host/{video}.mp4", "unknown fields"),
        ("ftp://host/{youtube_id}.mp4", "not an http"),
        ("http://h/{youtube_id", "--url-template"),
    ],
    ids=["unknown-field", "scheme", "brace"],
)
def test_bad_url_template_is_exit_2(root: Path, template: str, names: str) -> None:
    annotations = csv_file(root, f"youtube_id,time_start,time_end\n{REAL_ID},1,11\n")
    out = root / "out"
    args = build(
        "--source",
        "kinetics",
        "--annotations",
        str(annotations),
        "--out",
        str(out),
        "--url-template",
        template,
    )
    invoke(root, args, out=out, code=2, names=names)


# -- URL lists ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "names"),
    [
        ("l.txt", "https://example.org/a.mp4\nfile:///etc/passwd\n", "l.txt:2"),
        ("l.txt", "http:///nohost.mp4\n", "no host name"),
        ("l.txt", "https://example.org/a b.mp4\n", "spaces"),
        ("l.txt", "# only a comment\n\n", "lists no URLs"),
        ("l.csv", "link,start,end\nhttps://example.org/a.mp4,0,3\n", "no 'url' column"),
        ("l.csv", "url,start,end\nhttps://example.org/a.mp4,5,2\n", "not after start"),
        ("l.json", '["https://example.org/a.mp4"]', "unknown list type"),
    ],
    ids=["scheme", "no-host", "space", "comments-only", "no-url-column", "end-before-start", "json"],
)
def test_bad_url_list_is_exit_2(root: Path, name: str, content: str, names: str) -> None:
    listing = csv_file(root, content, name)
    out = root / "out"
    invoke(
        root,
        build("--source", "urls", "--input", str(listing), "--out", str(out)),
        out=out,
        code=2,
        names=names,
    )


# -- options and directories ----------------------------------------------------------------------------
def test_option_errors_are_exit_2(root: Path) -> None:
    videos, out = root / "videos", root / "out"
    cases = [
        (["--input", str(root / "absent"), "--out", str(out)], "does not exist"),
        (["--input", str(videos / "short.mp4"), "--out", str(out)], "not a directory"),
        (["--input", str(videos), "--out", str(videos / "curated")], "lies inside --input"),
        (["--input", str(videos), "--out", str(out), "--model", "resnet-9000"], "unknown --model"),
        (["--input", str(videos), "--out", str(out), "--target", str(root / "none.csv")], "none.csv"),
        (["--input", str(videos), "--out", str(out), "--device", "tpu"], "--device"),
        (["--input", str(videos), "--out", str(out), "--timeout", "inf"], "--timeout inf"),
    ]
    for args, names in cases:
        target_out = videos / "curated" if "lies inside" in names else out
        invoke(root, build(*args), out=target_out, code=2, names=names)
    (root / "empty").mkdir()
    invoke(
        root,
        build("--input", str(root / "empty"), "--out", str(out)),
        out=out,
        code=2,
        names="holds no files",
    )
    (root / "afile").write_text("x")
    invoke(
        root, build("--input", str(videos), "--out", str(root / "afile")), out=None, code=2, names="is a file"
    )
    args = build(
        "--source",
        "kinetics",
        "--annotations",
        str(csv_file(root, f"youtube_id,time_start,time_end\n{REAL_ID},1,11\n")),
    )
    invoke(
        root, [*args, "--out", str(out), "--ytdlp-opt", "exec=touch /tmp/x"], out=out, code=2, names="exec"
    )
    inside = root / "videos" / "out"
    mirror_args = [*args, "--out", str(inside), "--mirror", str(root / "videos")]
    invoke(root, mirror_args, out=inside, code=2, names="lies inside --mirror")


def test_build_refuses_uris_instead_of_making_a_directory_named_s3(root: Path, monkeypatch) -> None:
    """Only --out, --mirror and a local source's --input take URIs (test_build_s3.py,
    test_kinetics_mirror_s3.py); elsewhere a URI is refused."""
    monkeypatch.chdir(root)  # where a URI folded into a relative path would land
    out = str(root / "out")
    cases = [
        (
            ["--source", "urls", "--input", "s3://bucket/urls.csv", "--out", out],
            "--input s3://bucket/urls.csv: --input of --source urls takes a local path",
        ),
    ]
    for args, names in cases:
        invoke(root, build(*args), out=None, code=2, names=names)
    assert not (root / "s3:").exists() and not (root / "out").exists()


def test_cuda_without_a_gpu_and_a_dead_address_fail_in_seconds(root: Path) -> None:
    import torch

    import videonet_curate.build  # noqa: F401  (imports paid here: the timing is of the checks)
    import videonet_curate.models  # noqa: F401

    out = root / "out"
    if not torch.cuda.is_available():
        args = build("--input", str(root / "videos"), "--out", str(out), "--device", "cuda")
        invoke(root, args, out=out, code=2, names="--device cuda", max_seconds=5)
    args = ["build", "--input", str(root / "videos"), "--out", str(out), "--address", "127.0.0.1:9"]
    invoke(root, args, out=out, code=2, names="--address 127.0.0.1:9", max_seconds=10)


def test_a_second_build_into_the_same_out_is_refused_and_a_stale_lock_taken_over(root: Path) -> None:
    out = root / "out"
    out.mkdir()
    lock = out / ".lock"
    lock.write_text('{"pid": 999999999, "host": "elsewhere"}')  # left by a killed build: no flock held
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live build holds it
    try:
        line = invoke(
            root, build("--input", str(root / "videos"), "--out", str(out)), out=None, code=2, names=str(out)
        )
        assert "in use by another build" in line and "pid 999999999" in line
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        os.close(fd)
    (root / "videos" / "short.mp4").write_text("now not a video")  # keep the build free of model work
    invoke(root, build("--input", str(root / "videos"), "--out", str(out)), out=out, code=1, names="")
    assert not lock.exists()  # released at the end


def test_an_internal_error_is_exit_3_in_one_line(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import videonet_curate.build as build_module

    def broken(*_args: object, **_kwargs: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(build_module, "gather_candidates", broken)
    out = root / "out"
    line = invoke(
        root, build("--input", str(root / "videos"), "--out", str(out)), out=out, code=3, names="KeyError"
    )
    assert "--verbose" in line
    result = runner.invoke(app, build("--input", str(root / "videos"), "--out", str(out), "--verbose"))
    assert result.exit_code == 3 and "Traceback" in result.stderr


# -- publish, report, verify ----------------------------------------------------------------------------
def test_publish_never_overlaps_its_build(root: Path) -> None:
    out = write_build_output(root / "builds" / "b1")
    for to, names in [
        (out, "is the build"),
        (out / "pub", "lies inside"),
        (root / "builds", "holds the build"),
    ]:
        line = invoke(
            root, ["publish", str(out), "--to", str(to), "--overwrite"], out=None, code=2, names=str(to)
        )
        assert names in line
    invoke(root, ["report", str(root / "nothing")], out=None, code=2, names="nothing")
    invoke(root, ["verify", str(root / "nothing")], out=None, code=2, names="nothing")


# -- signals --------------------------------------------------------------------------------------------
def _three_videos(root: Path, sample_videos: Path) -> Path:
    videos = root / "videos"
    for name in ("bikes.mp4", "cup.mp4", "cockatoo.mp4"):
        shutil.copy(sample_videos / name, videos / name)
    return videos


def _wait_for_a_done_shard(out: Path, alive: object, timeout_s: float = 120) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():  # type: ignore[operator]
        done = sorted(p.name for p in (out / "shards").glob("*.done"))
        if done:
            return done
        time.sleep(0.05)
    raise AssertionError("no shard finished")


SIGNAL_ARGS = ["--shard-size", "1", "--clip-seconds", "2", "--threads", "1"]


def test_sigterm_to_the_process_group_stops_cleanly_and_keeps_finished_shards(
    root: Path, sample_videos: Path
) -> None:
    videos, out = _three_videos(root, sample_videos), root / "out"
    command = [sys.executable, "-m", "videonet_curate", *build("--input", str(videos), "--out", str(out))]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*command, *SIGNAL_ARGS], env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    done = _wait_for_a_done_shard(out, lambda: proc.poll() is None)
    os.killpg(proc.pid, signal.SIGTERM)  # what timeout, Slurm and systemd do
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr[-2000:]
    assert "interrupted by SIGTERM" in stderr and "Traceback" not in stderr
    assert set(done) <= {p.name for p in (out / "shards").glob("*.done")}  # finished shards stay finished
    assert not list((out / "shards").glob(".*.tmp")) and not (out / ".lock").exists()
    assert not (out / "manifest.parquet").exists()  # an interrupted build publishes no partial manifest


def test_sigint_stops_cleanly_with_130(
    root: Path, sample_videos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from videonet_curate.labeling import ShardLabeler

    videos, out = _three_videos(root, sample_videos), root / "out"
    run_shard = ShardLabeler.run_shard

    def run_shard_then_ctrl_c(self: ShardLabeler, shard: object) -> dict:
        summary = run_shard(self, shard)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C right after the first shard is committed
        return summary

    monkeypatch.setattr(ShardLabeler, "run_shard", run_shard_then_ctrl_c)
    result = runner.invoke(app, [*build("--input", str(videos), "--out", str(out)), *SIGNAL_ARGS])
    assert result.exit_code == 130, result.output
    assert "interrupted by SIGINT" in result.stderr
    assert len(list((out / "shards").glob("*.done"))) == 1 and not (out / ".lock").exists()
    assert not (out / "manifest.parquet").exists()


def test_a_report_link_planted_in_the_build_is_not_followed(root: Path) -> None:
    out = write_build_output(root / "builds" / "b1")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "report")
    invoke(root, ["report", str(out)], out=None, code=2, names="outside")
    assert not any(elsewhere.iterdir())
