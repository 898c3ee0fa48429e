"""Classify download errors into the manifest's reason codes (:data:`videonet_curate.manifest.REASONS`).

The mapping, which the README documents:

================================================  ==============  =========
what happened                                     reason          retried?
================================================  ==============  =========
HTTP 429, "confirm you're not a bot", rate limit  blocked         yes
timeout, refused/reset connection, DNS failure    network         yes
HTTP 5xx                                          http_error      yes
HTTP 404, 410; removed/private/copyright/geo      unavailable     no
HTTP 403 and any other 4xx                        http_error      no
an HTML page or empty body instead of a video     not_a_video     no
truncated or corrupt file                         decode_error    no
fewer than --min-clip-seconds of frames           too_short       no
================================================  ==============  =========

403 is ``http_error`` rather than ``unavailable`` because hosts use it both for "gone" and for
"you are not allowed right now" (expired signed URLs, missing cookies); it is not retried because
the same request would be refused again.
"""

from __future__ import annotations

import email.utils
import errno
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from videonet_curate.manifest import TRANSIENT_REASONS


@dataclass(frozen=True)
class Failure:
    """Why one fetch attempt failed: a reason code, words for people, and retry hints."""

    reason: str
    detail: str
    http_status: int | None = None
    retry_after_s: float | None = None

    @property
    def transient(self) -> bool:
        """Worth another attempt: throttling, network trouble, or a 5xx server error."""
        return self.reason in TRANSIENT_REASONS or (self.http_status is not None and self.http_status >= 500)


class FetchFailed(Exception):
    """Raised inside the fetch path to carry a classified :class:`Failure` to the retry loop."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.reason}: {failure.detail}")
        self.failure = failure


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def classify_http_status(status: int, *, retry_after: str | None = None, detail: str = "") -> Failure:
    """The reason code of an HTTP error status (see the module table)."""
    text = detail or f"HTTP {status}"
    if status == 429:
        return Failure("blocked", text, status, parse_retry_after(retry_after))
    if status in (404, 410):
        return Failure("unavailable", text, status)
    if status == 503:
        return Failure("http_error", text, status, parse_retry_after(retry_after))
    return Failure("http_error", text, status)


# Message patterns, checked in order; the first match wins. yt-dlp wraps most errors in text only.
_MESSAGE_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("blocked", re.compile(r"HTTP Error 429|Too Many Requests|not a bot|rate.?limit|captcha", re.I)),
    (
        "not_a_video",
        re.compile(
            r"Unsupported URL|not a video|text/html|Invalid data found|Did not get any data blocks", re.I
        ),
    ),
    (
        "unavailable",
        re.compile(
            r"Video unavailable|Private video|video is private|copyright|not available in your country|"
            r"geo.?restrict|has been removed|account.*terminated|members.only|This video is unavailable|"
            r"confirm your age|HTTP Error 40[4]|HTTP Error 410|Requested format is not available|"
            r"no video formats found",
            re.I,
        ),
    ),
    (
        "network",
        re.compile(
            r"timed? ?out|Connection (refused|reset|aborted)|reset by peer|Name or service not known|"
            r"Temporary failure in name resolution|nodename nor servname|getaddrinfo|No route to host|"
            r"Network is unreachable|Remote end closed|RemoteDisconnected|IncompleteRead|bytes read|"
            r"Failed to resolve|Max retries exceeded|Connection broken|EOF occurred",
            re.I,
        ),
    ),
    ("http_error", re.compile(r"HTTP Error \d{3}", re.I)),
    ("decode_error", re.compile(r"moov atom not found|corrupt|Invalid NAL|error while decoding", re.I)),
)

_NETWORK_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EPIPE,
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (yt-dlp's exc_info/cause, Python's __cause__/__context__)."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        info = getattr(current, "exc_info", None)
        if isinstance(info, tuple) and len(info) > 1 and isinstance(info[1], BaseException):
            stack.append(info[1])
        for attr in ("cause", "__cause__", "__context__"):
            inner = getattr(current, attr, None)
            if isinstance(inner, BaseException):
                stack.append(inner)


def _http_status_of(exc: BaseException) -> tuple[int, str | None] | None:
    """(status, Retry-After) when ``exc`` is an HTTP error from yt-dlp, urllib or requests."""
    status = getattr(exc, "status", None)
    if status is None:
        status = getattr(exc, "code", None)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or getattr(exc, "headers", None)
    if isinstance(status, int) and 100 <= status < 600 and type(exc).__name__ == "HTTPError":
        retry_after = headers.get("Retry-After") if headers is not None else None
        return status, retry_after
    return None


def _clean(message: str) -> str:
    return re.sub(r"^ERROR:\s*", "", " ".join(message.split()))[:500]


def classify_exception(exc: BaseException) -> Failure:
    """The :class:`Failure` behind an exception raised while fetching (yt-dlp, HTTP, socket, OS)."""
    if isinstance(exc, FetchFailed):
        return exc.failure
    detail = _clean(str(exc)) or type(exc).__name__
    chain = list(_chain(exc))
    for inner in chain:
        if isinstance(inner, FetchFailed):
            return inner.failure
        http = _http_status_of(inner)
        if http is not None:
            return classify_http_status(http[0], retry_after=http[1], detail=detail)
    for inner in chain:
        if isinstance(inner, (socket.timeout, TimeoutError, socket.gaierror, ConnectionError)):
            return Failure("network", detail)
        if isinstance(inner, OSError) and inner.errno in _NETWORK_ERRNOS:
            return Failure("network", detail)
    text = " | ".join(_clean(str(inner)) for inner in chain)
    for reason, pattern in _MESSAGE_RULES:
        if pattern.search(text):
            status = re.search(r"HTTP Error (\d{3})", text)
            return Failure(reason, detail, int(status.group(1)) if status else None)
    if any(type(inner).__module__.startswith("yt_dlp") for inner in chain):
        # yt-dlp gave up on the video for a reason we have no rule for: the extractor could not get it
        return Failure("unavailable", detail)
    return Failure("internal", f"{type(exc).__name__}: {detail}")
