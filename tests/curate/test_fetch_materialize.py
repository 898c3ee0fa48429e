"""materialize() against loopback HTTP servers (127.0.0.1 only): segment downloads of the real sample
clips, every scripted fault ending in the right reason, retries only where they can help."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import av
import pytest
from loopback import Loopback, serve

from videonet_curate.fetch import FetchOptions, materialize
from videonet_curate.fetch.plan import plan_fetch
from videonet_curate.fetch.ratelimit import LocalLimiter
from videonet_curate.fetch.validate import decode_clip
from videonet_curate.sources.urls import read_url_list


@pytest.fixture(scope="module")
def server(sample_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Loopback:
    root = tmp_path_factory.mktemp("served")
    for name in ("bikes.mp4", "cockatoo.mp4", "cup.mp4"):
        shutil.copy(sample_videos / name, root / name)
    data = (sample_videos / "bikes.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(data[: len(data) // 3])  # a complete transfer of a truncated file
    with serve(root, stall_s=4.0) as lb:
        yield lb


def _opts(lb: Loopback, **kw: object) -> FetchOptions:
    base = dict(
        url_template=lb.base_url + "/{youtube_id}.mp4",
        min_height=100,
        socket_timeout_s=1.5,
        max_retries=2,
        backoff_base_s=0.05,
        backoff_max_s=0.2,
        max_rps=100.0,
        max_concurrent=4,
    )
    base.update(kw)
    return FetchOptions(**base)  # type: ignore[arg-type]


def _kinetics(youtube_id: str, start: int = 2, end: int = 7) -> dict:
    return {
        "clip_id": f"{youtube_id}_{start:06d}_{end:06d}",
        "source": "kinetics",
        "source_id": youtube_id,
        "url": None,
        "start_s": float(start),
        "end_s": float(end),
        "source_label": "x",
    }


def test_url_template_segment_is_downloaded_trimmed_and_valid(server: Loopback, tmp_path: Path) -> None:
    got = materialize(_kinetics("cockatoo", 3, 8), _opts(server), tmp_path, limiter=LocalLimiter(100, 4))
    assert got.status == "kept" and got.reason is None and got.attempts == 1
    assert got.path == tmp_path / "cockatoo_000003_000008.mp4"
    assert (got.source_start_s, got.source_end_s) == (3.0, 8.0)
    assert got.start_s == 0.0 and got.end_s == pytest.approx(5.0, abs=0.2)
    clip = decode_clip(got.path)
    assert clip.codec == "h264" and min(clip.width, clip.height) <= 360 and clip.fps <= 30.01
    assert clip.duration_s == pytest.approx(5.0, abs=0.2)
    # ffmpeg fetched only what it needed, with Range requests
    assert any(rng for path, rng, _ in server.log.entries if path == "/cockatoo.mp4")
    assert [p.name for p in tmp_path.iterdir() if p.name != ".partial"] == [got.path.name]
    assert not any((tmp_path / ".partial").iterdir())


def test_url_list_direct_links_with_and_without_segments(server: Loopback, tmp_path: Path) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text(f"url,start,end\n{server.url('bikes.mp4')},1,4\n{server.url('cup.mp4')},,\n")
    candidates = read_url_list(listing)
    results = [materialize(c, _opts(server, url_template=None), tmp_path / "clips") for c in candidates]
    assert [r.status for r in results] == ["kept", "kept"]
    assert results[0].end_s == pytest.approx(3.0, abs=0.2)
    assert results[1].end_s == pytest.approx(8.0, abs=0.3)  # whole video
    assert results[1].source_start_s is None


def test_a_download_into_an_s3_out_is_one_object_and_is_reused_by_a_rerun(
    server: Loopback, s3_bucket
) -> None:
    """OUT on S3: the clip is made locally, uploaded whole to OUT/clips/, and the row names its URI; a
    rerun (after a crash) finds the object, checks it, and downloads nothing again from the source."""
    from videonet_curate.sources.remote import materialize_to_uri
    from videonet_curate.uri import using_options

    clips = s3_bucket.uri("run", "clips")
    with using_options(s3_bucket.options()):
        row = materialize_to_uri(_kinetics("cockatoo", 3, 8), _opts(server), clips, LocalLimiter(100, 4))
        assert row["status"] == "kept" and row["path"] == f"{clips}/cockatoo_000003_000008.mp4"
        assert s3_bucket.keys() == ["run/clips/cockatoo_000003_000008.mp4"]  # nothing partial, no .partial/
        requests = len(server.log.entries)
        again = materialize_to_uri(_kinetics("cockatoo", 3, 8), _opts(server), clips, LocalLimiter(100, 4))
    assert again["path"] == row["path"] and again["end_s"] == row["end_s"] and again["attempts"] == 0
    assert len(server.log.entries) == requests


FAULTS = [
    # (script for the video's requests, always?, reason or None for kept, attempts)
    (["429"], False, None, 2),  # 429 with Retry-After: 1, then fine
    (["503"], False, None, 2),
    (["429"], True, "blocked", 3),
    (["503"], True, "http_error", 3),
    ([None, "reset"], True, "network", 3),  # reset in the middle of ffmpeg's body read
    ([None, "reset", None], False, None, 1),  # ffmpeg fails once; the whole stream is fetched and cut
    ([None, "truncate"], True, "network", 3),  # fewer bytes than Content-Length
    (["stall"], True, "network", 3),  # nothing within the socket timeout
    (["403"], True, "http_error", 1),
    (["404"], True, "unavailable", 1),
    (["html"], True, "not_a_video", 1),
    ([None, "empty"], True, "not_a_video", 1),
    ([None, "ignore_range"], True, None, 1),  # Range ignored: the whole stream is fetched and cut here
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "always", "reason", "attempts"),
    FAULTS,
    ids=[f"{'+'.join(map(str, s))}{'-always' if a else ''}" for s, a, _, _ in FAULTS],
)
def test_faults_end_in_the_right_status(
    server: Loopback, tmp_path: Path, script: list, always: bool, reason: str | None, attempts: int
) -> None:
    server.script("/bikes.mp4", script, always=always)
    started = time.monotonic()
    try:
        got = materialize(_kinetics("bikes"), _opts(server), tmp_path)
    finally:
        server.script("/bikes.mp4", [])
    elapsed = time.monotonic() - started
    assert (got.reason, got.attempts) == (reason, attempts), got.detail
    if script[0] == "429":
        assert elapsed >= 1.0 * (attempts - 1)  # Retry-After: 1 honoured before each retry
    requests = server.log.faults("/bikes.mp4")
    server.log.entries.clear()
    assert {f for f in script if f} <= set(requests)  # the faults really happened
    assert got.status == ("kept" if reason is None else "failed")
    if reason is None:
        assert decode_clip(got.path).duration_s == pytest.approx(5.0, abs=0.2)
    else:
        assert got.path is None and not list(tmp_path.glob("*.mp4"))
        assert (got.source_start_s, got.source_end_s) == (2.0, 7.0)


def test_a_truncated_file_is_a_decode_error_not_retried(server: Loopback, tmp_path: Path) -> None:
    got = materialize(_kinetics("cut"), _opts(server), tmp_path)
    assert (got.status, got.attempts) == ("failed", 1)
    assert got.reason == "decode_error", got.detail


def test_a_video_ending_inside_its_segment_is_kept_with_its_true_end(
    server: Loopback, tmp_path: Path
) -> None:
    got = materialize(_kinetics("cup", 4, 14), _opts(server), tmp_path)  # cup.mp4 lasts 8 s
    assert (got.status, got.reason, got.attempts) == ("kept", None, 1)
    assert got.end_s == pytest.approx(4.0, abs=0.3) and (got.source_start_s, got.source_end_s) == (4.0, 14.0)
    assert "shorter than its segment" in got.detail and decode_clip(got.path).duration_s == pytest.approx(
        got.end_s, abs=0.05
    )


def test_too_short_only_under_the_min_clip_seconds_floor(server: Loopback, tmp_path: Path) -> None:
    got = materialize(_kinetics("cup", 4, 14), _opts(server, min_clip_seconds=5.0), tmp_path)
    assert (got.status, got.reason, got.attempts) == ("failed", "too_short", 1)
    assert "--min-clip-seconds 5" in got.detail and not list(tmp_path.glob("*.mp4"))


def test_existing_final_file_is_reused_and_stale_partials_removed(server: Loopback, tmp_path: Path) -> None:
    first = materialize(_kinetics("cockatoo", 1, 4), _opts(server), tmp_path)
    stale = tmp_path / ".partial" / "cockatoo_000001_000004.99999"
    stale.mkdir(parents=True)
    (stale / "download.mp4.part").write_bytes(b"half")
    again = materialize(_kinetics("cockatoo", 1, 4), _opts(server), tmp_path)
    assert again.status == "kept" and again.attempts == 0 and again.path == first.path
    assert not stale.exists()


def test_unreachable_host_is_settled_on_the_driver_fast(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    candidates = [_kinetics(f"vid{i}") for i in range(500)]
    started = time.perf_counter()
    plan = plan_fetch(candidates, FetchOptions(url_template=f"http://127.0.0.1:{port}/{{youtube_id}}.mp4"))
    dns = plan_fetch(
        candidates[:3], FetchOptions(url_template="http://no-such-host.invalid/{youtube_id}.mp4")
    )
    assert time.perf_counter() - started < 10
    assert plan.to_fetch == [] and len(plan.settled) == 500
    assert {(r["status"], r["reason"], r["attempts"]) for r in plan.settled + dns.settled} == {
        ("failed", "network", 0)
    }
    assert "DNS" in dns.settled[0]["detail"]


def test_mirror_flat_and_per_label_folders(sample_videos: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "riding a bike").mkdir(parents=True)
    shutil.copy(sample_videos / "bikes.mp4", mirror / "riding a bike" / "-bk_000010_000020.mp4")
    shutil.copy(sample_videos / "cup.mp4", mirror / "cup_000000_000010.mp4")  # 8 s of a 10 s segment
    opts = FetchOptions(mirror_dir=mirror)
    cands = [_kinetics("-bk", 10, 20), _kinetics("cup", 0, 10), _kinetics("gone", 0, 10)]
    plan = plan_fetch(cands, opts)
    assert [r["clip_id"] for r in plan.settled] == ["gone_000000_000010"]
    assert (plan.settled[0]["status"], plan.settled[0]["reason"]) == ("missing", "missing_from_mirror")
    results = {c["clip_id"]: materialize(c, opts, tmp_path / "clips") for c in plan.to_fetch}
    bike = results["-bk_000010_000020"]
    assert bike.status == "kept" and bike.path == mirror / "riding a bike" / "-bk_000010_000020.mp4"
    assert bike.end_s == pytest.approx(10.0, abs=0.1) and (bike.source_start_s, bike.source_end_s) == (
        10.0,
        20.0,
    )
    cup = results["cup_000000_000010"]  # the source ended early: kept, with its true end and a note
    assert (cup.status, cup.reason) == ("kept", None) and cup.end_s == pytest.approx(8.0, abs=0.2)
    assert "shorter than its segment" in cup.detail
    with av.open(str(bike.path)) as container:  # used in place, untouched
        assert container.streams.video[0].codec_context.name == "h264"


def test_preflight_checks_the_proxy_not_the_hosts_behind_it(server: Loopback) -> None:
    cands = [_kinetics("bikes")]
    through_proxy = plan_fetch(
        cands,
        FetchOptions(url_template="http://no-such-host.invalid/{youtube_id}.mp4", proxy=server.base_url),
    )
    assert len(through_proxy.to_fetch) == 1 and through_proxy.settled == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "reason", "attempts"),
    [("reset", "network", 3), ("truncate", "network", 3), ("empty", "not_a_video", 1)],
)
def test_whole_video_downloads_classify_body_faults(
    server: Loopback, tmp_path: Path, fault: str, reason: str, attempts: int
) -> None:
    url = server.url("cup.mp4")
    cand = {
        "clip_id": "cup_whole",
        "source": "urls",
        "source_id": url,
        "url": url,
        "start_s": None,
        "end_s": None,
        "source_label": None,
    }
    server.script("/cup.mp4", [None, fault], always=True)  # the extractor's request is fine, the body is not
    try:
        got = materialize(cand, _opts(server, url_template=None), tmp_path)
    finally:
        server.script("/cup.mp4", [])
    assert (got.status, got.reason, got.attempts) == ("failed", reason, attempts), got.detail
    assert (got.start_s, got.end_s) == (0.0, 0.0) and not list(tmp_path.glob("*.mp4"))
