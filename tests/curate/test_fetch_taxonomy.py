"""The failure taxonomy: HTTP statuses, Python/yt-dlp exceptions and messages to reason codes."""

from __future__ import annotations

import socket

import pytest
from yt_dlp.networking.common import Response
from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import DownloadError, ExtractorError

from videonet_curate.fetch.taxonomy import (
    Failure,
    FetchFailed,
    classify_exception,
    classify_http_status,
    parse_retry_after,
)
from videonet_curate.manifest import REASONS


def _http_error(status: int, headers: dict[str, str] | None = None) -> HTTPError:
    import io

    return HTTPError(Response(io.BytesIO(b""), "http://h/x", headers or {}, status=status, reason="r"))


@pytest.mark.parametrize(
    ("status", "reason", "transient"),
    [
        (429, "blocked", True),
        (503, "http_error", True),
        (500, "http_error", True),
        (404, "unavailable", False),
        (410, "unavailable", False),
        (403, "http_error", False),
        (400, "http_error", False),
    ],
)
def test_http_statuses(status: int, reason: str, transient: bool) -> None:
    failure = classify_http_status(status)
    assert (failure.reason, failure.transient) == (reason, transient)
    assert failure.reason in REASONS


def test_yt_dlp_wrapped_http_error_keeps_status_and_retry_after() -> None:
    inner = _http_error(429, {"Retry-After": "7"})
    wrapped = DownloadError("ERROR: Unable to download webpage: HTTP Error 429", (type(inner), inner, None))
    failure = classify_exception(wrapped)
    assert failure.reason == "blocked" and failure.http_status == 429 and failure.retry_after_s == 7.0
    assert not failure.detail.startswith("ERROR")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (socket.gaierror(-2, "Name or service not known"), "network"),
        (ConnectionResetError(104, "Connection reset by peer"), "network"),
        (TimeoutError("timed out"), "network"),
        (TransportError("Read timed out. (read timeout=3.0)"), "network"),
        (ExtractorError("[youtube] abc: Video unavailable. This video is private"), "unavailable"),
        (ExtractorError("Sign in to confirm you're not a bot"), "blocked"),
        (ExtractorError("The uploader has not made this video available in your country"), "unavailable"),
        (DownloadError("ERROR: Unsupported URL: http://127.0.0.1/x.html"), "not_a_video"),
        (DownloadError("ERROR: something nobody foresaw"), "unavailable"),
        (DownloadError("ERROR: Did not get any data blocks"), "not_a_video"),  # an empty body
        (ValueError("a bug"), "internal"),
        (FetchFailed(Failure("too_short", "3 s of 10")), "too_short"),
    ],
)
def test_exceptions(exc: BaseException, reason: str) -> None:
    assert classify_exception(exc).reason == reason


def test_retry_after_forms() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
