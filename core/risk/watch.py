"""Between two risk checks of ``perpcarry run``: the held perps' margins recomputed on every
streamed mark, so a breach is decided within milliseconds of the push, not at the next cycle.

:class:`StreamRisk` listens to the venues' :class:`~perpcarry.streams.hub.StreamHub` s. It
keeps, per held perp, what the last :meth:`RiskMonitor.check <perpcarry.risk.monitor.
RiskMonitor.check>` read of its account (quantity, liquidation price, its pool's margin
equity and notional at the check's marks, the journal's entry) and, on each pushed mark of
a held perp, recomputes in Decimal, O(1) per perp on that symbol:

- the pool's margin equity (a short loses ``q (mark - check mark)``) against ``[strategy]
  margin_floor`` times the initial margin of its notional at the new marks
  (:func:`perpcarry.risk.sizing.margin_top_up`, the monitor's formula);
- the liquidation distance (the check's liquidation price against the new mark) against
  ``[risk] floor_distance`` and ``warning_distance``;
- the strategy's spike exit (:func:`perpcarry.strategy.rules.spiked`, the rules' own test).

Each verdict is a :class:`RiskDecision`, recorded and told on the event bus (a margin alarm,
``risk_kind`` ``stream_*``) once per verdict until the next check. A margin or floor breach
asks the loop for a **risk step** (the monitor's check: REST is the truth before money
moves); a spike asks for the exit of that pair (confirmed over REST first). Only a pushed
mark decides: the hub passes nothing from a stale feed, and REST values (the watchdog's
polls, a consumer's reads) are left to the loop's own check.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from loguru import logger

from perpcarry.config.settings import RiskConfig
from perpcarry.domain.errors import VenueError
from perpcarry.events import EventBus
from perpcarry.execution.journal import Position
from perpcarry.risk.accounts import pct
from perpcarry.risk.monitor import MarginRule
from perpcarry.risk.report import PerpRisk, PoolRisk, RiskEvent, RiskReport
from perpcarry.risk.sizing import margin_share, margin_top_up
from perpcarry.strategy.rules import Rules, spiked
from perpcarry.venues.streams import StreamKind, StreamUpdate

if TYPE_CHECKING:
    from perpcarry.execution.service import TradingSession

ZERO = Decimal(0)
# What each verdict asks of the loop: a risk step, the exit of the pair, or nothing (a
# warning is told; the monitor's next check follows the danger cadence).
RISK_STEP, EXIT = "risk_step", "exit"
KEPT_DECISIONS = 1000
ACTION_OF = {"margin_floor": RISK_STEP, "liquidation_floor": RISK_STEP,
             "liquidation_warning": None, "spike_exit": EXIT}


@dataclass(frozen=True)
class RiskDecision:
    """One verdict of the stream risk on one pushed mark."""

    what: str  # margin_floor | liquidation_floor | liquidation_warning | spike_exit
    why: str
    venue: str
    symbol: str
    mark: Decimal
    source: str  # where the mark came from: "stream" (a live feed's push)
    decided_at: float  # perf_counter() when decided (bench/stream.py measures to it)
    at: datetime  # the push's event time
    base: str = ""

    @property
    def action(self) -> str | None:
        """What the loop does about it: ``risk_step``, ``exit`` or None."""
        return ACTION_OF[self.what]

    def line(self) -> str:
        return f"stream risk: {self.venue} {self.symbol} {self.what} at mark {self.mark} " \
               f"({self.source}): {self.why}"


@dataclass
class _Pool:
    """One margin pool as the check read it, moved by the marks pushed since."""

    risk: PoolRisk
    equity: Decimal  # the check's equity, less the shorts' loss since
    notional: Decimal


@dataclass
class _Perp:
    risk: PerpRisk
    pool: _Pool | None
    mark: Decimal  # the last mark applied to the pool
    entry: Decimal | None  # the journal's entry mark (None: adopted, unknown)
    base: str


@dataclass
class Reading:
    """The newest streamed mark of a held perp and what it means for it now."""

    mark: Decimal
    at: datetime
    distance: Decimal | None
    pool_equity: Decimal | None


@dataclass
class StreamRisk:
    """The hub listener deciding on streamed marks of held perps; ``wake`` is set when the
    loop has something to do now (:meth:`take` says what)."""

    config: RiskConfig
    rules: Rules
    events: EventBus
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    decisions: list[RiskDecision] = field(default_factory=list)
    readings: dict[tuple[str, str], Reading] = field(default_factory=dict)
    rule: MarginRule | None = None
    _held: dict[tuple[str, str], _Perp] = field(default_factory=dict)
    _told: set[tuple[str, str, str]] = field(default_factory=set)
    _step: list[RiskDecision] = field(default_factory=list)
    _exits: dict[tuple[str, str], RiskDecision] = field(default_factory=dict)

    def refresh(self, report: RiskReport, rule: MarginRule) -> None:
        """Watch the journal's perps as ``report`` (a check just made with ``rule``) read
        them; every verdict may be told again."""
        self.rule = rule
        pools = {(p.venue, p.settle): _Pool(p, p.equity, p.perp_notional)
                 for p in report.pools if p.perp_notional is not None}
        held = {}
        for perp in report.perps:
            if not perp.positions or perp.mark is None:
                continue  # not ours, or no mark: the check told it as unknown
            short = sum((p.perp_quantity for p in perp.positions), ZERO)
            proceeds = [p.perp_proceeds for p in perp.positions]
            entry = (sum(proceeds, ZERO) / short if short and None not in proceeds
                     else None)
            held[(perp.venue, perp.symbol)] = _Perp(
                perp, pools.get((perp.venue, perp.settle)), perp.mark, entry,
                perp.positions[0].base)
        self._held = held
        # A perp no longer held has no reading (the dashboard's stream file shows these).
        self.readings = {key: r for key, r in self.readings.items() if key in held}
        self._told.clear()
        # The check just made is what a risk step would make: only spike exits stay asked.
        self._step = []
        if not self._exits:
            self.wake.clear()

    def take(self) -> tuple[list[RiskDecision], list[RiskDecision]]:
        """What the loop acts on now: (the breaches asking for a risk step, the spike
        exits), each once; the wake is cleared."""
        step, exits = self._step, list(self._exits.values())
        self._step, self._exits = [], {}
        self.wake.clear()
        return step, exits

    def __call__(self, venue: str, update: StreamUpdate, source: str) -> None:
        """A hub listener: every accepted value of every venue passes here."""
        if update.kind is not StreamKind.MARK or source != "stream":
            return
        perp = self._held.get((venue, update.symbol))
        if perp is None or self.rule is None:
            return
        mark = update.mark_price
        risk = perp.risk
        pool = perp.pool
        if pool is not None:
            # A short loses what the mark gains (a long the reverse); the notional follows.
            moved = (mark - perp.mark) * risk.quantity
            pool.equity -= moved if risk.short else -moved
            pool.notional += moved
        perp.mark = mark
        distance = (None if risk.liquidation_price is None
                    else abs(risk.liquidation_price - mark) / mark)
        self.readings[(venue, update.symbol)] = Reading(
            mark, update.at, distance, pool.equity if pool is not None else None)
        rule = self.rule
        if pool is not None and margin_top_up(pool.equity, pool.notional, rule.leverage,
                                              rule.floor, rule.target) > 0:
            initial = margin_share(pool.notional, 1, rule.leverage)
            self._decide("margin_floor", perp, update,
                         f"{pool.risk.settle} margin {pool.equity:,.2f}, "
                         f"{pool.equity / initial:.2f}x its initial margin {initial:,.2f} "
                         f"(floor {rule.floor}x)")
        if distance is not None and distance < self.config.floor_distance:
            self._decide("liquidation_floor", perp, update,
                         f"liquidation {pct(distance)} away, below the floor "
                         f"{pct(self.config.floor_distance)}")
        elif distance is not None and distance < self.config.warning_distance:
            self._decide("liquidation_warning", perp, update,
                         f"liquidation {pct(distance)} away (warning below "
                         f"{pct(self.config.warning_distance)})")
        if (self.rules.spike_exit is not None and perp.entry is not None
                and spiked(self.rules, mark, perp.entry)):
            self._decide("spike_exit", perp, update,
                         f"price moved {pct(abs(mark / perp.entry - 1))} since entry at "
                         f"{perp.entry:.2f} (limit {pct(Decimal(str(self.rules.spike_exit)))})")

    def _decide(self, what: str, perp: _Perp, update: StreamUpdate, why: str) -> None:
        key = (perp.risk.venue, perp.risk.symbol, what)
        if key in self._told:
            return  # told once per check: no alert on every push
        self._told.add(key)
        decision = RiskDecision(what, why, perp.risk.venue, perp.risk.symbol,
                                update.mark_price, "stream", time.perf_counter(), update.at,
                                perp.base)
        self.decisions.append(decision)
        del self.decisions[:-KEPT_DECISIONS]  # a service runs for months: the newest only
        if decision.action == RISK_STEP:
            self._step.append(decision)
        elif decision.action == EXIT:
            self._exits[(perp.risk.venue, perp.base)] = decision
        if decision.action is not None:
            self.wake.set()  # first: the loop acts even if telling it fails below
        logger.warning("{}", decision.line())
        self.events.emit(RiskEvent(
            f"stream_{what}", perp.risk.venue, perp.risk.symbol,
            {"mark": update.mark_price}, decision.line()).as_event(self.events.clock()))


async def confirm_spike(session: TradingSession, rules: Rules, decision: RiskDecision
                        ) -> tuple[list[Position], str]:
    """The journal's positions of a streamed spike's pair, to close, and the exit's reason,
    when the venue's REST mark confirms the spike (REST is the truth before money moves);
    else no position and why not ("" when the pair is closed already, or adopted without
    an entry price to measure from)."""
    held = [p for p in session.journal.positions()
            if (p.venue, p.base) == (decision.venue, decision.base)]
    short = sum((p.perp_quantity for p in held), ZERO)
    proceeds = [p.perp_proceeds for p in held]
    if not short or None in proceeds:
        return [], ""
    entry = sum(proceeds, ZERO) / short
    what = f"spike exit of {decision.base} on {decision.venue} not confirmed"
    try:
        quote = (await session.venues[decision.venue].market_data.fetch_funding_snapshot()
                 ).quotes.get(decision.symbol)
    except VenueError as err:
        return [], f"{what}: no REST mark ({err})"
    mark = quote.mark_price if quote is not None else None
    if mark is None:
        return [], f"{what}: no REST mark"
    limit = pct(Decimal(str(rules.spike_exit)))
    moved = pct(abs(mark / entry - 1))
    if not spiked(rules, mark, entry):
        return [], f"{what}: REST mark {mark} moved {moved} since entry (limit {limit})"
    return held, (f"exit: price moved {moved} since entry (limit {limit}; streamed mark "
                  f"{decision.mark}, REST mark {mark})")
