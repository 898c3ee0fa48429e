"""Retry loop: transient failures retried with backoff (Retry-After honoured), permanent ones not."""

from __future__ import annotations

import random

import pytest

from videonet_curate.fetch.retry import RetryPolicy, backoff_delay, run_with_retries
from videonet_curate.fetch.taxonomy import Failure, FetchFailed


def test_backoff_doubles_within_jitter_and_caps() -> None:
    rng = random.Random(0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 30.0)]:
        delays = [backoff_delay(attempt, base_s=1.0, max_s=30.0, rng=rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # jitter actually spreads them


def _failing(failures: list[Failure], value: str = "ok"):
    calls = []

    def attempt(n: int) -> str:
        calls.append(n)
        if failures:
            raise FetchFailed(failures.pop(0))
        return value

    return attempt, calls


def test_transient_failures_are_retried_until_success() -> None:
    sleeps: list[float] = []
    attempt, calls = _failing(
        [Failure("network", "reset"), Failure("blocked", "429", 429, retry_after_s=5.0)]
    )
    outcome = run_with_retries(
        attempt, RetryPolicy(max_retries=3, base_s=0.1), sleep=sleeps.append, rng=random.Random(1)
    )
    assert outcome.value == "ok" and outcome.failure is None and outcome.attempts == 3 and calls == [1, 2, 3]
    assert 0.05 <= sleeps[0] <= 0.1 and sleeps[1] == 5.0  # Retry-After wins over a shorter backoff


def test_retries_run_out() -> None:
    sleeps: list[float] = []
    attempt, calls = _failing([Failure("network", "x")] * 10)
    outcome = run_with_retries(attempt, RetryPolicy(max_retries=2, base_s=0.01), sleep=sleeps.append)
    assert outcome.failure.reason == "network" and outcome.attempts == 3 and len(sleeps) == 2


@pytest.mark.parametrize(
    "failure",
    [
        Failure("unavailable", "gone", 404),
        Failure("http_error", "no", 403),
        Failure("not_a_video", "html"),
        Failure("decode_error", "bad"),
    ],
)
def test_permanent_failures_are_not_retried(failure: Failure) -> None:
    sleeps: list[float] = []
    attempt, calls = _failing([failure])
    outcome = run_with_retries(attempt, RetryPolicy(max_retries=5), sleep=sleeps.append)
    assert outcome.failure == failure and outcome.attempts == 1 and sleeps == []


def test_5xx_is_retried_and_long_retry_after_gives_up() -> None:
    attempt, _ = _failing([Failure("http_error", "503", 503)])
    assert run_with_retries(attempt, RetryPolicy(base_s=0.01), sleep=lambda s: None).attempts == 2
    attempt, _ = _failing([Failure("blocked", "429", 429, retry_after_s=3600.0)])
    outcome = run_with_retries(attempt, RetryPolicy(max_retry_after_s=60.0), sleep=lambda s: None)
    assert (
        outcome.attempts == 1
        and outcome.failure.reason == "blocked"
        and "Retry-After" in outcome.failure.detail
    )


def test_unexpected_exceptions_are_classified_not_raised() -> None:
    def boom(n: int) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    outcome = run_with_retries(boom, RetryPolicy(max_retries=1, base_s=0.01), sleep=lambda s: None)
    assert outcome.failure.reason == "network" and outcome.attempts == 2
