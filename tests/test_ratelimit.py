"""Staying under the weight budget and backing off on rate limits."""

from __future__ import annotations

import pytest

from perpcarry.ccxt.ratelimit import WeightBudget, backoff_delay


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_a_burst_within_the_share_goes_through_at_once():
    clock = FakeClock()
    budget = WeightBudget(2400, 0.6, clock.monotonic, clock.sleep)  # 1440 a minute
    for _ in range(144):
        await budget.acquire(10)
    assert clock.slept == []


async def test_beyond_the_share_it_waits_for_the_refill():
    clock = FakeClock()
    budget = WeightBudget(2400, 0.5, clock.monotonic, clock.sleep)  # 1200 a minute = 20 a second
    await budget.acquire(1200)
    await budget.acquire(40)
    assert clock.slept == [pytest.approx(2.0)]
    clock.now += 30  # half a minute later half the budget is back
    await budget.acquire(600)
    assert len(clock.slept) == 1


def test_backoff_honours_retry_after_with_jitter():
    assert backoff_delay(0, 7.0, rng=lambda: 0.0) == 7.0
    assert backoff_delay(2, 7.0, rng=lambda: 1.0) == 8.0


def test_backoff_without_retry_after_grows_and_is_capped():
    delays = [backoff_delay(n, None, rng=lambda: 1.0) for n in range(10)]
    assert delays[:4] == [1.5, 2.5, 4.5, 8.5]
    assert max(delays) == 60.5
    assert backoff_delay(3, None, rng=lambda: 0.0) == 0.5  # full jitter keeps a floor
