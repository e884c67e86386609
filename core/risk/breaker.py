"""The circuit breaker: stops new entries when something is wrong that the loop cannot fix
by itself, and with ``[risk] flatten = true`` closes every position.

It is fed once per cycle (:meth:`CircuitBreaker.feed`) with the margin monitor's report,
the cycle's reconciliation, the order errors per venue and the venues that did not answer,
and trips on the first of:

- ``naked_leg``: a naked leg reconciliation could not close, still there after
  ``naked_leg_cycles`` cycles;
- ``order_errors``: more than ``max_order_errors`` order errors on one venue within
  ``order_error_window_seconds``;
- ``margin_floor``: a liquidation distance the monitor could not restore above the floor;
- ``drawdown``: the carry's unrealised PnL down by more than ``max_drawdown`` of its equity
  within ``drawdown_window_seconds`` (seed 003: -8 % in 5 minutes);
- ``venue_down``: a venue unanswered for longer than ``venue_down_minutes``.

Tripped is a journal flag (:mod:`perpcarry.risk.state`), so a restart stays tripped and the
pre-trade checks refuse every open until ``perpcarry resume``. What it counts between cycles
(errors, PnL samples, since when a venue is down) lives in the process: a restart starts
those windows afresh.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from loguru import logger

from perpcarry.config.settings import RiskConfig
from perpcarry.domain.errors import PerpcarryError
from perpcarry.events import Event, EventBus, EventKind, Severity
from perpcarry.execution.engine import ExecutionResult
from perpcarry.execution.journal import Journal
from perpcarry.execution.recovery import Reconciliation
from perpcarry.risk.report import RiskReport
from perpcarry.risk.state import BreakerState, breaker_state, trip_breaker

if TYPE_CHECKING:
    from perpcarry.execution.service import TradingSession


class CircuitBreaker:
    """The breaker of one running loop over one journal."""

    def __init__(self, config: RiskConfig, journal: Journal, events: EventBus) -> None:
        self.config = config
        self.journal = journal
        self.events = events
        self._naked: dict[str, int] = {}  # position id -> consecutive cycles not closed
        self._errors: dict[str, deque[datetime]] = defaultdict(deque)
        self._pnl: deque[tuple[datetime, Decimal, Decimal]] = deque()
        self._down_since: dict[str, datetime] = {}

    @property
    def state(self) -> BreakerState | None:
        """The tripped state, as the journal has it (another process may have resumed)."""
        return breaker_state(self.journal)

    def feed(self, now: datetime, *, report: RiskReport | None = None,
             reconciliation: Reconciliation | None = None,
             order_errors: Mapping[str, int] | None = None,
             venues_down: Mapping[str, str] | None = None) -> BreakerState | None:
        """One cycle's observations; the breaker's state afterwards (None: not tripped).
        ``order_errors`` counts the orders each venue refused or failed this cycle; the
        venues that did not answer are ``report.down`` and ``venues_down`` (venue -> why,
        e.g. the market data's failures)."""
        reasons = []
        if reconciliation is not None:
            reasons += self._naked_legs(reconciliation)
        if order_errors:
            reasons += self._order_errors(now, order_errors)
        if report is not None:
            reasons += self._margin_floor(report)
            reasons += self._drawdown(now, report)
        if report is not None or venues_down is not None:
            down = {**(venues_down or {}), **(report.down if report is not None else {})}
            reasons += self._venues_down(now, down)
        before = self.state
        if before is not None or not reasons:
            return before
        trigger, reason = reasons[0]
        state = trip_breaker(self.journal, trigger, reason)
        self.events.emit(Event(EventKind.BREAKER, Severity.CRITICAL,
                               f"circuit breaker tripped: {reason}", now,
                               data={"trigger": trigger}))
        logger.error("circuit breaker tripped: {}", reason)
        return state

    # -- triggers --------------------------------------------------------------------------

    def _naked_legs(self, reconciliation: Reconciliation) -> list[tuple[str, str]]:
        open_now = {f.subject: f for f in reconciliation.findings
                    if f.kind == "naked_leg" and not f.action.startswith("closed")}
        self._naked = {subject: self._naked.get(subject, 0) + 1 for subject in open_now}
        return [("naked_leg", f"naked leg of {subject} on {open_now[subject].venue} not "
                 f"closed for {cycles} cycles ({open_now[subject].detail})")
                for subject, cycles in self._naked.items()
                if cycles > self.config.naked_leg_cycles]

    def _order_errors(self, now: datetime, counts: Mapping[str, int]
                      ) -> list[tuple[str, str]]:
        window = timedelta(seconds=self.config.order_error_window_seconds)
        tripped = []
        for venue, count in counts.items():
            times = self._errors[venue]
            times.extend([now] * count)
            while times and now - times[0] > window:
                times.popleft()
            if len(times) > self.config.max_order_errors:
                tripped.append(("order_errors", f"{len(times)} order errors on {venue} within "
                                f"{self.config.order_error_window_seconds:g} s (at most "
                                f"{self.config.max_order_errors})"))
        return tripped

    @staticmethod
    def _margin_floor(report: RiskReport) -> list[tuple[str, str]]:
        return [("margin_floor", f"{e.venue} {e.subject}: margin below the floor and not "
                 f"restored: {e.message}") for e in report.of_kind("floor_unresolved")]

    def _drawdown(self, now: datetime, report: RiskReport) -> list[tuple[str, str]]:
        if report.unrealised_pnl is None or not report.equity:
            return []
        window = timedelta(seconds=self.config.drawdown_window_seconds)
        self._pnl.append((now, report.unrealised_pnl, report.equity))
        while now - self._pnl[0][0] > window:
            self._pnl.popleft()
        _, peak, equity = max(self._pnl, key=lambda sample: sample[1])
        drop = (report.unrealised_pnl - peak) / equity
        if drop < -self.config.max_drawdown:
            return [("drawdown", f"unrealised PnL fell {-drop * 100:.2f} % of equity "
                     f"({peak:.2f} to {report.unrealised_pnl:.2f}) within "
                     f"{self.config.drawdown_window_seconds:g} s (limit "
                     f"{self.config.max_drawdown * 100:g} %)")]
        return []

    def _venues_down(self, now: datetime, down: Mapping[str, str]) -> list[tuple[str, str]]:
        for venue in list(self._down_since):
            if venue not in down:
                del self._down_since[venue]
        limit = timedelta(minutes=self.config.venue_down_minutes)
        tripped = []
        for venue, why in down.items():
            since = self._down_since.setdefault(venue, now)
            if now - since > limit:
                tripped.append(("venue_down", f"{venue} unanswered since {since:%H:%M:%S} UTC, "
                                f"over {self.config.venue_down_minutes:g} min ({why})"))
        return tripped


@dataclass(frozen=True)
class FlattenResult:
    closed: list[ExecutionResult]
    failed: dict[str, str]  # position id -> why it was not closed


async def flatten(session: TradingSession) -> FlattenResult:
    """Close every open position of the journal through the executor, smallest entry
    notional first (unknown ones last). Each close runs to its end even if the caller is
    cancelled meanwhile (a stop never falls between two legs); a close that fails is
    reported and the next one tried."""
    executor = session.executor(None)
    closed, failed = [], {}
    # A position whose entry notional the journal does not know (adopted) goes last.
    positions = sorted(session.journal.positions(),
                       key=lambda p: (p.perp_proceeds is None, p.perp_proceeds or 0))
    for position in positions:
        try:
            result = await _to_the_end(session.close(position, executor=executor, slices=1))
        except PerpcarryError as err:
            failed[position.position_id] = str(err)
            logger.error("flatten: {} not closed: {}", position.position_id, err)
            continue
        closed.append(result)
    return FlattenResult(closed, failed)


async def _to_the_end(work: Coroutine[Any, Any, ExecutionResult]) -> ExecutionResult:
    """Await ``work`` to its end; cancellations meanwhile (a stop, a second Ctrl-C) wait for
    it, then the cancellation propagates."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result()
