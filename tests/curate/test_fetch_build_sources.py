"""`videonet-curate build --source kinetics|urls` end to end, as users run it (a subprocess), against
loopback servers: kept rows with the right segment durations, offline honesty, the mirror at full
Kinetics scale, --retry-failed, and kill -9 at several points followed by a resume."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_env import cli_env
from loopback import Loopback, serve

from videonet_curate.fetch.validate import decode_clip

pytestmark = pytest.mark.slow

SERVED = {
    "bikes.mp4": "bikes.mp4",
    "box.mp4": "box.mp4",
    "cockatoo.mp4": "cockatoo.mp4",
    "cup.mp4": "cup.mp4",
    # Kinetics rows need real YouTube ids (11 characters): the same videos under such names
    "bikesBIKES1.mp4": "bikes.mp4",
    "cup-CUP-cup.mp4": "cup.mp4",
}
# one clip per batch keeps the model's work small; Ray starts with two CPUs like this machine
COMMON = [
    "--frames-per-clip",
    "4",
    "--batch-frames",
    "4",
    "--min-height",
    "100",
    "--max-rps",
    "50",
    "--workers",
    "1",
    "--threads",
    "1",
]


@pytest.fixture(scope="module")
def server(sample_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Loopback:
    root = tmp_path_factory.mktemp("served")
    for name, src in SERVED.items():
        shutil.copy(sample_videos / src, root / name)
    with serve(root) as lb:
        yield lb


def _build_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "videonet_curate", "build", *COMMON, *args]


def _run(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_build_cmd(*args), env=cli_env(), capture_output=True, text=True, timeout=timeout)


def _manifest(out: Path) -> list[dict]:
    return sorted(pq.read_table(out / "manifest.parquet").to_pylist(), key=lambda r: r["clip_id"])


def _url_list(server: Loopback, path: Path) -> Path:
    rows = ["url,start,end"]
    for name, (start, end) in [
        ("bikes", (0, 3)),
        ("bikes", (4, 8)),
        ("box", (1, 4)),
        ("box", (6, 9)),
        ("cockatoo", (0, 3)),
        ("cockatoo", (5, 8)),
        ("cup", (2, 5)),
        ("gone", (0, 3)),
    ]:
        rows.append(f"{server.url(name + '.mp4')},{start},{end}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_kinetics_url_template_and_url_list_give_kept_segments(server: Loopback, tmp_path: Path) -> None:
    csv = tmp_path / "k.csv"
    csv.write_text(
        "label,youtube_id,time_start,time_end,split\nriding a bike,bikesBIKES1,2,7,val\n"
        "cup,cup-CUP-cup,1,6,val\nmissing,nopeNOPE404,0,10,val\n"
    )
    out = tmp_path / "k"
    done = _run(
        "--source",
        "kinetics",
        "--annotations",
        str(csv),
        "--out",
        str(out),
        "--url-template",
        server.base_url + "/{youtube_id}.mp4",
    )
    assert done.returncode == 1, done.stderr[-3000:]  # finished, with one failure (404)
    rows = {r["clip_id"]: r for r in _manifest(out)}
    assert (
        rows["nopeNOPE404_000000_000010"]["status"] == "failed"
        and rows["nopeNOPE404_000000_000010"]["reason"] == "unavailable"
    )
    for clip_id, start in [("bikesBIKES1_000002_000007", 2.0), ("cup-CUP-cup_000001_000006", 1.0)]:
        row = rows[clip_id]
        assert row["status"] in ("kept", "low_score") and row["source_start_s"] == start
        assert row["path"] == f"clips/{clip_id}.mp4" and row["end_s"] - row["start_s"] == pytest.approx(
            5.0, abs=0.2
        )
        assert decode_clip(out / row["path"]).duration_s == pytest.approx(5.0, abs=0.2)

    out = tmp_path / "u"
    done = _run(
        "--source",
        "urls",
        "--input",
        str(_url_list(server, tmp_path / "l.csv")),
        "--out",
        str(out),
        "--no-ray",
    )
    assert done.returncode == 1, done.stderr[-3000:]
    rows = _manifest(out)
    assert len(rows) == 8 and sum(r["path"] is not None for r in rows) == 7
    for row in rows:
        if row["path"] is not None:
            wanted = row["source_end_s"] - row["source_start_s"]
            assert decode_clip(out / row["path"]).duration_s == pytest.approx(wanted, abs=0.2)
            assert row["end_s"] - row["start_s"] == pytest.approx(wanted, abs=0.2)


def test_offline_run_finishes_fast_with_every_row_network(tmp_path: Path) -> None:
    slice_csv = Path(__file__).resolve().parents[1] / "data" / "kinetics-slice.csv"
    started = time.perf_counter()
    done = _run(
        "--source",
        "kinetics",
        "--annotations",
        str(slice_csv),
        "--out",
        str(tmp_path / "o"),
        "--url-template",
        "http://no-such-host.invalid/{youtube_id}.mp4",
        "--no-ray",
        timeout=120,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert time.perf_counter() - started < 90
    rows = _manifest(tmp_path / "o")
    assert len(rows) == 39 and {(r["status"], r["reason"]) for r in rows} == {("failed", "network")}
    assert "network" in done.stderr  # the summary table names the reason


@pytest.mark.needs_shared
def test_mirror_at_full_kinetics_600_val_scale(
    kinetics_dir: Path, sample_videos: Path, tmp_path: Path
) -> None:
    csv = kinetics_dir / "kinetics-600_val.csv"
    lines = csv.read_text().splitlines()[1:]
    picked = [lines[0], lines[12_345], lines[-1]]
    mirror = tmp_path / "mirror"
    for i, line in enumerate(picked):
        label, youtube_id, start, end, _ = line.rsplit(",", 4)
        folder = mirror / label.strip('"') if i == 0 else mirror  # per-label folder and flat, both
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample_videos / "bikes.mp4", folder / f"{youtube_id}_{int(start):06d}_{int(end):06d}.mp4")
    started = time.perf_counter()
    done = _run(
        "--source",
        "kinetics",
        "--annotations",
        str(csv),
        "--mirror",
        str(mirror),
        "--out",
        str(tmp_path / "o"),
    )
    elapsed = time.perf_counter() - started
    assert done.returncode == 1, done.stderr[-3000:]
    rows = pq.read_table(tmp_path / "o" / "manifest.parquet", columns=["clip_id", "status", "reason", "path"])
    assert rows.num_rows == 30_000
    statuses = rows.column("status").to_pylist()
    assert statuses.count("missing") == 29_997
    assert set(rows.column("reason").to_pylist()) >= {"missing_from_mirror"}
    fetched = [r for r in rows.to_pylist() if r["status"] != "missing"]
    assert len(fetched) == 3 and all(r["path"] for r in fetched)
    shards = list((tmp_path / "o" / "shards").glob("*.done"))
    assert len(shards) == 1  # only the three present clips went to workers
    assert elapsed < 240


def test_retry_failed_refetches_only_transient_failures(server: Loopback, tmp_path: Path) -> None:
    listing = _url_list(server, tmp_path / "l.csv")
    out = tmp_path / "o"
    server.script("/cup.mp4", ["429"], always=True)
    try:
        first = _run(
            "--source", "urls", "--input", str(listing), "--out", str(out), "--no-ray", "--max-retries", "0"
        )
    finally:
        server.script("/cup.mp4", [])
    assert first.returncode == 1
    before = {r["clip_id"]: r for r in _manifest(out)}
    blocked = [c for c, r in before.items() if r["reason"] == "blocked"]
    assert len(blocked) == 1 and blocked[0].startswith("cup_")
    requests_before = len(server.log.entries)
    again = _run("--source", "urls", "--input", str(listing), "--out", str(out), "--no-ray", "--retry-failed")
    assert again.returncode == 1  # the 404 stays failed: permanent failures are not retried
    after = {r["clip_id"]: r for r in _manifest(out)}
    assert after.keys() == before.keys()
    assert after[blocked[0]]["status"] in ("kept", "low_score")
    for clip_id, row in before.items():
        if clip_id != blocked[0]:
            assert (after[clip_id]["status"], after[clip_id]["reason"]) == (row["status"], row["reason"])
    paths = {p for p, _, _ in server.log.entries[requests_before:]}
    assert paths == {"/cup.mp4"}  # nothing else was fetched again
    emb = pq.read_table(out / "embeddings.parquet").column("clip_id").to_pylist()
    assert set(emb) == {c for c, r in after.items() if r["path"] is not None}


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _assert_no_partial_files(out: Path) -> None:
    leftovers = [
        p
        for p in out.rglob("*")
        if p.is_file() and (p.name.startswith(".") or ".partial" in p.parts or p.suffix in (".part", ".tmp"))
    ]
    assert leftovers == []
    for clip in (out / "clips").glob("*.mp4"):
        decode_clip(clip)  # every visible clip is complete


def test_kill_9_then_rerun_matches_an_uninterrupted_run(server: Loopback, tmp_path: Path) -> None:
    listing = _url_list(server, tmp_path / "l.csv")
    args = ["--source", "urls", "--input", str(listing), "--shard-size", "2"]
    reference = _run(*args, "--out", str(tmp_path / "ref"))
    assert reference.returncode == 1, reference.stderr[-3000:]
    expected = [(r["clip_id"], r["status"]) for r in _manifest(tmp_path / "ref")]

    kill_points = {
        "first clip downloaded": lambda out: any((out / "clips").glob("*.mp4")),
        "first shard done": lambda out: any((out / "shards").glob("*.done")),
    }
    for name, reached in kill_points.items():
        out = tmp_path / name.replace(" ", "-")
        proc = subprocess.Popen(
            _build_cmd(*args, "--out", str(out)),
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        hit = _wait_for(lambda out=out, reached=reached: reached(out), proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(1.0)  # let Ray notice its driver died and stop that job's workers
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # and anything of the session that outlived it
        except ProcessLookupError:
            pass
        assert hit, f"the build ended before the kill point {name!r}"
        assert not (out / "manifest.parquet").exists()
        resumed = _run(*args, "--out", str(out))
        assert resumed.returncode == 1, resumed.stderr[-3000:]
        rows = _manifest(out)
        assert [(r["clip_id"], r["status"]) for r in rows] == expected, name
        assert len({r["clip_id"] for r in rows}) == len(rows)
        _assert_no_partial_files(out)
