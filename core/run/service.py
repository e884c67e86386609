"""``perpcarry run`` as a long-lived process: cycles on a cadence and just after each
settlement, a graceful stop on Ctrl-C or SIGTERM, and a report of every cycle.

A stop request only sets an event: the cycle in progress finishes the two-leg action it is
in (never stopping between legs), sends nothing more, and the process exits. While waiting
for the next cycle the kill switch is read every second, so ``perpcarry kill`` from another
shell takes effect at once, and, on streams, a risk step runs as soon as the stream risk
asks for one (:meth:`perpcarry.run.loop.CarryLoop.risk_step`; at most one every ``[risk]
danger_check_seconds``).
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from perpcarry.config.settings import RunConfig
from perpcarry.run.loop import CarryLoop
from perpcarry.run.report import CycleReport

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
    """Cycles of ``loop`` until stopped (or once), and between them the risk steps the
    stream risk asks for (``loop.watch``)."""

    def __init__(self, loop: CarryLoop, settings: RunConfig,
                 report: Callable[[CycleReport, datetime | None], None],
                 clock: Callable[[], datetime]) -> None:
        self.loop = loop
        self.settings = settings
        self.report = report
        self.clock = clock
        # monotonic() of the last risk step: they come at most every danger_check_seconds,
        # so a breach the check cannot mend does not turn into a REST read on every push.
        self._last_step: float | None = None

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
                await self.between(wake)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                running.remove_signal_handler(sig)
        return 0

    async def between(self, wake: datetime) -> None:
        """Until the next cycle at ``wake``: a risk step each time the stream risk asks,
        reported like a cycle (the next cycle may come sooner when it finds danger)."""
        while await self._sleep_until(wake):
            self._last_step = time.monotonic()
            step = await self.loop.risk_step()
            wake = min(wake, next_wake(self.clock(), self.settings, None,
                                       step.next_check_seconds))
            self.report(step, wake)

    async def _sleep_until(self, wake: datetime) -> bool:
        """Wait for ``wake``, a stop request or the kill switch (checked every second);
        True when the stream risk asks for a risk step first."""
        watch = self.loop.watch
        pause = self.loop.risk.config.danger_check_seconds
        while not self.loop.stop.is_set():
            left = (wake - self.clock()).total_seconds()
            if left <= 0 or self.loop.kill_requested():
                return False
            waits = [asyncio.ensure_future(self.loop.stop.wait())]
            if watch is not None and watch.wake.is_set():
                since = (time.monotonic() - self._last_step if self._last_step is not None
                         else pause)
                if since >= pause:
                    waits[0].cancel()
                    return True
                left = min(left, pause - since)
            elif watch is not None:
                waits.append(asyncio.ensure_future(watch.wake.wait()))
            await asyncio.wait(waits, timeout=min(left, KILL_POLL_SECONDS),
                               return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
        return False
