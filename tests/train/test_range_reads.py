"""Coalescing of byte ranges into GETs (range_reads.py): every range lands whole in one request, holes
up to the gap are bridged, no merged request outgrows its cap, and the client choice follows the options."""

from __future__ import annotations

import random

import pytest

from videonet_curate.uri import StorageOptions
from vito_train.data.range_reads import (
    ArrowS3Ranges,
    FsspecRanges,
    arrow_s3_filesystem,
    coalesce,
    locate,
    range_client,
)


def test_nearby_ranges_of_one_object_share_a_request_and_far_ones_do_not() -> None:
    ranges = [("b/s0.tar", 0, 10), ("b/s0.tar", 50, 60), ("b/s0.tar", 1000, 1010), ("b/s1.tar", 5, 9)]
    requests, holder = coalesce(ranges, max_gap=100, max_request=10_000)
    assert sorted(requests) == [("b/s0.tar", 0, 60), ("b/s0.tar", 1000, 1010), ("b/s1.tar", 5, 9)]
    assert [requests[i] for i in holder] == [
        ("b/s0.tar", 0, 60),
        ("b/s0.tar", 0, 60),
        ("b/s0.tar", 1000, 1010),
        ("b/s1.tar", 5, 9),
    ]
    assert coalesce([]) == ([], [])


def test_the_size_cap_splits_a_run_of_close_ranges() -> None:
    ranges = [("k", i * 100, i * 100 + 90) for i in range(10)]  # 10 ranges 10 bytes apart
    requests, holder = coalesce(ranges, max_gap=50, max_request=300)
    assert len(requests) > 1 and all(end - start <= 300 for _, start, end in requests)
    assert sorted(set(holder)) == list(range(len(requests)))


@pytest.mark.parametrize("seed", range(5))
def test_random_ranges_each_lie_whole_in_their_request(seed: int) -> None:
    rng = random.Random(seed)
    ranges = []
    for _ in range(200):
        start = rng.randrange(0, 2_000_000)
        ranges.append((f"b/shard-{rng.randrange(4)}.tar", start, start + rng.randrange(1, 60_000)))
    ranges += ranges[:20]  # the same frame twice in one batch
    gap, cap = 100_000, 400_000
    requests, holder = coalesce(ranges, max_gap=gap, max_request=cap)
    for (key, start, end), index in zip(ranges, holder, strict=True):
        r_key, r_start, r_end = requests[index]
        assert r_key == key and r_start <= start and end <= r_end
    for key in {r[0] for r in requests}:  # per object: a hole wider than the gap is never read, and no
        spans = sorted((s, e) for k, s, e in requests if k == key)  # request outgrows the cap
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start > end or end - start < cap  # apart, or overlapping where the cap cut a run
        longest = max(e - s for k, s, e in ranges if k == key)
        assert all(e - s <= max(cap, longest) for s, e in spans)
        covered = sorted((s, e) for k, s, e in ranges if k == key)
        for s, e in spans:  # every request starts and ends at a range's edges (no hole at its ends)
            assert any(s == cs for cs, _ in covered) and any(e == ce for _, ce in covered)
    assert len(requests) < len(ranges) / 2  # 200 ranges over 8 MB with a 100 KB gap merge a lot


def test_locate_looks_past_an_overlapping_request_that_does_not_cover() -> None:
    # fsspec starts a new request inside the previous one when the cap is hit
    requests = [("k", 0, 100), ("k", 50, 60)]
    assert locate([("k", 55, 90), ("k", 52, 58), ("k", 0, 10)], requests) == [0, 1, 0]


def test_locate_refuses_a_range_no_request_covers() -> None:
    with pytest.raises(ValueError, match="no request covers k"):
        locate([("k", 5, 20)], [("k", 0, 10)])
    with pytest.raises(ValueError, match="no request covers other"):
        locate([("other", 0, 1)], [("k", 0, 10)])


def test_pyarrow_reads_s3_unless_the_options_need_fsspec(monkeypatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    endpoint = StorageOptions(endpoint_url="http://127.0.0.1:9")
    assert isinstance(range_client("s3://b/cache", endpoint), ArrowS3Ranges)
    assert arrow_s3_filesystem("s3://b/cache", endpoint).region == "us-east-1"
    # a profile or fsspec-only keywords: s3fs understands them, pyarrow does not
    profile = StorageOptions(endpoint_url="http://127.0.0.1:9", profile="dev")
    assert isinstance(range_client("s3://b/cache", profile), FsspecRanges)
    assert isinstance(range_client("s3://b/cache", endpoint, "fsspec"), FsspecRanges)
    with pytest.raises(ValueError, match="pyarrow's S3 client cannot express"):
        range_client("s3://b/cache", profile, "pyarrow")
    assert arrow_s3_filesystem("memory://b/cache", endpoint) is None


def test_a_pyarrow_without_s3_falls_back_to_fsspec(monkeypatch) -> None:
    import pyarrow.fs

    monkeypatch.delattr(pyarrow.fs, "S3FileSystem")  # as in a pyarrow built without S3
    options = StorageOptions(endpoint_url="http://127.0.0.1:9")
    assert arrow_s3_filesystem("s3://b/cache", options) is None
    assert isinstance(range_client("s3://b/cache", options), FsspecRanges)
