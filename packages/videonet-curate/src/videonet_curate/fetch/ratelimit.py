"""Politeness: a global request rate (token bucket) and a cap on downloads at once per host.

One :class:`PolitenessState` holds the arithmetic. :class:`LocalLimiter` wraps it with a lock for
one process (tests, the plain loop); :class:`RateLimiterActor` is the same state in a Ray actor that
every worker asks before each request, so the limits hold for the whole cluster.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

# how often a worker asks again when the actor says "not yet" without a better estimate
_POLL_S = 0.05


def refill_tokens(tokens: float, elapsed_s: float, rate: float, burst: float) -> float:
    """Token bucket refill: ``min(burst, tokens + rate * elapsed)``."""
    return min(burst, tokens + rate * max(0.0, elapsed_s))


@dataclass
class PolitenessState:
    """Token bucket (``rate`` per second, up to ``burst``) plus per-host counts of open downloads."""

    rate: float
    max_concurrent: int
    burst: float = 1.0
    tokens: float = 1.0
    updated: float = field(default_factory=time.monotonic)
    open_per_host: Counter[str] = field(default_factory=Counter)

    def try_acquire(self, host: str, now: float) -> float:
        """Take a slot for ``host`` and a token: 0.0 when granted, else seconds to wait before asking again."""
        self.tokens = refill_tokens(self.tokens, now - self.updated, self.rate, self.burst)
        self.updated = now
        if self.open_per_host[host] >= self.max_concurrent:
            return _POLL_S
        if self.tokens < 1.0:
            return (1.0 - self.tokens) / self.rate
        self.tokens -= 1.0
        self.open_per_host[host] += 1
        return 0.0

    def release(self, host: str) -> None:
        if self.open_per_host[host] > 0:
            self.open_per_host[host] -= 1


class Limiter(Protocol):
    """What the fetch code needs: block until a request to ``host`` may start; say when it ended."""

    def acquire(self, host: str) -> None: ...

    def release(self, host: str) -> None: ...


@contextmanager
def polite(limiter: Limiter | None, host: str) -> Iterator[None]:
    """Hold a request slot for ``host`` for the ``with`` body (no-op without a limiter)."""
    if limiter is None:
        yield
        return
    limiter.acquire(host)
    try:
        yield
    finally:
        limiter.release(host)


class LocalLimiter:
    """The limits within one process (threads share it)."""

    def __init__(
        self, max_rps: float, max_concurrent: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._state = PolitenessState(rate=max_rps, max_concurrent=max_concurrent, updated=clock())
        self._clock = clock
        self._cond = threading.Condition()

    def acquire(self, host: str) -> None:
        with self._cond:
            while (wait := self._state.try_acquire(host, self._clock())) > 0:
                self._cond.wait(timeout=wait)

    def release(self, host: str) -> None:
        with self._cond:
            self._state.release(host)
            self._cond.notify_all()


class RateLimiterActor:
    """The shared state as a Ray actor (decorated by :func:`start_limiter_actor`)."""

    def __init__(self, max_rps: float, max_concurrent: int) -> None:
        self._state = PolitenessState(rate=max_rps, max_concurrent=max_concurrent)

    def try_acquire(self, host: str) -> float:
        return self._state.try_acquire(host, time.monotonic())

    def release(self, host: str) -> None:
        self._state.release(host)

    def open_downloads(self) -> dict[str, int]:
        return dict(self._state.open_per_host)


class RayLimiterClient:
    """A worker's view of the shared actor: polls ``try_acquire`` and sleeps the wait it is told."""

    def __init__(self, actor: object) -> None:
        self._actor = actor

    def acquire(self, host: str) -> None:
        import ray

        while (wait := ray.get(self._actor.try_acquire.remote(host))) > 0:  # type: ignore[attr-defined]
            time.sleep(wait)

    def release(self, host: str) -> None:
        import ray

        ray.get(self._actor.release.remote(host))  # type: ignore[attr-defined]


def start_limiter_actor(name: str, max_rps: float, max_concurrent: int) -> object:
    """Create (or find) the named limiter actor on the current Ray cluster."""
    import ray

    actor_cls = ray.remote(num_cpus=0)(RateLimiterActor)
    # one call at a time (the default): the state is tiny and must not be raced by threads
    return actor_cls.options(name=name, get_if_exists=True).remote(max_rps, max_concurrent)


_local_limiters: dict[tuple[float, int], LocalLimiter] = {}
_local_lock = threading.Lock()


def limiter_for(max_rps: float, max_concurrent: int, actor_name: str | None) -> Limiter:
    """The limiter a fetch should use: the named Ray actor when given, else one per process and setting."""
    if actor_name:
        import ray

        return RayLimiterClient(ray.get_actor(actor_name))
    with _local_lock:
        key = (max_rps, max_concurrent)
        if key not in _local_limiters:
            _local_limiters[key] = LocalLimiter(max_rps, max_concurrent)
        return _local_limiters[key]
