"""Staying under a venue's published request-weight budget."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Awaitable, Callable

WINDOW_SECONDS = 60.0  # budgets are published per minute


class WeightBudget:
    """A token bucket holding ``share`` of a per-minute weight budget.

    Venues publish limits as weight per minute (Binance futures: 2400), so a burst of a
    few requests is fine as long as the minute's total stays under the budget; the
    bucket starts full and refills continuously. Callers may acquire concurrently: each
    takes its weight at once, going into debt if need be, and waits until the refill has
    paid for it, so concurrent requests are spaced in the order they asked and the weight
    granted by any moment never exceeds the bucket plus its refill.
    """

    def __init__(
        self,
        weight_per_minute: float,
        share: float,
        monotonic: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.capacity = weight_per_minute * share
        self.refill_per_second = self.capacity / 60.0
        self._tokens = self.capacity
        self._monotonic = monotonic
        self._sleep = sleep
        self._last = monotonic()
        # (monotonic time, weight) of each acquisition of the last minute, for
        # ``used_last_minute``; the bucket itself does not need them.
        self._spent: deque[tuple[float, float]] = deque()

    def _refill(self) -> None:
        now = self._monotonic()
        self._tokens = min(
            self.capacity, self._tokens + (now - self._last) * self.refill_per_second
        )
        self._last = now

    async def acquire(self, weight: float) -> None:
        """Return once ``weight`` may be spent without exceeding the budget."""
        self._refill()
        # Taken before waiting: a caller arriving meanwhile waits behind this one.
        self._tokens -= weight
        self._spent.append((self._last, weight))
        self._forget(self._last)
        if self._tokens < 0:
            await self._sleep(-self._tokens / self.refill_per_second)

    def used_last_minute(self) -> float:
        """The weight acquired in the last minute (read-only: the bucket is not touched).
        Divided by ``capacity`` it is the share of the budget used over that minute."""
        now = self._monotonic()
        return sum(weight for at, weight in self._spent if now - at < WINDOW_SECONDS)

    def _forget(self, now: float) -> None:
        while self._spent and now - self._spent[0][0] >= WINDOW_SECONDS:
            self._spent.popleft()


def backoff_delay(
    attempt: int,
    retry_after: float | None,
    base: float = 1.0,
    cap: float = 60.0,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): Retry-After if the venue sent it,
    else capped exponential backoff with full jitter."""
    if retry_after is not None:
        return retry_after + rng() * base
    return rng() * min(cap, base * 2**attempt) + base / 2
