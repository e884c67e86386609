"""Keeping a venue's websocket connections and subscriptions within its published limits
(declared by the plugin in ``StreamLimits``, with the source of each figure)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence

from perpcarry.venues.streams import StreamLimits

HOUR = 3600.0


def chunks(symbols: Sequence[str], size: int) -> list[list[str]]:
    """``symbols`` split so that no connection carries more than ``size`` subscriptions."""
    return [list(symbols[i:i + size]) for i in range(0, len(symbols), size)] or []


class ConnectionBudget:
    """Waits before a (re)connection that would open more connections within the venue's
    window, or send more subscribe requests within an hour, than it allows. Shared by all
    feeds of one venue, since the venues count per IP."""

    def __init__(self, limits: StreamLimits, monotonic: Callable[[], float],
                 sleep: Callable[[float], object] = asyncio.sleep) -> None:
        self.limits = limits
        self.monotonic = monotonic
        self.sleep = sleep
        self.connections: deque[float] = deque()
        self.subscriptions: deque[tuple[float, int]] = deque()

    def wait_needed(self, subscriptions: int) -> float:
        """Seconds to wait before a connection carrying ``subscriptions`` may open."""
        now = self.monotonic()
        window = self.limits.connection_window_seconds
        # The same sums as the waits below, so a wait that ends exactly at the window's
        # end also frees its slot (float rounding would otherwise let one through early).
        while self.connections and now >= self.connections[0] + window:
            self.connections.popleft()
        while self.subscriptions and now >= self.subscriptions[0][0] + HOUR:
            self.subscriptions.popleft()
        wait = 0.0
        if len(self.connections) >= self.limits.connections_per_window:
            wait = self.connections[0] + window - now
        per_hour = self.limits.subscriptions_per_hour
        if per_hour is not None and self.subscriptions:
            sent = sum(n for _, n in self.subscriptions)
            if sent + subscriptions > per_hour:
                wait = max(wait, self.subscriptions[0][0] + HOUR - now)
        return wait

    async def acquire(self, subscriptions: int) -> None:
        while (wait := self.wait_needed(subscriptions)) > 0:
            await self.sleep(wait)
        now = self.monotonic()
        self.connections.append(now)
        self.subscriptions.append((now, subscriptions))
