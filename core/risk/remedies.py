"""What the margin monitor does about a pool or a perp out of bounds: move free quote from the
spot wallet to the futures wallet, rebalance (sell spot and buy back the same quantity of
perp), and, over the utilisation ceiling, cancel pending orders and close positions. Each
action and failure is told as a :class:`RiskEvent` through the monitor
(:mod:`perpcarry.risk.monitor` decides when and how much: :mod:`perpcarry.risk.sizing`)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING

from perpcarry.domain.errors import PerpcarryError, VenueError
from perpcarry.risk.accounts import free_of, markets_of, pct, utilisation_of
from perpcarry.risk.report import PerpRisk, PoolRisk, RiskEvent, RiskReport
from perpcarry.venues.orders import Wallet

if TYPE_CHECKING:
    from perpcarry.execution.service import TradingSession

CENT = Decimal("0.01")
# How the monitor records and tells an event: (session, report, event).
Tell = Callable[["TradingSession", RiskReport, RiskEvent], None]


class Remedies:
    """The monitor's actions on a session's venues, each told through ``tell``."""

    def __init__(self, tell: Tell) -> None:
        self.tell = tell

    async def transfer(self, session: TradingSession, report: RiskReport, venue_id: str,
                       settle: str, need: Decimal, subject: str, why: str,
                       numbers: dict[str, Decimal]) -> Decimal:
        """Move up to ``need`` of the spot wallet's free ``settle`` to the futures wallet
        (whole cents), saying ``why``; what was moved (zero when nothing is free)."""
        balances = await session.venues[venue_id].orders.fetch_balances()
        free = free_of(balances, Wallet.SPOT, settle).quantize(CENT, ROUND_FLOOR)
        amount = min(need.quantize(CENT, rounding="ROUND_CEILING"), free)
        if amount <= 0:
            return Decimal(0)
        try:
            moved = await session.transfer_margin(venue_id, settle, amount)
        except VenueError as err:
            self.tell(session, report, RiskEvent(
                "floor_unresolved", venue_id, subject, {"amount": amount},
                f"transfer of {amount} {settle} to the futures wallet failed: {err}"))
            return Decimal(0)
        self.tell(session, report, RiskEvent(
            "top_up", venue_id, subject, numbers | {"amount": moved, "free_before": free},
            f"{why}: moved {moved} {settle} from the spot to the futures wallet"))
        return moved

    async def rebalance(self, session: TradingSession, report: RiskReport, perp: PerpRisk,
                        quantity: Decimal, why: str, numbers: dict[str, Decimal]) -> Decimal:
        """Take ``quantity`` off both legs of the journal's positions on ``perp`` (largest
        first), saying ``why``; the quote the spot sales raised (at the mark)."""
        remaining = quantity
        executor = session.executor(None)
        raised = Decimal(0)
        for position in sorted(perp.positions, key=lambda p: p.perp_quantity, reverse=True):
            if remaining <= 0:
                break
            part = min(remaining, position.perp_quantity)
            whole = part >= position.perp_quantity
            try:
                result = await session.close(position, executor=executor, slices=1,
                                             quantity=None if whole else part)
            except PerpcarryError as err:
                self.tell(session, report, RiskEvent(
                    "floor_unresolved", perp.venue, position.position_id,
                    numbers | {"quantity": part},
                    f"{perp.symbol}: rebalance of {part} {position.base} failed: {err}"))
                continue
            taken = -result.perp_change
            if not taken:
                self.tell(session, report, RiskEvent(
                    "floor_unresolved", perp.venue, position.position_id,
                    numbers | {"quantity": part},
                    f"{perp.symbol}: rebalance of {part} {position.base} filled nothing "
                    f"({result.state.value}: {result.note})"))
                continue
            value = -result.spot_change * perp.mark
            raised += value
            remaining -= taken
            self.tell(session, report, RiskEvent(
                "rebalance", perp.venue, position.position_id,
                numbers | {"quantity": taken, "spot_sold": -result.spot_change,
                           "value": value},
                f"{why}: sold {-result.spot_change} {position.base} spot and bought back "
                f"{taken} perp ({result.state.value})"))
        return raised

    async def reduce(self, session: TradingSession, report: RiskReport, pool: PoolRisk,
                     perps: list[PerpRisk], ceiling: Decimal) -> None:
        """Margin use over ``ceiling``: cancel the venue's pending orders, then close whole
        positions of the pool, smallest notional first, reading the pool again after each."""
        orders = session.venues[pool.venue].orders
        canceled = []
        markets = await markets_of(session, pool.venue)
        for order in await orders.fetch_open_orders():
            market = markets.get(order.symbol)
            if market is not None and await orders.cancel_order(
                    market, order.client_order_id) is not None:
                canceled.append(order.client_order_id)
        if canceled:
            self.tell(session, report, RiskEvent(
                "orders_canceled", pool.venue, pool.settle, {"count": Decimal(len(canceled))},
                f"{pool.venue}: canceled {len(canceled)} pending order(s): "
                f"{', '.join(canceled)}"))
        marks = {p.symbol: p.mark for p in perps}
        smallest_first = sorted(
            (pos for p in perps if p.settle == pool.settle for pos in p.positions),
            key=lambda pos: pos.perp_quantity * (marks[pos.perp_symbol] or Decimal(0)))
        executor = session.executor(None)
        for position in smallest_first:
            balances = await orders.fetch_balances()
            utilisation = utilisation_of(balances, pool.wallet, pool.settle)
            if utilisation is None or utilisation <= ceiling:
                return
            try:
                result = await session.close(position, executor=executor, slices=1)
            except PerpcarryError as err:
                result, failure = None, str(err)
            if result is None or not result.perp_change:
                self.tell(session, report, RiskEvent(
                    "utilisation", pool.venue, position.position_id,
                    {"utilisation": utilisation}, f"closing {position.position_id} to "
                    f"reduce margin use failed: {failure if result is None else result.note}"))
                continue
            self.tell(session, report, RiskEvent(
                "reduced", pool.venue, position.position_id,
                {"utilisation": utilisation, "perp_closed": -result.perp_change},
                f"{pool.venue} margin {pct(utilisation)} used: closed {position.position_id}"
                f" ({position.base}, {-result.perp_change} perp, {result.state.value})"))


async def step_of(session: TradingSession, perp: PerpRisk) -> Decimal:
    """The quantity step both legs of ``perp``'s pair can trade."""
    pair = await session.pair(perp.venue, perp.positions[0].base)
    return max(m.quantity_step * m.contract_size for m in (pair.spot, pair.perp))
