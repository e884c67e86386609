"""The paper venue: a venue's :class:`OrderVenue` simulated on its real market data.

An executor cannot tell it from the live venue: the same interface, the venue's own size
rules and rejects (``check_order_size``), its fee schedule and fee currencies, its wallet
model, cross-margined perp positions with liquidation prices, and funding credited or
charged at each settlement. State lives in SQLite (see :mod:`perpcarry.paper.store`) and a
fill is committed before it is acknowledged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from loguru import logger

from perpcarry.domain.errors import (
    BadSymbol,
    DuplicateClientOrderId,
    InvalidOrder,
    OutcomeUnknown,
    VenueError,
)
from perpcarry.domain.parsing import to_ms
from perpcarry.domain.types import FeeSchedule, Market, MarketKind
from perpcarry.paper.faults import FaultKind, PaperFaults
from perpcarry.paper.ledger import Ledger, WalletModel, fee_for
from perpcarry.paper.margin import liquidation_price, margin_ratio
from perpcarry.paper.prices import MarketView, settlement_times
from perpcarry.paper.store import OrderRow, PaperStore, PaymentRow
from perpcarry.venues.orders import (
    Balance,
    Fee,
    FundingPayment,
    MarginMode,
    OrderRequest,
    OrderState,
    OrderStatus,
    PerpPosition,
    Side,
    TimeInForce,
    Transfer,
    Wallet,
    check_order_size,
    floor_to_step,
    to_order_units,
)

ZERO = Decimal(0)


class PaperVenue:
    """One venue's paper account; satisfies :class:`perpcarry.venues.orders.OrderVenue`."""

    def __init__(self, venue_id: str, view: MarketView,
                 fee_schedule: Callable[[], Awaitable[FeeSchedule]], store: PaperStore,
                 model: WalletModel, maintenance_margin_rate: Decimal,
                 clock: Callable[[], datetime], faults: PaperFaults | None = None) -> None:
        self.venue_id = venue_id
        self.view = view
        self._fee_schedule = fee_schedule
        self._schedule: FeeSchedule | None = None
        self.store = store
        self.model = model
        self.ledger = Ledger(venue_id, store, model)
        self.maintenance_margin_rate = maintenance_margin_rate
        self.clock = clock
        self.faults = faults or PaperFaults()

    async def close(self) -> None:
        """Release the market-data client and the state file."""
        self.store.close()
        await self.view.client.close()

    # -- helpers --------------------------------------------------------------------------

    async def fees(self) -> FeeSchedule:
        """The venue's fee schedule (its fee model, the account's config), read once."""
        if self._schedule is None:
            self._schedule = await self._fee_schedule()
        return self._schedule

    async def _market(self, market: Market) -> Market:
        markets = await self.view.markets()
        if market.venue != self.venue_id or market.symbol not in markets:
            raise BadSymbol(self.venue_id, f"{market.symbol}: not a market of {self.venue_id}")
        return markets[market.symbol]

    async def _marks(self) -> dict[str, Decimal | None]:
        quotes = (await self.view.funding()).quotes if self.store.positions() else {}
        return {symbol: quote.mark_price for symbol, quote in quotes.items()}

    async def _catch_up(self) -> None:
        """What time has done since the last call: funding settled, resting orders the
        market crossed filled."""
        await self._settle_funding()
        await self._match_resting()

    # -- orders ---------------------------------------------------------------------------

    async def place_order(self, request: OrderRequest) -> OrderState:
        """Fill (or rest) ``request`` and commit it before answering; see OrderVenue."""
        market = await self._market(request.market)
        await self._catch_up()
        cid = request.client_order_id
        fault = self.faults.next_order()
        if fault and fault.kind is FaultKind.REJECT:
            raise fault.error or InvalidOrder(self.venue_id, f"order {cid}: rejected "
                                              "(simulated by PaperFaults)")
        if fault and fault.kind is FaultKind.OUTCOME_UNKNOWN_LOST:
            raise OutcomeUnknown(self.venue_id, f"order {cid}: no answer (simulated by "
                                 "PaperFaults; the venue never saw it)")
        price, source = await self.view.fill_price(market, request.side)
        limit = request.price
        check_order_size(market, request.quantity, limit or price, request.type)
        crosses = limit is None or (price <= limit if request.side is Side.BUY
                                    else price >= limit)
        post_only = request.time_in_force is TimeInForce.POST_ONLY
        resting = post_only and not crosses
        # A post-only order that would take liquidity expires, as on the venues.
        filled = request.quantity if crosses and not post_only else ZERO
        if fault and fault.kind is FaultKind.PARTIAL_FILL and filled:
            filled = self._partial(market, filled, fault.fill_ratio)
        status = (OrderStatus.NEW if resting else OrderStatus.FILLED
                  if filled == request.quantity else OrderStatus.EXPIRED)
        fee = fee_for(market, request.side, filled, price, await self.fees(), maker=False)
        markets, marks, now = await self.view.markets(), await self._marks(), self.clock()
        with self.store.transaction():
            if self.store.order(cid) is not None:
                raise DuplicateClientOrderId(self.venue_id, f"client order id {cid} is "
                                             "already used")
            if request.reduce_only:
                self.ledger.check_reduce_only(market, request.side, request.quantity)
            if filled or resting:
                self.ledger.check_funds(
                    market, request.side, filled or request.quantity, limit if resting
                    else price, fee if filled else Fee(ZERO, fee.currency), markets, marks)
            self.store.insert_order(OrderRow(OrderState(
                venue=self.venue_id, symbol=market.symbol, base=market.base,
                client_order_id=cid, venue_order_id=None, side=request.side,
                type=request.type, status=status, quantity=request.quantity,
                filled_quantity=filled, average_price=price if filled else None,
                fees=(fee,) if filled else (), reduce_only=request.reduce_only,
                created_at=now, updated_at=now, price_source=source if filled else None),
                limit, request.time_in_force))
            if filled:
                self.ledger.apply_fill(market, request.side, filled, price, fee, now)
        state = self.store.order(cid).state
        if fault and fault.kind is FaultKind.OUTCOME_UNKNOWN_ACCEPTED:
            raise OutcomeUnknown(self.venue_id, f"order {cid}: no answer after the venue "
                                 "accepted it (simulated by PaperFaults)")
        return state

    @staticmethod
    def _partial(market: Market, quantity: Decimal, ratio: Decimal) -> Decimal:
        part = floor_to_step(market, quantity * ratio)
        if part <= 0 or to_order_units(market, part) < market.min_quantity:
            return ZERO
        return part

    async def _match_resting(self) -> None:
        """Fill, at their limit and as makers, the resting orders the price has crossed."""
        open_rows = self.store.open_orders()
        if not open_rows:
            return
        markets = await self.view.markets()
        for row in open_rows:
            order, market = row.state, markets.get(row.state.symbol)
            if market is None or row.limit_price is None:
                continue
            try:
                price, _ = await self.view.fill_price(market, order.side)
            except VenueError as err:  # no price now: the order rests on
                logger.info("{}", err)
                continue
            crossed = (price <= row.limit_price if order.side is Side.BUY
                       else price >= row.limit_price)
            if not crossed:
                continue
            remaining = order.quantity - order.filled_quantity
            fee = fee_for(market, order.side, remaining, row.limit_price, await self.fees(),
                          maker=True)
            now = self.clock()
            with self.store.transaction():
                current = self.store.order(order.client_order_id)
                if current is None or current.state.status.is_final:
                    continue
                self.ledger.apply_fill(market, order.side, remaining, row.limit_price, fee,
                                       now)
                self.store.update_order(replace(
                    order, status=OrderStatus.FILLED, filled_quantity=order.quantity,
                    average_price=row.limit_price, fees=(*order.fees, fee), updated_at=now,
                    price_source="limit (maker)"))

    async def fetch_order(self, market: Market, client_order_id: str) -> OrderState | None:
        """The order by client id; None when this account never saw it."""
        if self.faults.query_fails():
            raise OutcomeUnknown(self.venue_id, f"order {client_order_id}: query got no "
                                 "answer (simulated by PaperFaults)")
        await self._catch_up()
        row = self.store.order(client_order_id)
        if row is None or row.state.symbol != market.symbol:
            return None
        return row.state

    async def cancel_order(self, market: Market, client_order_id: str) -> OrderState | None:
        """Cancel an open order; a final one is returned as it is."""
        await self._catch_up()
        with self.store.transaction():
            row = self.store.order(client_order_id)
            if row is None or row.state.symbol != market.symbol:
                return None
            if row.state.status.is_final:
                return row.state
            self.store.update_order(replace(row.state, status=OrderStatus.CANCELED,
                                            updated_at=self.clock()))
        return self.store.order(client_order_id).state

    async def fetch_open_orders(self, market: Market | None = None) -> list[OrderState]:
        await self._catch_up()
        return [r.state for r in self.store.open_orders(market.symbol if market else None)]

    async def fetch_recent_orders(self, market: Market, since: datetime | None = None
                                  ) -> list[OrderState]:
        await self._catch_up()
        return [r.state for r in self.store.orders(market.symbol, since)]

    # -- account --------------------------------------------------------------------------

    async def fetch_balances(self) -> dict[Wallet, dict[str, Balance]]:
        await self._catch_up()
        return self.ledger.balances(await self.view.markets(), await self._marks())

    async def fetch_positions(self) -> list[PerpPosition]:
        """Open positions with mark, unrealised PnL, the pool's margin ratio and each
        position's liquidation price (see :mod:`perpcarry.paper.margin`)."""
        await self._catch_up()
        markets, marks = await self.view.markets(), await self._marks()
        exposures = self.ledger.exposures(marks)
        rate = self.maintenance_margin_rate
        positions = []
        for exposure in exposures:
            settle = markets[exposure.symbol].settle or markets[exposure.symbol].quote
            pool = [e for e in exposures
                    if (markets[e.symbol].settle or markets[e.symbol].quote) == settle]
            cash = self.store.balance(self.model.margin, settle)
            others = [e for e in pool if e.symbol != exposure.symbol]
            positions.append(PerpPosition(
                venue=self.venue_id, symbol=exposure.symbol,
                side=Side.BUY if exposure.quantity > 0 else Side.SELL,
                quantity=abs(exposure.quantity), entry_price=exposure.entry_price,
                mark_price=exposure.mark_price, unrealised_pnl=exposure.unrealised_pnl,
                leverage=exposure.leverage, margin_mode=MarginMode.CROSS,
                maintenance_margin=exposure.maintenance_margin(rate),
                margin_ratio=margin_ratio(pool, cash, rate),
                liquidation_price=liquidation_price(exposure, others, cash, rate)))
        return positions

    async def setup_account(self, market: Market, leverage: Decimal,
                            margin_mode: MarginMode = MarginMode.CROSS) -> None:
        """Set ``market``'s leverage; the paper venue margins every perp cross, one-way."""
        market = await self._market(market)
        if market.kind is not MarketKind.PERP:
            raise InvalidOrder(self.venue_id, f"{market.symbol}: leverage applies to perps")
        if margin_mode is not MarginMode.CROSS:
            raise InvalidOrder(self.venue_id, "the paper venue simulates cross margin only")
        if leverage < 1:
            raise InvalidOrder(self.venue_id, f"{market.symbol}: leverage {leverage} is "
                               "below 1")
        with self.store.transaction():
            self.store.set_leverage(market.symbol, leverage)

    async def transfer(self, currency: str, amount: Decimal, from_wallet: Wallet,
                       to_wallet: Wallet) -> Transfer:
        await self._catch_up()
        markets, marks = await self.view.markets(), await self._marks()
        with self.store.transaction():
            self.ledger.transfer_check(currency, amount, from_wallet, to_wallet, markets, marks)
            self.store.add_balance(from_wallet, currency, -amount)
            self.store.add_balance(to_wallet, currency, amount)
            return self.store.add_transfer(currency, amount, from_wallet, to_wallet,
                                           self.clock())

    async def fetch_funding_payments(self, since: datetime, until: datetime | None = None
                                     ) -> list[FundingPayment]:
        await self._catch_up()
        return [FundingPayment(self.venue_id, p.symbol, p.amount, p.currency, p.time,
                               p.payment_id) for p in self.store.payments(since, until)]

    # -- funding --------------------------------------------------------------------------

    async def _settle_funding(self) -> None:
        """Credit or charge every settlement passed since each position's last one, in
        order, from the funding data; stop at the first whose rate is not known yet."""
        positions = self.store.positions()
        if not positions:
            return
        now = self.clock()
        quotes = (await self.view.funding()).quotes
        markets = await self.view.markets()
        for position in positions:
            quote = quotes.get(position.symbol)
            if quote is None:
                logger.warning("{}: {} has no funding quote; its funding is not settled",
                               self.venue_id, position.symbol)
                continue
            settle = markets[position.symbol].settle or markets[position.symbol].quote
            for moment in settlement_times(quote, position.funding_settled, now):
                settled = await self.view.settlement(quote, moment)
                if settled is None:
                    logger.warning("{}: funding of {} at {:%Y-%m-%d %H:%M} UTC is not in the "
                                   "data yet; settled when it is", self.venue_id,
                                   position.symbol, moment)
                    break
                rate, mark = settled
                with self.store.transaction():
                    current = self.store.position(position.symbol)
                    if current is None or current.funding_settled >= moment:
                        break  # another process settled it
                    # A positive rate: longs pay shorts.
                    amount = -current.quantity * mark * rate
                    self.store.add_payment(PaymentRow(
                        f"{position.symbol}@{to_ms(moment)}", position.symbol, amount, settle,
                        rate, moment))
                    self.store.add_balance(self.model.margin, settle, amount)
                    self.store.put_position(replace(current, funding_settled=moment))

