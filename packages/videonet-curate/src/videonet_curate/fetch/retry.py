"""Retry transient failures with exponential backoff and full jitter, honouring Retry-After."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from videonet_curate.fetch.taxonomy import Failure, FetchFailed, classify_exception

log = logging.getLogger(__name__)
T = TypeVar("T")


def backoff_delay(attempt: int, *, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with jitter for retry number ``attempt`` (1-based).

    ``min(max_s, base_s * 2**(attempt-1)) * U(0.5, 1.0)``: doubling, capped, and spread so that
    workers throttled together do not come back together ("equal jitter").
    """
    ceiling = min(max_s, base_s * 2 ** (attempt - 1))
    return ceiling * rng.uniform(0.5, 1.0)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    base_s: float = 1.0
    max_s: float = 30.0
    max_retry_after_s: float = 120.0  # longer Retry-After: give up instead of sleeping for hours


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """The value of the last attempt, or the failure that ended the attempts; and how many were made."""

    value: T | None
    failure: Failure | None
    attempts: int


def run_with_retries(
    attempt_fn: Callable[[int], T],
    policy: RetryPolicy,
    *,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
    label: str = "",
) -> Outcome[T]:
    """Call ``attempt_fn(attempt_number)`` until it returns, or fails permanently, or retries run out.

    Any exception is classified (:func:`classify_exception`); only transient failures are retried.
    """
    rng = rng or random.Random()
    attempt = 0
    while True:
        attempt += 1
        try:
            return Outcome(attempt_fn(attempt), None, attempt)
        except Exception as exc:  # noqa: BLE001 - every failure is classified and recorded, never lost
            failure = exc.failure if isinstance(exc, FetchFailed) else classify_exception(exc)
        if not failure.transient or attempt > policy.max_retries:
            return Outcome(None, failure, attempt)
        delay = backoff_delay(attempt, base_s=policy.base_s, max_s=policy.max_s, rng=rng)
        if failure.retry_after_s is not None:
            if failure.retry_after_s > policy.max_retry_after_s:
                detail = f"{failure.detail} (Retry-After {failure.retry_after_s:.0f}s exceeds the limit)"
                return Outcome(None, Failure(failure.reason, detail, failure.http_status), attempt)
            delay = max(delay, failure.retry_after_s)
        log.info(
            "%s: attempt %d failed (%s: %s); retrying in %.1fs",
            label,
            attempt,
            failure.reason,
            failure.detail,
            delay,
        )
        sleep(delay)
