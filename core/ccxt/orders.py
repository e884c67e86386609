"""The account and order half of a ccxt-backed venue (:class:`perpcarry.venues.orders.OrderVenue`),
written once over ccxt's unified methods. A plugin mixes :class:`CcxtOrderVenue` into its
``CcxtVenue`` subclass, sets the class attributes and overrides only where its venue differs
(how an order is found by client id, funding payments, "already set" answers).

Two request paths:

- queries (order state, balances, positions, funding) are idempotent: they go through the
  base's retry helper; a Binance-style "timestamp outside recvWindow" resyncs the clock
  offset and is retried once.
- state-changing calls (place, cancel, transfer, account settings) are sent exactly once by
  :meth:`CcxtOrderVenue._send_once`: a timeout, a 5xx, an unparseable answer or an "unknown
  status" code becomes ``OutcomeUnknown``, never a retry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from loguru import logger

from perpcarry.config.settings import ENV_PREFIX
from perpcarry.domain.errors import (
    AuthenticationError,
    ClockSkew,
    ConfigError,
    InvalidResponse,
    OrderNotFound,
    OutcomeUnknown,
    UsageError,
    VenueError,
)
from perpcarry.domain.types import Market, MarketKind
from perpcarry.venues.orders import (
    Balance,
    Fee,
    FundingPayment,
    MarginMode,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    PerpPosition,
    Side,
    TimeInForce,
    Transfer,
    Wallet,
    to_order_units,
)

# ccxt's "<id> <METHOD> <url> <status> <reason> <body>" of an HTTP error: a 4xx status means
# the venue answered and refused, so the request did not execute.
_HTTP_STATUS = re.compile(r" (\d{3}) ")


def dec(value: Any) -> Decimal | None:
    """A ccxt number (float, str or None) as ``Decimal``; ``repr`` of a float parsed from a
    venue's decimal string gives that string back (up to 15 significant digits)."""
    if value is None or value == "":
        return None
    return Decimal(str(value))


def ms_to_datetime(value: Any) -> datetime | None:
    return None if value in (None, "") else datetime.fromtimestamp(int(value) / 1000, UTC)


def error_body(exc: Exception) -> dict[str, Any] | None:
    """The venue's JSON error body that ccxt puts after the exchange id in its message."""
    text = str(exc)
    start = text.find("{")
    if start < 0:
        return None
    try:
        body = json.loads(text[start:])
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


_STATUS = {"canceled": OrderStatus.CANCELED, "expired": OrderStatus.EXPIRED,
           "rejected": OrderStatus.REJECTED}


class CcxtOrderVenue:
    """The order half over ccxt, mixed into a ``CcxtVenue`` subclass (it uses the base's
    ``exchange``, ``budgets``, ``_translated``, ``_with_retries``, ``market`` and ``config``)."""

    # The venue's own create-order parameter for the client id (ccxt otherwise generates a
    # broker-prefixed one).
    client_id_param: ClassVar[str]
    # The parameter ccxt's fetch_order / cancel_order read the client id from.
    query_client_id_param: ClassVar[str]
    # Wallets and the ccxt fetch_balance params that read each one.
    balance_wallets: ClassVar[dict[Wallet, dict[str, Any]]]
    # Wallets between which ``transfer`` moves funds, as ccxt's account names; empty where
    # the account is unified and nothing needs moving.
    transfer_accounts: ClassVar[dict[Wallet, str]] = {}
    # Request budget of the order and account calls of each market kind.
    order_budgets: ClassVar[dict[MarketKind, str]]
    # ccxt params of one bulk open-orders request per scope (kind of market, settle coin);
    # "perp": True marks a perp scope, "weight" its request weight where not 1.
    open_order_scopes: ClassVar[tuple[dict[str, Any], ...]]
    # ccxt params of one bulk positions request per scope.
    position_scopes: ClassVar[tuple[dict[str, Any], ...]] = ({},)
    # ccxt's method for the venue's finished orders where it has no fetch_orders.
    closed_orders_method: ClassVar[str] = "fetch_closed_orders"
    # One sentence naming what to enable when a key lacks derivatives permission.
    derivatives_permission: ClassVar[str]

    exchange: Any
    budgets: Any
    config: Any
    venue_id: str
    request_count: int
    _translated: Any
    _with_retries: Any
    market: Any
    markets_by_venue_symbol: Any

    # -- requests -----------------------------------------------------------------------

    def _require_credentials(self) -> None:
        if not self.config.has_credentials:
            names = " and ".join(
                f"{ENV_PREFIX}VENUES__{self.venue_id.upper()}__{n.upper()}"
                for n in self.config.required_credentials)
            raise ConfigError(f"{self.venue_id}: account and order calls need API "
                              f"credentials: set {names} (or the keys in [venues."
                              f"{self.venue_id}])")

    async def _send_once(self, what: str, budget: str, call: Callable[[], Awaitable[Any]],
                         weight: int = 1) -> Any:
        """A state-changing request, sent exactly once: budget acquired, errors translated,
        no retry. A timeout, a network failure or 5xx after sending, an unparseable answer or
        the venue's own "status unknown" code (mapped by ccxt to RequestTimeout) raise
        ``OutcomeUnknown``: the caller queries by client id, it never re-sends."""
        import ccxt

        self._require_credentials()
        await self.budgets[budget].acquire(weight)
        self.request_count += 1
        async with self._translated(what):
            try:
                return await call()
            except (ccxt.DDoSProtection, ccxt.InvalidNonce):
                # Rate limited or timestamp refused (both ccxt NetworkErrors): refused before
                # execution, translated as such.
                raise
            except (ccxt.NetworkError, ccxt.BadResponse, ccxt.NullResponse) as exc:
                status = _HTTP_STATUS.search(str(exc).splitlines()[0] if str(exc) else "")
                if status and 400 <= int(status.group(1)) < 500 \
                        and not isinstance(exc, ccxt.RequestTimeout):
                    raise
                # The message names the kind of failure only: ccxt's text carries the signed
                # URL of the request.
                raise OutcomeUnknown(
                    self.venue_id, f"{what}: no clear answer ({type(exc).__name__}); it may "
                    "have executed: query it, do not re-send") from None

    async def _query(self, what: str, budget: str, call: Callable[[], Awaitable[Any]],
                     weight: int = 1) -> Any:
        """An idempotent query with the base's retries; a rejected timestamp resyncs ccxt's
        clock offset and is retried once."""
        self._require_credentials()
        try:
            return await self._with_retries(what, weight, budget, call)
        except ClockSkew:
            await self._resync_clock()
            return await self._with_retries(what, weight, budget, call)

    async def _resync_clock(self) -> None:
        """ccxt's offset to the venue's clock, read from the venue's time endpoint."""
        async with self._translated("load_time_difference"):
            offset = await self.exchange.load_time_difference()
        logger.warning("{}: request timestamp rejected; clock offset resynced to {} ms",
                       self.venue_id, offset)

    async def _derivatives(self, what: str, budget: str, call: Callable[[], Awaitable[Any]],
                           *, send_once: bool = False) -> Any:
        """A derivatives-account call; a key without that permission is one sentence saying
        what to enable."""
        send = self._send_once if send_once else self._query
        try:
            return await send(what, budget, call)
        except AuthenticationError as err:
            raise AuthenticationError(
                self.venue_id, f"{what} refused: {self.derivatives_permission}") from err

    # -- orders -------------------------------------------------------------------------

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
        units = to_order_units(market, request.quantity)
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
        return await self._complete_fees(market, self._order_state(market, placed))

    async def fetch_order(self, market: Market, client_order_id: str) -> OrderState | None:
        """The order by client id, None when the venue does not know it."""
        try:
            order = await self._query(
                f"fetch order {client_order_id}", self.order_budgets[market.kind],
                lambda: self.exchange.fetch_order(
                    "", market.symbol, {self.query_client_id_param: client_order_id}))
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
                    "", market.symbol, {self.query_client_id_param: client_order_id}))
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
            rows += await self._query(
                f"closed orders {market.symbol}", budget,
                lambda: getattr(self.exchange, self.closed_orders_method)(market.symbol,
                                                                          since_ms))
        rows.sort(key=lambda o: o.get("timestamp") or 0)
        return [self._order_state(market, o) for o in rows]

    def _order_state(self, market: Market, order: dict[str, Any]) -> OrderState:
        """ccxt's order structure as an ``OrderState`` in base units."""
        try:
            size = market.contract_size
            amount = dec(order.get("amount"))
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
                status=status, quantity=(amount or Decimal(0)) * size,
                filled_quantity=filled * size, average_price=dec(order.get("average")),
                fees=fees, reduce_only=bool(order.get("reduceOnly")),
                created_at=ms_to_datetime(order.get("timestamp")),
                updated_at=ms_to_datetime(order.get("lastUpdateTimestamp")))
        except (KeyError, ValueError, TypeError, ArithmeticError) as err:
            raise InvalidResponse(self.venue_id, f"order of {market.symbol} unreadable: "
                                  f"{type(err).__name__} {err}") from None

    @staticmethod
    def _status(status: str | None, filled: Decimal, amount: Decimal | None) -> OrderStatus:
        if status == "open":
            return OrderStatus.PARTIALLY_FILLED if filled else OrderStatus.NEW
        if status == "closed":
            # ccxt calls a partly filled order that the venue ended (Bybit
            # PartiallyFilledCanceled) closed: it is canceled with a partial fill.
            if amount is not None and filled < amount:
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
        trades = await self._query(
            f"fills of order {state.client_order_id}", self.order_budgets[market.kind],
            lambda: self._fills(market, state.venue_order_id))
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

    # -- account ------------------------------------------------------------------------

    async def fetch_balances(self) -> dict[Wallet, dict[str, Balance]]:
        """Free, used and total of every currency held, per wallet the venue has."""
        balances: dict[Wallet, dict[str, Balance]] = {}
        for wallet, params in self.balance_wallets.items():
            budget = self.order_budgets[MarketKind.PERP if wallet is Wallet.FUTURES
                                        else MarketKind.SPOT]
            call = lambda params=params: self.exchange.fetch_balance(params)  # noqa: E731
            if wallet is Wallet.FUTURES:
                raw = await self._derivatives(f"{wallet.value} balance", budget, call)
            else:
                raw = await self._query(f"{wallet.value} balance", budget, call)
            balances[wallet] = self._balances(raw)
        return balances

    def _balances(self, raw: dict[str, Any]) -> dict[str, Balance]:
        found = {}
        for currency, entry in raw.items():
            if currency in {"info", "free", "used", "total", "timestamp", "datetime", "debt"} \
                    or not isinstance(entry, dict):
                continue
            free, used, total = (dec(entry.get(k)) for k in ("free", "used", "total"))
            if total is None and free is not None and used is not None:
                total = free + used
            if total is None or free is None:
                raise InvalidResponse(self.venue_id, f"balance of {currency} lacks "
                                      "free or total")
            if used is None:
                used = total - free
            if total or free or used:
                found[currency] = Balance(currency, free, used, total)
        return found

    async def fetch_positions(self) -> list[PerpPosition]:
        """Every open position of the perps perpcarry trades (one request per scope)."""
        perps = await self.markets_by_venue_symbol(MarketKind.PERP)
        by_symbol = {m.symbol: m for m in perps.values()}
        positions = []
        for params in self.position_scopes:
            rows = await self._derivatives(
                "positions", self.order_budgets[MarketKind.PERP],
                lambda params=params: self.exchange.fetch_positions(None, params))
            for row in rows:
                market = by_symbol.get(row.get("symbol"))
                contracts = dec(row.get("contracts"))
                if market is None or not contracts:
                    continue
                positions.append(self._position(market, row, contracts))
        return positions

    def _position(self, market: Market, row: dict[str, Any], contracts: Decimal
                  ) -> PerpPosition:
        side = row.get("side")
        if side not in ("long", "short"):
            raise InvalidResponse(self.venue_id, f"position of {market.symbol}: side {side!r}")
        mode = row.get("marginMode")
        return PerpPosition(
            venue=self.venue_id, symbol=market.symbol,
            side=Side.BUY if side == "long" else Side.SELL,
            quantity=abs(contracts) * market.contract_size,
            entry_price=dec(row.get("entryPrice")), mark_price=dec(row.get("markPrice")),
            unrealised_pnl=dec(row.get("unrealizedPnl")), leverage=dec(row.get("leverage")),
            margin_mode=MarginMode(mode) if mode in ("cross", "isolated") else None,
            maintenance_margin=dec(row.get("maintenanceMargin")),
            margin_ratio=dec(row.get("marginRatio")),
            liquidation_price=dec(row.get("liquidationPrice")) or None)

    async def setup_account(self, market: Market, leverage: Decimal,
                            margin_mode: MarginMode = MarginMode.CROSS) -> None:
        """One-way mode, ``margin_mode`` and ``leverage`` on ``market``; each setting sent
        once, a setting already in place is not an error."""
        if market.kind is not MarketKind.PERP:
            raise UsageError(f"{self.venue_id}: account setup applies to perps, not "
                             f"{market.symbol}")
        if leverage != int(leverage) or leverage < 1:
            raise UsageError(f"{self.venue_id}: leverage {leverage} is not a whole number "
                             "of at least 1")
        budget = self.order_budgets[MarketKind.PERP]
        # Some of ccxt's setters look the market up without loading markets first.
        await self.exchange.load_markets()
        for what, call in self._setup_steps(market, leverage, margin_mode):
            await self._derivatives(f"{market.symbol} {what}", budget,
                                    self._already_set_ok(call), send_once=True)

    def _setup_steps(self, market: Market, leverage: Decimal, margin_mode: MarginMode
                     ) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
        """The account-setting calls of :meth:`setup_account`, in order."""
        return [
            ("one-way position mode",
             lambda: self.exchange.set_position_mode(False, market.symbol)),
            (f"{margin_mode.value} margin",
             lambda: self.exchange.set_margin_mode(margin_mode.value, market.symbol)),
            (f"leverage {leverage}",
             lambda: self.exchange.set_leverage(int(leverage), market.symbol)),
        ]

    def _already_set_ok(self, call: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        async def tolerant() -> Any:
            import ccxt

            try:
                return await call()
            except ccxt.MarginModeAlreadySet:
                return None
            except ccxt.ExchangeError as exc:
                if self._is_already_set(exc):
                    return None
                raise
        return tolerant

    def _is_already_set(self, exc: Exception) -> bool:
        """The venue's answer that a setting is already in place (venue codes)."""
        return False

    async def transfer(self, currency: str, amount: Decimal, from_wallet: Wallet,
                       to_wallet: Wallet) -> Transfer:
        """Move ``amount`` of ``currency`` between two wallets, sent once."""
        accounts = self.transfer_accounts
        if from_wallet not in accounts or to_wallet not in accounts or from_wallet == to_wallet:
            have = ", ".join(w.value for w in accounts) or "none: spot and perps share one "\
                "unified account, no transfer is needed"
            raise UsageError(f"{self.venue_id}: no transfer from {from_wallet.value} to "
                             f"{to_wallet.value} (wallets that transfer: {have})")
        if amount <= 0:
            raise UsageError(f"{self.venue_id}: transfer amount {amount} is not positive")
        result = await self._send_once(
            f"transfer {amount} {currency} {from_wallet.value}->{to_wallet.value}",
            self.order_budgets[MarketKind.SPOT],
            lambda: self.exchange.transfer(currency, float(amount), accounts[from_wallet],
                                           accounts[to_wallet]))
        return Transfer(self.venue_id, result.get("id"), currency, amount, from_wallet,
                        to_wallet, ms_to_datetime(result.get("timestamp")))

    async def fetch_funding_payments(self, since: datetime, until: datetime | None = None
                                     ) -> list[FundingPayment]:
        """Funding settled on the account in [since, until], every page, oldest first,
        positive = received; payments of markets perpcarry does not trade included."""
        start = int(since.timestamp() * 1000)
        end = int((until or datetime.now(UTC)).timestamp() * 1000)
        payments = await self.funding_payment_pages(start, end)
        unique = {p.payment_id: p for p in payments if start <= p.time.timestamp() * 1000 <= end}
        return sorted(unique.values(), key=lambda p: (p.time, p.payment_id))

    async def funding_payment_pages(self, start_ms: int, end_ms: int) -> list[FundingPayment]:
        """Every funding payment in [start_ms, end_ms] from the venue's ledger endpoint."""
        raise NotImplementedError
