"""The carry strategy as a service: one cycle is market data -> the shared rules and the
allocator -> targets diffed against the journal's positions -> orders through the executor.

Each cycle, in order:

1. the kill switch (a flag in the journal, set by ``perpcarry kill`` from any shell): when
   engaged nothing trades, and with ``--flatten`` every position is closed;
2. recovery: whatever a crashed predecessor left pending is finished or unwound first;
3. the funding ledger is brought up to date from the venues;
4. the risk monitor reads margins and acts (top-ups, rebalances, reductions), and the
   circuit breaker is fed; tripped, it stops new entries (and flattens when configured);
5. the market snapshot -> :func:`perpcarry.strategy.rules.decide`, the very function the
   backtest runs at a rebalance, with the same allocator, on the account's equity read from
   its balances (not a ``--capital``);
6. the targets against the journal: exits and reductions first (they free capital), then
   entries in FMZ's order (highest current rate plus entry premium first). A stop request
   (Ctrl-C, SIGTERM) is honoured between two-leg actions, never inside one.

Between cycles, on streams, :meth:`CarryLoop.risk_step` runs steps 1 and 4 alone (and the
spike exits confirmed over REST) when the stream risk (:mod:`perpcarry.risk.watch`) decided
on a pushed mark.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal

import numpy as np

from perpcarry.alerts.format import daily_summary
from perpcarry.allocation.allocator import Limits
from perpcarry.backtest.engine import lp_allocator
from perpcarry.config.settings import AllocatorConfig
from perpcarry.dashboard.feed import RateLimitUse, record_cycle
from perpcarry.domain.errors import PerpcarryError, VenueError
from perpcarry.events import Event, EventBus, EventKind, Severity
from perpcarry.execution.engine import Executor
from perpcarry.execution.journal import Position, PositionState, Purpose
from perpcarry.execution.service import TradingSession
from perpcarry.ledger.pnl import ledger_pnl
from perpcarry.ledger.sync import sync_venue
from perpcarry.risk.breaker import CircuitBreaker, flatten
from perpcarry.risk.monitor import MarginRule, RiskMonitor
from perpcarry.risk.report import RiskReport
from perpcarry.risk.state import kill_state
from perpcarry.risk.watch import RiskDecision, StreamRisk, confirm_spike
from perpcarry.run.equity import account_equity
from perpcarry.run.market import Candidate, MarketSnapshot, MarketSource, hours
from perpcarry.run.report import Action, CycleReport
from perpcarry.strategy.rules import Book, Rules, decide

ZERO = Decimal(0)


@dataclass(frozen=True)
class LoopSettings:
    rules: Rules
    allocator: AllocatorConfig
    executor: Executor
    slices: int


class CarryLoop:
    """Cycles of the carry strategy over one trading session."""

    def __init__(self, session: TradingSession, market: MarketSource, settings: LoopSettings,
                 clock: Callable[[], datetime], events: EventBus,
                 stop: asyncio.Event | None = None) -> None:
        self.session = session
        self.journal = session.journal
        self.market = market
        self.settings = settings
        self.clock = clock
        self.events = events
        self.stop = stop or asyncio.Event()
        # Every order that filled, entries and unwinds alike, reaches the plugins and alerts.
        self.journal.fill_listener = lambda state, order: events.fill(
            state, unwind=order.purpose is Purpose.UNWIND)
        # The eligible set of the last cycle: the rules re-solve the allocation only when it
        # changes (as the backtest does), so it is kept between cycles.
        self._eligible: dict[tuple[str, str], bool] = {}
        self._kill_seen: str | None = None
        self._kill_told: datetime | None = None
        self._order_errors: Counter[str] = Counter()
        risk = session.config.settings.risk
        self.risk = RiskMonitor(risk, events)
        self.breaker = CircuitBreaker(risk, self.journal, events)
        self.rate_limits = RateLimitUse()
        # Deciding on streamed marks between cycles (perpcarry.cli.run wires it when the
        # venues stream); None: the loop's checks alone.
        self.watch: StreamRisk | None = None

    def kill_requested(self) -> bool:
        """The kill switch changed since the last cycle acted on it."""
        return self.journal.flag("kill") != self._kill_seen

    # -- one cycle ------------------------------------------------------------------------

    async def cycle(self) -> CycleReport:
        now = self.clock()
        report = CycleReport(now)
        await self.kill_switch(report)
        recovered = await self.session.recover()
        report.notes += [f"recovery: {f.kind} {f.venue} {f.subject}: {f.action}"
                         for f in recovered.findings if f.kind != "confirmed"]
        await self.sync_funding(report)
        # Margins are protected whatever else: top-ups and rebalances only ever reduce risk.
        risk = await self.risk_check(report)
        await self.breaker_step(report, risk, recovered, self._order_errors)
        snapshot = await self.market.snapshot(now)
        report.notes += [f"{venue}: no market data this cycle ({why})"
                         for venue, why in snapshot.failures.items()]
        upcoming = snapshot.pairs.next_settlement_hours
        upcoming = upcoming[np.isfinite(upcoming)]
        if upcoming.size:
            report.next_settlement = datetime.fromtimestamp(float(upcoming.min()) * 3600,
                                                            tz=now.tzinfo)
        positions = self.journal.positions()
        report.positions = len(positions)
        per_venue, notes = await account_equity(self.session, snapshot)
        report.notes += notes
        record_cycle(self.journal, now, per_venue, [f.as_dict() for f in recovered.findings],
                     snapshot.failures, snapshot.scan, risk=self.risk.last,
                     rate_limits=self.rate_limits.read(self.session.venues))
        if per_venue is None:
            report.notes.append("no trade this cycle: the account's equity is unknown")
            return report
        report.equity = equity = sum(per_venue.values())
        decision = self.decide(snapshot, positions, equity, per_venue)
        await self.trade(snapshot, decision, positions, report)
        self._order_errors = Counter(a.venue for a in report.actions if a.kind == "failed")
        self.alerts(now)
        return report

    async def risk_step(self) -> CycleReport:
        """Between two cycles, when the stream risk decided on a pushed mark: the kill
        switch, the risk monitor's check and its actions (it re-reads every account over
        REST: the truth before money moves), then the spike exits it asked for, each
        confirmed on the venue's REST mark first. No market snapshot, no entries."""
        report = CycleReport(self.clock(), step="risk")
        breaches, exits = self.watch.take()
        report.notes += [d.line() for d in breaches + exits]
        await self.kill_switch(report)
        # The breaker hears the check at once (a floor it could not restore, a venue down);
        # reconciliation and order errors are the cycles' to count.
        await self.breaker_step(report, await self.risk_check(report), None, None)
        for decision in exits:
            if self.stop.is_set():
                break
            await self._spike_exit(decision, report)
        report.positions = len(self.journal.positions())
        self.journal.append_event("risk_step", report.as_dict())
        return report

    async def risk_check(self, report: CycleReport) -> RiskReport:
        """The risk monitor's check and its actions, told in ``report``; the stream risk
        then watches what it read."""
        risk = await self.risk.check(self.session, report.at)
        report.next_check_seconds = risk.next_check_seconds
        report.notes += [e.message for e in risk.events]
        if self.watch is not None:
            self.watch.refresh(risk, MarginRule.of(self.session))
        return risk

    async def _spike_exit(self, decision: RiskDecision, report: CycleReport) -> None:
        """Close the pair of a streamed spike once the venue's REST mark confirms it."""
        held, reason = await confirm_spike(self.session, self.settings.rules, decision)
        if not held:
            report.notes += [reason] if reason else []
            return
        for position in held:
            action = Action("close", position.venue, position.base, position.perp_quantity,
                            reason, position.position_id)
            try:
                result = await self.session.close(position, executor=self.settings.executor,
                                                  slices=self.settings.slices)
                action.state = result.state.value
            except (VenueError, PerpcarryError) as err:
                action.kind, action.reason = "failed", f"close: {err}"
            report.actions.append(action)

    async def kill_switch(self, report: CycleReport) -> None:
        """The kill switch as ``perpcarry kill`` left it: engaged, no entry this cycle, and
        with ``--flatten`` every position closed (smallest first)."""
        self._kill_seen = self.journal.flag("kill")
        kill = kill_state(self.journal)
        if kill is None:
            self._kill_told = None
            return
        report.halted = f"kill switch ({kill.reason})"
        if self._kill_told != kill.at:
            self._kill_told = kill.at
            self.events.emit(Event(EventKind.KILL, Severity.CRITICAL,
                                   f"kill switch engaged: {kill.reason}"
                                   + (" (flatten)" if kill.flatten else ""), self.clock()))
        if kill.flatten:
            await self.flatten(report, "kill switch")

    async def breaker_step(self, report: CycleReport, risk, recovered, order_errors) -> None:
        """Feed the circuit breaker; tripped, no entry (and with ``[risk] flatten`` every
        position closed)."""
        state = self.breaker.feed(report.at, report=risk, reconciliation=recovered,
                                  order_errors=order_errors)
        if state is None:
            return
        report.halted = report.halted or f"circuit breaker ({state.reason})"
        if self.breaker.config.flatten:
            await self.flatten(report, "circuit breaker")

    async def flatten(self, report: CycleReport, why: str) -> None:
        """Close every position (:func:`perpcarry.risk.breaker.flatten`); each close runs to
        its end."""
        result = await flatten(self.session)
        for closed in result.closed:
            position = self.journal.position(closed.position_id)
            report.actions.append(Action("close", position.venue, position.base,
                                         -closed.perp_change, f"{why}: flatten",
                                         closed.position_id, closed.state.value))
        for position_id, error in result.failed.items():
            position = self.journal.position(position_id)
            report.actions.append(Action("failed", position.venue, position.base, ZERO,
                                         f"{why}: flatten: {error}", position_id))

    def alerts(self, now: datetime) -> None:
        """The alerter's window (held-back alerts told once it ends) and, once a day, the
        ledger's summary per venue."""
        alerter = self.events.alerter
        if alerter is None:
            return
        alerter.tick(now)
        if alerter.summary_due(now):
            rows = [v.as_dict() for v in ledger_pnl(self.journal, now=now, marks={}).venues]
            self.events.emit(daily_summary(rows, now))

    async def sync_funding(self, report: CycleReport) -> None:
        """The funding each venue paid since the last cycle, into the ledger; each payment
        is an event. A venue that cannot answer now is synced at a later cycle."""
        for venue_id, handle in self.session.venues.items():
            try:
                payments = await sync_venue(self.journal, venue_id, handle.orders)
            except VenueError as err:
                report.notes.append(f"{venue_id}: funding not synced this cycle ({err})")
                continue
            for payment in payments:
                self.events.funding_payment(payment)

    def decide(self, snapshot: MarketSnapshot, positions: list[Position], equity: float,
               per_venue: dict[str, float]):
        """The rules' targets for the snapshot's pairs, from the journal's positions; no
        venue is given more capital than its own account holds."""
        rules = self.settings.rules
        candidates = snapshot.candidates
        by_key = _by_key(positions)
        closed = _by_key(self.journal.positions(include_closed=True),
                         states={PositionState.CLOSED})
        n = len(candidates)
        quantity = np.zeros(n)
        release_at = np.full(n, -np.inf)
        rejoin_at = np.full(n, -np.inf)
        entry_mark = np.full(n, np.nan)
        eligible = np.zeros(n, dtype=bool)
        for i, c in enumerate(candidates):
            held = by_key.get(c.key, [])
            if held:
                quantity[i] = float(sum(p.perp_quantity for p in held))
                release_at[i] = min(hours(p.opened_at) for p in held) + rules.min_hold_hours
                short = sum(p.perp_quantity for p in held)
                proceeds = [p.perp_proceeds for p in held]
                if short and None not in proceeds:   # None: adopted, entry price unknown
                    entry_mark[i] = float(sum(proceeds) / short)
            done = [p.closed_at for p in closed.get(c.key, []) if p.closed_at is not None]
            if done:
                rejoin_at[i] = hours(max(done)) + rules.cooldown_hours
            eligible[i] = self._eligible.get(c.key, bool(held))
        # Positions the snapshot cannot see (their venue did not answer) keep their capital.
        seen = {c.key for c in candidates}
        unseen = sum(float(p.perp_proceeds or 0) for p in positions
                     if (p.venue, p.base) not in seen)
        limits = Limits.from_config(self.settings.allocator, capital=equity)
        budget = equity - unseen * limits.capital_per_notional
        share = {v: max(e, 0.0) / equity for v, e in per_venue.items()} if equity > 0 else {}
        allocate = lp_allocator(limits, [c.venue for c in candidates],
                                [c.base for c in candidates], venue_share=share)
        book = Book(quantity=quantity, release_at=release_at, rejoin_at=rejoin_at,
                    entry_mark=entry_mark, eligible=eligible)
        decision = decide(rules, snapshot.pairs, book, hours(snapshot.now), max(budget, 0.0),
                          allocate)
        self._eligible = {c.key: bool(e) for c, e in zip(candidates, decision.eligible,
                                                         strict=True)}
        return decision

    async def trade(self, snapshot: MarketSnapshot, decision, positions: list[Position],
                    report: CycleReport) -> None:
        """Trade each pair to its target: exits and reductions, then entries by rank."""
        by_key = _by_key(positions)
        exits: list[tuple[Candidate, Decimal, str]] = []
        entries: list[tuple[Candidate, Decimal, str]] = []
        for i, c in enumerate(snapshot.candidates):
            held = sum((p.perp_quantity for p in by_key.get(c.key, [])), ZERO)
            target = Decimal(repr(float(decision.target[i]))) if decision.target[i] > 0 else ZERO
            reason = decision.reasons.get(i, "resize to the allocation")
            if target < held:
                exits.append((c, held - target, reason))
            elif target > held:
                entries.append((c, target - held, reason))
        for c, quantity, reason in exits:
            if self.stop.is_set():
                return
            await self._reduce(c, by_key[c.key], quantity, reason, report)
        if report.halted:
            if entries:
                report.notes.append(f"{len(entries)} entr(y/ies) not made: {report.halted}")
            return
        entries.sort(key=lambda e: e[0].entry_rank, reverse=True)
        for c, quantity, reason in entries:
            if self.stop.is_set():
                return
            held = by_key.get(c.key)
            await self._open(c, quantity, reason, report,
                             max(held, key=lambda p: p.perp_quantity) if held else None)

    async def _reduce(self, c: Candidate, held: list[Position], quantity: Decimal, reason: str,
                      report: CycleReport) -> None:
        """Close positions of the pair, smallest first, until ``quantity`` is taken down; the
        last one partly when it is more than what is left."""
        left = quantity
        for position in sorted(held, key=lambda p: p.perp_quantity):
            if left <= 0:
                break
            part = min(left, position.perp_quantity)
            kind = "close" if part == position.perp_quantity else "reduce"
            part = self._rounded(c, part) if kind == "reduce" else part
            if part <= 0:
                report.actions.append(Action("skip", c.venue, c.base, quantity,
                                             f"{reason}: below one quantity step",
                                             position.position_id))
                return
            action = Action(kind, c.venue, c.base, part, reason, position.position_id)
            try:
                result = await self.session.close(
                    position, executor=self.settings.executor, slices=self.settings.slices,
                    quantity=None if kind == "close" else part)
                action.state = result.state.value
                action.reason += f" ({result.note})" if result.note else ""
            except (VenueError, PerpcarryError) as err:
                action.kind, action.reason = "failed", f"{kind}: {err}"
            report.actions.append(action)
            left -= part

    async def _open(self, c: Candidate, quantity: Decimal, reason: str,
                    report: CycleReport, add_to: Position | None) -> None:
        """Open the pair, or add to the position already held (one position per pair)."""
        quantity = self._rounded(c, quantity)
        if quantity <= 0 or c.price is None:
            report.actions.append(Action("skip", c.venue, c.base, quantity,
                                         f"{reason}: below one quantity step"
                                         if c.price is not None else "no price to size with"))
            return
        minimum = max(m.min_notional or ZERO for m in (c.pair.spot, c.pair.perp))
        if quantity * c.price < minimum:
            report.actions.append(Action("skip", c.venue, c.base, quantity,
                                         f"{reason}: {quantity * c.price:.2f} is below the "
                                         f"minimum notional {minimum}"))
            return
        action = Action("open" if add_to is None else "add", c.venue, c.base, quantity, reason,
                        None if add_to is None else add_to.position_id)
        try:
            result = await self.session.open(
                c.venue, c.base, notional=None, quantity=quantity,
                executor=self.settings.executor, slices=self.settings.slices, add_to=add_to)
            action.position_id, action.state = result.position_id, result.state.value
            if add_to is None and math.isfinite(c.net_apr):
                self.journal.set_expected_apr(result.position_id, c.net_apr)
            action.reason += f" ({result.note})" if result.note else ""
        except (VenueError, PerpcarryError) as err:
            action.kind, action.reason = "failed", f"open: {err}"
        report.actions.append(action)

    def _rounded(self, c: Candidate, quantity: Decimal) -> Decimal:
        step = max(m.quantity_step * m.contract_size for m in (c.pair.spot, c.pair.perp))
        return (quantity / step).to_integral_value(rounding=ROUND_FLOOR) * step


def _by_key(positions: list[Position], states=None) -> dict[tuple[str, str], list[Position]]:
    grouped: dict[tuple[str, str], list[Position]] = defaultdict(list)
    for p in positions:
        if states is None or p.state in states:
            grouped[(p.venue, p.base)].append(p)
    return grouped
