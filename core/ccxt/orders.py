"""The account and order half of a ccxt-backed venue (:class:`perpcarry.venues.orders.OrderVenue`),
written once over ccxt's unified methods. A plugin mixes :class:`CcxtOrderVenue` into its
``CcxtVenue`` subclass, sets the class attributes and overrides only where its venue differs
(how an order is found by client id, funding payments, "already set" answers). The request
layer is :mod:`perpcarry.ccxt.order_requests`, the account half :mod:`perpcarry.ccxt.account`.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from loguru import logger

from perpcarry.ccxt.account import CcxtAccount
from perpcarry.ccxt.order_requests import dec, ms_to_datetime
from perpcarry.domain.errors import (
    ClockSkew,
    InvalidResponse,
    NetworkError,
    OrderNotFound,
    OutcomeUnknown,
    VenueError,
)
from perpcarry.domain.types import Market, MarketKind
from perpcarry.venues.orders import (
    Fee,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    check_order_size,
)

_STATUS = {"canceled": OrderStatus.CANCELED, "expired": OrderStatus.EXPIRED,
           "rejected": OrderStatus.REJECTED}


class CcxtOrderVenue(CcxtAccount):
    """The order half over ccxt, mixed into a ``CcxtVenue`` subclass (it also uses the base's
    ``market``)."""

    # The venue's own create-order parameter for the client id (ccxt otherwise generates a
    # broker-prefixed one).
    client_id_param: ClassVar[str]
    # The parameter ccxt's fetch_order / cancel_order read the client id from.
    query_client_id_param: ClassVar[str]
    # ccxt params of one bulk open-orders request per scope (kind of market, settle coin);
    # "perp": True marks a perp scope, "weight" its request weight where not 1.
    open_order_scopes: ClassVar[tuple[dict[str, Any], ...]]
    # ccxt's methods for the venue's finished orders where it has no fetch_orders.
    finished_orders_methods: ClassVar[tuple[str, ...]] = ("fetch_closed_orders",)

    market: Any

    def _order_params(self, request: OrderRequest) -> dict[str, Any]:
        """ccxt params of ``request``: always our client id, never one of ccxt's."""
        params: dict[str, Any] = {self.client_id_param: request.client_order_id}
        if request.time_in_force is TimeInForce.IOC:
            params["timeInForce"] = "IOC"
        elif request.time_in_force is TimeInForce.POST_ONLY:
            params["postOnly"] = True
        if request.reduce_only:
            params["reduceOnly"] = True
        return params

    async def place_order(self, request: OrderRequest) -> OrderState:
        """Send ``request`` once (see :meth:`_send_once`); the order's state as the venue
        answers it, completed by a query where the venue's answer is only an acknowledgement."""
        market = request.market
        # Every published size rule before sending: a refusal here never reaches the venue.
        # The notional rule only where the order has a price and may open a position: venues
        # exempt reduce-only orders from it, so that a small remainder can be closed.
        reference = None if request.reduce_only else request.price
        units = check_order_size(market, request.quantity, reference, request.type)
        price = None if request.price is None else float(request.price)
        what = f"place order {request.client_order_id}"
        try:
            placed = await self._send_once(
                what, self.order_budgets[market.kind],
                lambda: self.exchange.create_order(
                    market.symbol, request.type.value, request.side.value, float(units), price,
                    self._order_params(request)))
        except ClockSkew:
            # Refused before execution; resync so that the caller may resend the same id.
            await self._resync_clock()
            raise
        if placed.get("status") is None or placed.get("amount") is None:
            # An acknowledgement (OKX, Bybit): the order exists; its state is a query away.
            try:
                state = await self.fetch_order(market, request.client_order_id)
            except VenueError as err:
                raise OutcomeUnknown(self.venue_id, f"{what}: accepted as "
                                     f"{placed.get('id')} but its state could not be read "
                                     f"({type(err).__name__}): query it") from None
            if state is None:
                raise OutcomeUnknown(self.venue_id, f"{what}: accepted as {placed.get('id')} "
                                     "but not found yet: query it")
            return state
        state = self._order_state(market, placed)
        if market.kind is MarketKind.PERP and not state.fees and state.filled_quantity:
            # A linear perp's fee is never in base, so the fill is exact without it; reading
            # it now would hold the second leg back a round trip (the naked window). The
            # caller reads it later with fetch_order.
            return replace(state, fees_pending=True)
        return await self._complete_fees(market, state)

    async def fetch_order(self, market: Market, client_order_id: str) -> OrderState | None:
        """The order by client id, None when the venue does not know it."""
        try:
            order = await self._query(
                f"fetch order {client_order_id}", self.order_budgets[market.kind],
                lambda: self.exchange.fetch_order(
                    None, market.symbol, {self.query_client_id_param: client_order_id}))
        except OrderNotFound:
            return None
        return await self._complete_fees(market, self._order_state(market, order))

    async def cancel_order(self, market: Market, client_order_id: str) -> OrderState | None:
        """Cancel by client id, sent once; the state afterwards (read back, since an order can
        fill before the cancel lands); None when the venue does not know the order."""
        # Unknown, or already final (Binance -2011 answers both): the query tells which.
        with suppress(OrderNotFound):
            await self._send_once(
                f"cancel order {client_order_id}", self.order_budgets[market.kind],
                lambda: self.exchange.cancel_order(
                    None, market.symbol, {self.query_client_id_param: client_order_id}))
        return await self.fetch_order(market, client_order_id)

    async def fetch_open_orders(self, market: Market | None = None) -> list[OrderState]:
        """Open orders of ``market``, or of every market (one request per scope)."""
        if market is not None:
            rows = await self._query(
                f"open orders {market.symbol}", self.order_budgets[market.kind],
                lambda: self.exchange.fetch_open_orders(market.symbol))
            return [self._order_state(market, o) for o in rows]
        states: list[OrderState] = []
        for scope in self.open_order_scopes:
            kind = MarketKind.PERP if scope.get("perp") else MarketKind.SPOT
            params = {k: v for k, v in scope.items() if k not in ("perp", "weight")}
            rows = await self._query(
                f"open orders {params}", self.order_budgets[kind],
                lambda params=params: self.exchange.fetch_open_orders(None, None, None, params),
                scope.get("weight", 1))
            states += await self._known_market_orders(rows)
        return states

    async def _known_market_orders(self, rows: list[dict[str, Any]]) -> list[OrderState]:
        states = []
        for row in rows:
            try:
                market = await self.market(row["symbol"])
            except VenueError:
                logger.warning("{}: open order {} on {}, a market perpcarry does not trade",
                               self.venue_id, row.get("clientOrderId"), row.get("symbol"))
                continue
            states.append(self._order_state(market, row))
        return states

    async def fetch_recent_orders(self, market: Market, since: datetime | None = None
                                  ) -> list[OrderState]:
        """Open and closed orders of ``market`` since ``since``, oldest first."""
        since_ms = None if since is None else int(since.timestamp() * 1000)
        budget = self.order_budgets[market.kind]
        if self.exchange.has.get("fetchOrders") is True:
            rows = await self._query(f"orders {market.symbol}", budget,
                                     lambda: self.exchange.fetch_orders(market.symbol, since_ms))
        else:
            rows = await self._query(
                f"open orders {market.symbol}", budget,
                lambda: self.exchange.fetch_open_orders(market.symbol, since_ms))
            for method in self.finished_orders_methods:
                rows += await self._query(
                    f"finished orders {market.symbol}", budget,
                    lambda method=method: getattr(self.exchange, method)(market.symbol,
                                                                         since_ms))
        rows.sort(key=lambda o: o.get("timestamp") or 0)
        return [self._order_state(market, o) for o in rows]

    def _order_state(self, market: Market, order: dict[str, Any]) -> OrderState:
        """ccxt's order structure as an ``OrderState`` in base units."""
        try:
            size = market.contract_size
            amount = dec(order.get("amount"))
            if amount is None:
                raise ValueError("no order quantity")
            filled = dec(order.get("filled")) or Decimal(0)
            status = self._status(order.get("status"), filled, amount)
            fees = tuple(Fee(dec(f["cost"]), f["currency"])
                         for f in order.get("fees") or ([order["fee"]] if order.get("fee")
                                                        else [])
                         if f and f.get("cost") is not None and f.get("currency"))
            return OrderState(
                venue=self.venue_id, symbol=market.symbol, base=market.base,
                client_order_id=order["clientOrderId"], venue_order_id=order.get("id"),
                side=Side(order["side"]),
                type=OrderType.MARKET if order.get("type") == "market" else OrderType.LIMIT,
                status=status, quantity=amount * size,
                filled_quantity=filled * size, average_price=dec(order.get("average")),
                fees=fees, reduce_only=bool(order.get("reduceOnly")),
                created_at=ms_to_datetime(order.get("timestamp")),
                updated_at=ms_to_datetime(order.get("lastUpdateTimestamp")))
        except (KeyError, ValueError, TypeError, ArithmeticError) as err:
            raise InvalidResponse(self.venue_id, f"order of {market.symbol} unreadable: "
                                  f"{type(err).__name__} {err}") from None

    @staticmethod
    def _status(status: str | None, filled: Decimal, amount: Decimal) -> OrderStatus:
        if status == "open":
            return OrderStatus.PARTIALLY_FILLED if filled else OrderStatus.NEW
        if status == "closed":
            # Closed with less than the quantity filled: the venue ended it early, so it is
            # canceled with a partial fill.
            if filled < amount:
                return OrderStatus.CANCELED
            return OrderStatus.FILLED
        if status in _STATUS:
            return _STATUS[status]
        raise ValueError(f"order status {status!r}")

    async def _complete_fees(self, market: Market, state: OrderState) -> OrderState:
        """The order's fees from its fills where the order itself does not report them
        (Binance order queries): the delivered quantity depends on a fee taken in base."""
        if state.fees or not state.filled_quantity or state.venue_order_id is None:
            return state
        async def listed_fills() -> list[dict[str, Any]]:
            trades = await self._fills(market, state.venue_order_id)
            if not trades:
                # The venue's trade list lags its order state: transient, so retried (and
                # kept unknown by resolve_outcome), never reported as fee-free.
                raise NetworkError(self.venue_id, f"order {state.client_order_id} filled "
                                   f"{state.filled_quantity} but its fills are not listed "
                                   "yet: fee unknown")
            return trades

        trades = await self._query(f"fills of order {state.client_order_id}",
                                   self.order_budgets[market.kind], listed_fills)
        totals: dict[str, Decimal] = {}
        for trade in trades:
            for fee in trade.get("fees") or ([trade["fee"]] if trade.get("fee") else []):
                if fee and fee.get("cost") is not None and fee.get("currency"):
                    totals[fee["currency"]] = totals.get(fee["currency"], Decimal(0)) \
                        + dec(fee["cost"])
        return replace(state, fees=tuple(Fee(v, k) for k, v in totals.items()))

    async def _fills(self, market: Market, venue_order_id: str) -> list[dict[str, Any]]:
        """ccxt's trades of one order."""
        return await self.exchange.fetch_order_trades(venue_order_id, market.symbol)
