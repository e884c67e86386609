"""The margin monitor: every margin pool's margin, every perp's liquidation distance, every
pool's leverage and utilisation, and what is done about them, once per check.

A carry's short loses as the price rises while its spot gains the same: the position is
hedged, but the short's margin buffer shrinks and a liquidation would leave the spot naked.
Each check reads every venue's perp positions and balances in bulk (one request of each
kind per venue, whatever the number of positions), matches them to the journal's open
positions and acts:

- a pool's margin equity below ``[strategy] margin_floor`` times its initial margin (its
  perps' notional at the mark / ``[allocator] leverage``, as the run loop sets the session):
  the backtest's margin rule, per pool rather than per short. Free quote is moved from the
  spot wallet to the futures wallet where the venue separates them, enough to restore
  ``1 + margin_buffer`` times the initial margin; for what is missing (or where the wallet
  is unified) a **rebalance** sells a slice of spot and buys back the same quantity of perp
  through the executor, so the legs stay equal;
- then, a second trigger (a venue's own liquidation price may be nearer than the margin
  rule assumes), a liquidation distance below ``[risk] floor_distance``: the same two
  remedies, sized to restore ``top_up_target`` (:mod:`perpcarry.risk.sizing` sizes all);
- effective leverage (perp notional / margin equity) above ``leverage_ceiling``: an alarm;
- margin used / margin equity above ``utilisation_ceiling``, judged on the pool as read
  again after the top-ups (the last resort): the venue's pending orders canceled, then
  whole positions closed, smallest first, until it is under.

Every action and alarm is a :class:`RiskEvent`, returned in the :class:`RiskReport` and
appended to the journal's events (kind ``risk``) for the dashboard and the alerts. A value
the venue does not report (a mark, a liquidation price) is an ``unknown`` event naming the
perp, never a zero. The actions themselves (transfer, rebalance, reduce) are
:mod:`perpcarry.risk.remedies`; between checks, :mod:`perpcarry.risk.watch` decides on
streamed marks and asks the run loop for a check.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from loguru import logger

from perpcarry.config.settings import RiskConfig
from perpcarry.domain.errors import InvalidValue, VenueError
from perpcarry.events import EventBus
from perpcarry.execution.journal import Position
from perpcarry.risk.accounts import (
    margin_wallet,
    markets_of,
    pct,
    perp_risk,
    pools_of,
)
from perpcarry.risk.remedies import Remedies, step_of
from perpcarry.risk.report import PerpRisk, PoolRisk, RiskEvent, RiskReport
from perpcarry.risk.sizing import (
    distance_after_top_up,
    margin_share,
    margin_top_up,
    rebalance_for_margin,
    rebalance_quantity,
    top_up_amount,
)
from perpcarry.venues.orders import Wallet

if TYPE_CHECKING:
    from perpcarry.execution.service import TradingSession


class RiskMonitor:
    """Checks margin and acts, with the ``[risk]`` settings."""

    def __init__(self, config: RiskConfig, events: EventBus) -> None:
        self.config = config
        self.events = events
        self.last: RiskReport | None = None  # the last check's report (a replay's summary)
        self.remedies = Remedies(self._event)

    async def check(self, session: TradingSession, now: datetime) -> RiskReport:
        """Read every venue of ``session``, act on what is out of bounds, and report. A
        venue that does not answer is reported in ``down`` (the breaker times it)."""
        report = RiskReport(at=now)
        self.last = report
        rule = MarginRule.of(session)
        held: dict[str, list[Position]] = defaultdict(list)
        for position in session.journal.positions():
            held[position.venue].append(position)
        pnl: Decimal | None = Decimal(0)
        equity = Decimal(0)
        for venue_id in session.venues:
            try:
                perps, pools = await self._read(session, report, venue_id, held[venue_id])
            except VenueError as err:
                self._down(session, report, venue_id, err)
                pnl = None
                continue
            report.perps.extend(perps)
            marks = {p.symbol: p.mark for p in perps}
            for position in held[venue_id]:
                mark = marks.get(position.perp_symbol)
                if mark is None or pnl is None:
                    pnl = None
                    continue
                if position.spot_cost is None or position.perp_proceeds is None:
                    # A cost the journal does not know (a position adopted from the venue):
                    # left out of the figure, the same way in every sample.
                    continue
                pnl += (position.spot_quantity * mark - position.spot_cost
                        + position.perp_proceeds - position.perp_quantity * mark)
                equity += position.spot_cost
            equity += sum((p.equity for p in pools), Decimal(0))
            try:
                await self._act(session, report, venue_id, perps, pools, rule)
            except VenueError as err:  # a read between two actions went unanswered
                self._down(session, report, venue_id, err)
        report.unrealised_pnl = pnl
        report.equity = equity if pnl is not None else None
        danger = any(p.distance is None or p.distance < self.config.warning_distance
                     for p in report.perps if p.positions) or bool(report.down)
        report.next_check_seconds = (self.config.danger_check_seconds if danger
                                     else self.config.check_seconds)
        return report

    async def _act(self, session: TradingSession, report: RiskReport, venue_id: str,
                   perps: list[PerpRisk], pools: list[PoolRisk], rule: MarginRule) -> None:
        """The margin rule first, then the liquidation floor (both add margin), then
        leverage and utilisation, each judged on what the venue and the journal hold after
        the step before moved money or legs."""
        if await self._margin_rule(session, report, venue_id, perps, pools, rule):
            perps, pools = await self._read_again(session, report, venue_id)
        if await self._margin_floor(session, report, venue_id, perps):
            perps, pools = await self._read_again(session, report, venue_id)
        report.pools.extend(pools)
        for pool in pools:
            self._leverage(session, report, pool)
            await self._utilisation(session, report, pool, perps)

    def _down(self, session: TradingSession, report: RiskReport, venue_id: str,
              err: VenueError) -> None:
        report.down[venue_id] = str(err)
        self._event(session, report, RiskEvent("venue_down", venue_id, venue_id, {},
                                               f"no answer: {err}"))

    # -- reading -------------------------------------------------------------------------

    async def _read_again(self, session: TradingSession, report: RiskReport, venue_id: str
                          ) -> tuple[list[PerpRisk], list[PoolRisk]]:
        now_held = [p for p in session.journal.positions() if p.venue == venue_id]
        return await self._read(session, report, venue_id, now_held)

    async def _read(self, session: TradingSession, report: RiskReport, venue_id: str,
                    held: list[Position]) -> tuple[list[PerpRisk], list[PoolRisk]]:
        orders = session.venues[venue_id].orders
        positions, balances = await asyncio.gather(orders.fetch_positions(),
                                                   orders.fetch_balances())
        markets = await markets_of(session, venue_id)
        perps = []
        for position in positions:
            market = markets.get(position.symbol)
            if market is None:
                self._event(session, report, RiskEvent(
                    "unknown", venue_id, position.symbol, {"quantity": position.quantity},
                    f"{position.symbol}: a perp position in a market the venue does not list; "
                    "its margin pool is unknown"))
                continue
            perps.append(perp_risk(venue_id, position, market.settle or market.quote,
                               tuple(p for p in held if p.perp_symbol == position.symbol)))
        return perps, pools_of(session, venue_id, perps, balances)

    # -- the margin rule (the backtest's) ------------------------------------------------

    async def _margin_rule(self, session: TradingSession, report: RiskReport, venue_id: str,
                           perps: list[PerpRisk], pools: list[PoolRisk],
                           rule: MarginRule) -> bool:
        """Top up every pool of the journal's positions whose margin equity is below the
        floor, back to the target: a transfer where the wallets are separate, a rebalance
        for what it did not cover. True when something was moved or traded."""
        acted = False
        for pool in pools:
            members = [p for p in perps if p.settle == pool.settle and p.positions]
            if pool.perp_notional is None or not members:
                continue
            need = margin_top_up(pool.equity, pool.perp_notional, rule.leverage, rule.floor,
                                 rule.target)
            if need <= 0:
                continue
            initial = margin_share(pool.perp_notional, 1, rule.leverage)
            numbers = {"equity": pool.equity, "initial_margin": initial, "need": need}
            why = (f"{venue_id} {pool.settle} margin {pool.equity:,.2f}, "
                   f"{pool.equity / initial:.2f}x its initial margin {initial:,.2f} (floor "
                   f"{rule.floor}x)")
            separate = margin_wallet(session, venue_id) is Wallet.FUTURES
            if separate:
                moved = await self.remedies.transfer(session, report, venue_id, pool.settle,
                                                     need, pool.settle, why, numbers)
                acted |= moved > 0
                need -= moved
            if need <= 0:
                continue
            # What no transfer covered: the same share of each journalled perp of the pool,
            # as the backtest takes what each short misses from that short.
            journalled = sum((p.quantity * p.mark for p in members), Decimal(0))
            short_of = ("no more free quote in the spot wallet" if separate
                        else "the unified wallet's quote is in the pool already")
            proceeds = Decimal(0)
            for perp in members:
                quantity = rebalance_for_margin(
                    need * perp.quantity * perp.mark / journalled, perp.quantity, perp.mark,
                    rule.leverage, rule.target, await step_of(session, perp))
                proceeds += await self.remedies.rebalance(session, report, perp, quantity,
                                                          f"{why}, {short_of}", numbers)
            if proceeds and separate:
                # A rebalance's spot sale lands in the spot wallet: into the pool with it.
                await self.remedies.transfer(session, report, venue_id, pool.settle,
                                             proceeds, pool.settle, why, numbers)
            acted |= proceeds > 0
        return acted

    # -- the liquidation floor -------------------------------------------------------------

    async def _margin_floor(self, session: TradingSession, report: RiskReport,
                            venue_id: str, perps: list[PerpRisk]) -> bool:
        """Warn below the warning distance; below the floor, top up to the target. True
        when something was moved or traded."""
        config = self.config
        low: dict[str, list[PerpRisk]] = defaultdict(list)
        for perp in perps:
            if perp.distance is None or perp.mark is None:
                what = "mark price" if perp.mark is None else "liquidation price"
                self._event(session, report, RiskEvent(
                    "unknown", venue_id, perp.symbol, {"quantity": perp.quantity},
                    f"{perp.symbol}: the venue reports no {what}, so its liquidation "
                    "distance is unknown"))
                continue
            numbers = {"distance": perp.distance, "mark": perp.mark,
                       "liquidation_price": perp.liquidation_price}
            if perp.distance < config.floor_distance and perp.positions:
                low[perp.settle].append(perp)
            elif perp.distance < config.floor_distance:
                self._event(session, report, RiskEvent(
                    "warning", venue_id, perp.symbol, numbers,
                    f"{perp.symbol}: liquidation {pct(perp.distance)} away, below the floor "
                    f"{pct(config.floor_distance)}; not in the journal, so not topped up"))
            elif perp.distance < config.warning_distance:
                self._event(session, report, RiskEvent(
                    "warning", venue_id, perp.symbol, numbers,
                    f"{perp.symbol}: liquidation {pct(perp.distance)} away (warning "
                    f"below {pct(config.warning_distance)})"))
        acted = False
        for settle, pool in low.items():
            acted |= await self._restore(session, report, venue_id, settle, pool)
        return acted

    async def _restore(self, session: TradingSession, report: RiskReport, venue_id: str,
                       settle: str, low: list[PerpRisk]) -> bool:
        """Bring every perp of one pool in ``low`` back to the target distance: one
        transfer sized for the worst (it lifts them all), then rebalances for what it did
        not cover."""
        config = self.config
        target = config.top_up_target
        distances = {p.symbol: p.distance for p in low}
        acted = False
        capabilities = session.config.registry.venues[venue_id].order_capabilities
        if capabilities is not None and capabilities.separate_wallets:
            need = max(top_up_amount(p.distance, target, p.quantity, p.mark,
                                     p.maintenance_rate or Decimal(0), short=p.short)
                       for p in low)
            moved = await self.remedies.transfer(session, report, venue_id, settle, need,
                                                 *_below_floor(low, config.floor_distance))
            if moved:
                acted = True
                distances = {p.symbol: distance_after_top_up(
                    p.distance, moved, p.quantity, p.mark, p.maintenance_rate or Decimal(0),
                    short=p.short) for p in low}
        proceeds = Decimal(0)
        for perp in low:
            distance = distances[perp.symbol]
            if distance < target:
                quantity = rebalance_quantity(distance, target, perp.quantity,
                                              await step_of(session, perp))
                proceeds += await self.remedies.rebalance(
                    session, report, perp, quantity,
                    f"{perp.symbol}: liquidation {pct(distance)} away, no free quote to move",
                    {"distance": distance})
        if proceeds and capabilities is not None and capabilities.separate_wallets:
            # A rebalance's spot sale lands in the spot wallet: into the pool with it.
            await self.remedies.transfer(session, report, venue_id, settle, proceeds,
                                         *_below_floor(low, config.floor_distance))
        return acted or proceeds > 0

    # -- leverage and utilisation ------------------------------------------------------------

    def _leverage(self, session: TradingSession, report: RiskReport, pool: PoolRisk) -> None:
        leverage = pool.leverage
        if leverage is not None and leverage > self.config.leverage_ceiling:
            self._event(session, report, RiskEvent(
                "leverage_alarm", pool.venue, pool.settle,
                {"leverage": leverage, "ceiling": self.config.leverage_ceiling,
                 "perp_notional": pool.perp_notional, "equity": pool.equity},
                f"{pool.venue} {pool.settle} margin: effective leverage {leverage:.2f}x "
                f"above the ceiling {self.config.leverage_ceiling}x"))

    async def _utilisation(self, session: TradingSession, report: RiskReport, pool: PoolRisk,
                           perps: list[PerpRisk]) -> None:
        """Over the ceiling: cancel the venue's pending orders, then close whole positions
        of the pool, smallest notional first, reading the pool again after each."""
        ceiling = self.config.utilisation_ceiling
        utilisation = pool.utilisation
        if utilisation is None or utilisation <= ceiling:
            return
        self._event(session, report, RiskEvent(
            "utilisation", pool.venue, pool.settle,
            {"utilisation": utilisation, "ceiling": ceiling, "used": pool.used,
             "equity": pool.equity},
            f"{pool.venue} {pool.settle} margin {pct(utilisation)} used, above the ceiling "
            f"{pct(ceiling)}: canceling pending orders and reducing, smallest first"))
        await self.remedies.reduce(session, report, pool, perps, ceiling)

    # -- events ----------------------------------------------------------------------------

    def _event(self, session: TradingSession, report: RiskReport, event: RiskEvent) -> None:
        report.events.append(event)
        self.events.emit(event.as_event(report.at))
        logger.warning("risk {}: {}", event.kind, event.message)


@dataclass(frozen=True)
class MarginRule:
    """The margin rule's settings for one session: the leverage and margin multiple it sizes
    shorts with (``[allocator]`` in a run, see ``perpcarry.cli.run.loop_settings``) and
    ``[strategy] margin_floor``."""

    leverage: Decimal
    floor: Decimal
    target: Decimal

    @classmethod
    def of(cls, session: TradingSession) -> MarginRule:
        floor = Decimal(str(session.config.settings.strategy.margin_floor))
        target = session.settings.margin_buffer
        if floor > target:
            raise InvalidValue("[strategy] margin_floor", float(floor),
                               rule=f"must not exceed the margin a short is sized with "
                                    f"({target:g}x its initial margin): a top-up restores it")
        return cls(session.settings.leverage, floor, target)


def _below_floor(low: list[PerpRisk], floor: Decimal) -> tuple[str, str, dict[str, Decimal]]:
    """(subject, why, numbers) of a top-up for the nearest liquidation of ``low``."""
    worst = min(low, key=lambda p: p.distance)
    return (worst.symbol, f"{worst.symbol}: liquidation {pct(worst.distance)} away, below "
            f"the floor {pct(floor)}", {"distance": worst.distance})
