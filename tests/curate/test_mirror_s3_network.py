"""`build --source kinetics --mirror s3://...`: a mirror whose store was listed but cannot be read when a
clip is read fails that row with reason ``network`` (what ``--retry-failed network`` retries), quickly
and naming the object, and the same row is kept once the store answers again. The per-row step the
build's workers run (``materialize``), against the loopback S3 server (moto)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from videonet_curate.fetch import FetchOptions, materialize
from videonet_curate.fetch.plan import plan_fetch
from videonet_curate.uri import StorageOptions, using_options

CLIP_ID = "realshort_000000_000010"


def _candidate() -> dict:
    return {
        "clip_id": CLIP_ID,
        "source": "kinetics",
        "source_id": "realshort",
        "url": None,
        "start_s": 0.0,
        "end_s": 10.0,
        "source_label": "abseiling",
    }


def _closed_port() -> int:
    with socket.socket() as sock:  # bound then released: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_mirror_store_that_cannot_be_read_fails_the_row_with_reason_network(
    s3_bucket, sample_videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f"mirror/abseiling/{CLIP_ID}.mp4"
    s3_bucket.client().upload_file(str(sample_videos / "realshort.mp4"), s3_bucket.name, key)
    opts = FetchOptions(mirror_dir=s3_bucket.uri("mirror"))
    with using_options(s3_bucket.options()):
        plan = plan_fetch([_candidate()], opts)  # the driver lists the mirror: the clip is there
    assert [c["mirror_path"] for c in plan.to_fetch] == [s3_bucket.uri(key)]

    # the store stops answering between the listing and the read (no one listens on its endpoint);
    # botocore's standard AWS_MAX_ATTEMPTS=1 keeps it to one attempt (the default retries for seconds)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    started = time.perf_counter()
    with using_options(StorageOptions(endpoint_url=f"http://127.0.0.1:{_closed_port()}")):
        failed = materialize(plan.to_fetch[0], opts, tmp_path / "clips")
    assert time.perf_counter() - started < 5
    row = failed.as_row()
    assert (row["status"], row["reason"], row["attempts"]) == ("failed", "network", 1), row
    assert s3_bucket.uri(key) in row["detail"] and "EndpointConnectionError" in row["detail"]
    assert failed.path is None and not (tmp_path / "clips").exists()  # nothing copied out of the mirror

    with using_options(s3_bucket.options()):  # the store is back: the same row is kept, read in place
        kept = materialize(plan.to_fetch[0], opts, tmp_path / "clips")
    assert (kept.status, kept.reason, kept.path) == ("kept", None, s3_bucket.uri(key))
