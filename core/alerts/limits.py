"""Rate limits for alerts, so an incident sends a handful of messages, not hundreds.

Time is cut into windows that start with the first alert after the previous window ended.
Within a window at most ``per_kind`` alerts of one kind and ``total`` in all are let
through; a critical alert (kill switch, breaker) passes the overall cap, so a flood of
fills never hides it, but still counts against its own kind. What is held back is counted
per kind and reported once when the window is closed. Pure: the caller passes the time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from perpcarry.events import Event, Severity


@dataclass
class Window:
    start: datetime
    end: datetime
    sent: Counter[str] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)


class RateLimiter:
    def __init__(self, per_kind: int, total: int, window: timedelta) -> None:
        self.per_kind = per_kind
        self.total = total
        self.window = window
        self.current: Window | None = None

    def close_if_over(self, now: datetime) -> Window | None:
        """End the current window if ``now`` is past it: the closed window (its
        ``suppressed`` counts to report), else None."""
        if self.current is None or now < self.current.end:
            return None
        closed, self.current = self.current, None
        return closed

    def admit(self, event: Event, now: datetime) -> bool:
        """Whether ``event`` may be sent now; if not, it is counted as suppressed. Call
        :meth:`close_if_over` first."""
        if self.current is None:
            self.current = Window(now, now + self.window)
        window = self.current
        over_kind = window.sent[event.kind] >= self.per_kind
        over_total = (sum(window.sent.values()) >= self.total
                      and event.severity is not Severity.CRITICAL)
        if over_kind or over_total:
            window.suppressed[event.kind] += 1
            return False
        window.sent[event.kind] += 1
        return True
