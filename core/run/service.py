"""``perpcarry run`` as a long-lived process: cycles on a cadence and just after each
settlement, a graceful stop on Ctrl-C or SIGTERM, and a report of every cycle.

A stop request only sets an event: the cycle in progress finishes the two-leg action it is
in (never stopping between legs), sends nothing more, and the process exits. While waiting
for the next cycle the kill switch is read every second, so ``perpcarry kill`` from another
shell takes effect at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
from collections.abc import Callable
from datetime import datetime, timedelta

from perpcarry.config.settings import RunConfig
from perpcarry.run.loop import CarryLoop, CycleReport

KILL_POLL_SECONDS = 1.0


def next_wake(now: datetime, settings: RunConfig, next_settlement: datetime | None,
              sooner_seconds: float | None = None) -> datetime:
    """The next cycle: the cadence, or just after the next settlement, or sooner when the
    risk monitor asks for it (a position near danger), whichever comes first."""
    wake = now + timedelta(minutes=settings.cadence_minutes)
    if next_settlement is not None and next_settlement > now:
        wake = min(wake, next_settlement + timedelta(seconds=settings.after_settlement_seconds))
    if sooner_seconds is not None and math.isfinite(sooner_seconds):
        wake = min(wake, now + timedelta(seconds=max(sooner_seconds, KILL_POLL_SECONDS)))
    return wake


class Runner:
    """Cycles of ``loop`` until stopped (or once)."""

    def __init__(self, loop: CarryLoop, settings: RunConfig,
                 report: Callable[[CycleReport, datetime | None], None],
                 clock: Callable[[], datetime], sooner: asyncio.Event | None = None) -> None:
        self.loop = loop
        self.settings = settings
        self.report = report
        self.clock = clock
        # Set between cycles (a held perp's streamed mark moved): the next cycle starts now.
        self.sooner = sooner

    async def run(self, *, once: bool) -> int:
        """Cycle until a stop request (or after one cycle); returns the exit code."""
        stop = self.loop.stop
        running = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            running.add_signal_handler(sig, stop.set)
        try:
            while not stop.is_set():
                report = await self.loop.cycle()
                if once:
                    self.report(report, None)
                    break
                wake = next_wake(self.clock(), self.settings, report.next_settlement,
                                 report.next_check_seconds)
                self.report(report, wake)
                await self._sleep_until(wake)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                running.remove_signal_handler(sig)
        return 0

    async def _sleep_until(self, wake: datetime) -> None:
        """Wait for ``wake``, a stop request, the kill switch or ``sooner`` (checked every
        second)."""
        while not self.loop.stop.is_set():
            left = (wake - self.clock()).total_seconds()
            if left <= 0 or self.loop.kill_requested():
                return
            if self.sooner is not None and self.sooner.is_set():
                self.sooner.clear()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.loop.stop.wait(), min(left, KILL_POLL_SECONDS))
