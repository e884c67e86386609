"""Staying under the weight budget and backing off on rate limits."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@settings(max_examples=60, deadline=None)
@given(weights=st.lists(st.integers(1, 40), min_size=1, max_size=80),
       per_minute=st.sampled_from([300, 2400, 7200]), share=st.floats(0.05, 1.0))
def test_requests_made_at_once_go_as_fast_as_the_budget_allows_and_never_faster(
        weights, per_minute, share):
    """Every request of a cold scan's history asks at the same moment: the weight granted by
    any time t stays within the bucket plus its refill, and none waits longer than that
    needs (the requests go in the order they asked)."""
    granted_at: dict[asyncio.Task, float] = {}

    async def wait_until_granted(seconds: float) -> None:
        # All asked at t=0 and the clock does not move: record when this request may go,
        # and let the others ask meanwhile, as a real wait would.
        granted_at[asyncio.current_task()] = seconds
        await asyncio.sleep(0)

    async def ask_all():
        budget = WeightBudget(per_minute, share, lambda: 0.0, wait_until_granted)

        async def one(weight: int) -> tuple[float, int]:
            await budget.acquire(weight)
            return granted_at.get(asyncio.current_task(), 0.0), weight

        return budget, await asyncio.gather(*(one(w) for w in weights))

    budget, times = asyncio.run(ask_all())
    spent = 0.0
    for at, weight in sorted(times):
        spent += weight
        allowed = budget.capacity + budget.refill_per_second * at
        assert spent <= allowed + 1e-6
        # as soon as the refill covers it: no later than needed
        assert at == pytest.approx(max(0.0, (spent - budget.capacity)
                                       / budget.refill_per_second), abs=1e-6)


async def test_the_weight_used_over_the_last_minute_is_what_was_acquired_in_it():
    clock = FakeClock()
    budget = WeightBudget(2400, 0.5, clock.monotonic, clock.sleep)  # 1200 a minute
    await budget.acquire(100)
    clock.now = 30.0
    await budget.acquire(20)
    assert budget.used_last_minute() == 120
    clock.now = 60.0  # the first acquisition is a minute old
    assert budget.used_last_minute() == 20
    clock.now = 90.0
    assert budget.used_last_minute() == 0
    assert clock.slept == []  # reading it changes nothing the bucket does
