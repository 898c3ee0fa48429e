"""Politeness: token bucket rate and per-host concurrency, in-process and as a Ray actor."""

from __future__ import annotations

import threading
import time

import pytest

from videonet_curate.fetch.ratelimit import LocalLimiter, PolitenessState, polite, refill_tokens


def test_refill_is_capped_by_burst() -> None:
    assert refill_tokens(0.0, 0.5, rate=2.0, burst=1.0) == 1.0
    assert refill_tokens(0.0, 0.25, rate=2.0, burst=1.0) == 0.5


def test_state_grants_at_the_rate_and_caps_per_host() -> None:
    state = PolitenessState(rate=2.0, max_concurrent=2, updated=0.0)
    assert state.try_acquire("a", 0.0) == 0.0
    assert state.try_acquire("a", 0.0) == pytest.approx(0.5)  # bucket empty: wait 1/rate
    assert state.try_acquire("a", 0.5) == 0.0
    assert state.try_acquire("a", 1.0) > 0  # two open downloads on host a: wait for a release
    state.release("a")
    assert state.try_acquire("a", 1.0) == 0.0
    assert state.try_acquire("b", 1.5) == 0.0  # other host: its own slots (tokens are global)


def test_local_limiter_bounds_rate_and_concurrency_across_threads() -> None:
    limiter = LocalLimiter(max_rps=20.0, max_concurrent=2)
    open_now, peak, starts = [0], [0], []
    lock = threading.Lock()

    def work() -> None:
        with polite(limiter, "host"):
            with lock:
                open_now[0] += 1
                peak[0] = max(peak[0], open_now[0])
                starts.append(time.monotonic())
            time.sleep(0.05)
            with lock:
                open_now[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] <= 2
    starts.sort()
    # 10 requests at 20/s with a burst of 1 take at least 9/20 s
    assert starts[-1] - starts[0] >= 0.4


@pytest.mark.slow
def test_ray_actor_is_shared_by_workers() -> None:
    ray = pytest.importorskip("ray")
    from videonet_curate.fetch.ratelimit import RayLimiterClient, start_limiter_actor

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, logging_level="ERROR")
    try:
        actor = start_limiter_actor("test-limiter", max_rps=10.0, max_concurrent=1)

        @ray.remote(num_cpus=0)
        def fetch(handle: object) -> tuple[float, float]:
            client = RayLimiterClient(handle)
            client.acquire("h")
            start = time.monotonic()
            time.sleep(0.1)
            end = time.monotonic()
            client.release("h")
            return start, end

        spans = sorted(ray.get([fetch.remote(actor) for _ in range(4)]))
        # one download at a time on host "h", across separate worker processes
        assert all(b[0] >= a[1] - 0.01 for a, b in zip(spans, spans[1:]))
        assert ray.get(actor.open_downloads.remote()) == {"h": 0}
    finally:
        ray.shutdown()
