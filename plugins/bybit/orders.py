"""Bybit's account and order half (v5, unified trading account): where it differs from the
ccxt base.

The unified account holds spot and perps together, so no transfer is needed between them
(only to and from the funding wallet). ``fetch_order`` on a unified account sees only the
last 500 orders and wants an acknowledgement, so an order is found by ``orderLinkId`` among
the open orders and then the order history. Funding payments come from the execution list
with ``execType=Funding``, where a positive ``execFee`` is paid.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any, ClassVar

from perpcarry.ccxt.order_requests import error_body, ms_to_datetime
from perpcarry.ccxt.orders import CcxtOrderVenue
from perpcarry.config.settings import VenueConfig
from perpcarry.domain.errors import InvalidResponse
from perpcarry.domain.types import Market, MarketKind
from perpcarry.venues.orders import (
    Fee,
    FundingPayment,
    OrderState,
    OrderStatus,
    Side,
    Wallet,
)
from perpcarry.venues.protocol import VenueContext

# /v5/execution/list: startTime..endTime at most 7 days apart, limit at most 100, cursor
# paging (bybit-exchange.github.io/docs/v5/order/execution, read 2026-12).
EXECUTION_WINDOW_MS = int(timedelta(days=7).total_seconds() * 1000)
EXECUTION_PAGE_LIMIT = 100
# 110043 "Set leverage not modified" (v5 error codes, read 2026-12), which ccxt maps to
# BadRequest; 110025 and 110026 (position and margin mode not modified) it maps to NoChange
# and MarginModeAlreadySet, which the base accepts.
ALREADY_SET_CODES = frozenset({110043})


def _with_market_order_limits(fetch_markets):
    async def fetch(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        markets = await fetch_markets(*args, **kwargs)
        for market in markets:
            lot = (market.get("info") or {}).get("lotSizeFilter") or {}
            if market.get("contract") and lot.get("maxMktOrderQty"):
                market["limits"]["market"] = {"min": None,
                                              "max": lot["maxMktOrderQty"]}
        return markets
    return fetch


class BybitOrders(CcxtOrderVenue):
    """Bybit spot + linear perps on a unified trading account."""

    client_id_param = "orderLinkId"
    query_client_id_param = "orderLinkId"
    balance_wallets: ClassVar[dict[Wallet, dict[str, Any]]] = {
        Wallet.UNIFIED: {},                       # GET /v5/account/wallet-balance UNIFIED
        Wallet.FUNDING: {"type": "funding"},      # /v5/asset/transfer/query-account-coins-...
    }
    transfer_accounts: ClassVar[dict[Wallet, str]] = {
        Wallet.UNIFIED: "unified", Wallet.FUNDING: "funding"}
    order_budgets: ClassVar[dict[MarketKind, str]] = {
        MarketKind.SPOT: "default", MarketKind.PERP: "default"}
    # Linear open orders and positions need a settle coin when no symbol is given.
    open_order_scopes: ClassVar[tuple[dict[str, Any], ...]] = (
        {"type": "spot"},
        {"type": "swap", "subType": "linear", "settleCoin": "USDT", "perp": True},
        {"type": "swap", "subType": "linear", "settleCoin": "USDC", "perp": True})
    position_scopes: ClassVar[tuple[dict[str, Any], ...]] = (
        {"subType": "linear", "settleCoin": "USDT"}, {"subType": "linear", "settleCoin": "USDC"})
    finished_orders_methods = ("fetch_canceled_and_closed_orders",)
    derivatives_permission = (
        "the API key may not trade contracts: give it the 'Contracts - Orders / Positions' "
        "permission (unified trading) in Bybit API Management")

    def __init__(self, config: VenueConfig, context: VenueContext) -> None:
        super().__init__(config, context)
        exchange = self.exchange
        if config.sandbox and not context.base_url:
            # ``sandbox = true`` means Bybit demo trading (api-demo.bybit.com): real matching
            # on demo funds, the same keys model as mainnet.
            exchange.set_sandbox_mode(False)
            exchange.enable_demo_trading(True)
        # perpcarry trades a unified trading account; said here, ccxt does not probe it with
        # two keyed requests (/v5/user/query-api, /v5/account/info) before the first order.
        exchange.options["enableUnifiedAccount"] = True
        exchange.options["enableUnifiedMargin"] = False
        # A perp's market-order maximum (lotSizeFilter.maxMktOrderQty, below maxOrderQty),
        # which ccxt does not carry, joins ccxt's limits so that sizes are checked before
        # sending.
        exchange.fetch_markets = _with_market_order_limits(exchange.fetch_markets)
        # ccxt puts its broker id in a Referer header on every POST; perpcarry's orders carry
        # only the caller's orderLinkId.
        sign = exchange.sign

        def sign_without_broker(*args: Any, **kwargs: Any) -> dict[str, Any]:
            signed = sign(*args, **kwargs)
            if signed.get("headers"):
                signed["headers"].pop("Referer", None)
            return signed

        exchange.sign = sign_without_broker

    def _is_already_set(self, exc: Exception) -> bool:
        body = error_body(exc) or {}
        return str(body.get("retCode")) in {str(c) for c in ALREADY_SET_CODES}

    async def fetch_order(self, market: Market, client_order_id: str) -> OrderState | None:
        """The order by ``orderLinkId``: open orders first (GET /v5/order/realtime), then
        the order history (GET /v5/order/history); None when neither has it."""
        params = {"orderLinkId": client_order_id}
        budget = self.order_budgets[market.kind]
        rows = await self._query(
            f"open order {client_order_id}", budget,
            lambda: self.exchange.fetch_open_orders(market.symbol, None, None, params))
        if not rows:
            rows = await self._query(
                f"closed order {client_order_id}", budget,
                lambda: self.exchange.fetch_canceled_and_closed_orders(
                    market.symbol, None, None, params))
        rows = [r for r in rows if r.get("clientOrderId") == client_order_id]
        if not rows:
            return None
        return await self._complete_fees(market, self._order_state(market, rows[0]))

    def _order_state(self, market: Market, order: dict[str, Any]) -> OrderState:
        """Bybit's own status where ccxt's loses it. ccxt reads an order's fee only from
        ``cumFeeDetail`` (orders since 2025); older answers carry ``cumExecFee`` alone,
        charged (v5 "Get Order History", read 2026-12) in the base coin on a spot buy, the
        quote coin on a spot sell and the settle coin on a perp."""
        state = super()._order_state(market, order)
        info = order.get("info") or {}
        if info.get("orderStatus") == "PartiallyFilledCanceled":
            # ccxt calls it closed; Bybit ended it before the full quantity (a spot market
            # order, a canceled partly filled limit).
            state = replace(state, status=OrderStatus.CANCELED)
        fee = info.get("cumExecFee")
        if state.fees or info.get("cumFeeDetail") or fee in (None, "", "0"):
            return state
        if market.kind is MarketKind.SPOT:
            currency = market.base if state.side is Side.BUY else market.quote
        else:
            currency = market.settle
        return replace(state, fees=(Fee(Decimal(fee), currency),))

    async def funding_payment_pages(self, start_ms: int, end_ms: int) -> list[FundingPayment]:
        """Execution-list funding rows in 7-day windows, each cursor-paged; the sign is
        turned so that positive is received."""
        settles = {m["id"]: m.get("settle") for m in self.raw_markets.values()
                   if m.get("linear") and m.get("swap")}
        symbols = {m.venue_symbol: m.symbol
                   for m in (await self.markets_by_venue_symbol(MarketKind.PERP)).values()}
        payments: list[FundingPayment] = []
        window_start = start_ms
        while window_start <= end_ms:
            window_end = min(window_start + EXECUTION_WINDOW_MS - 1, end_ms)
            cursor = None
            while True:
                params = {"category": "linear", "execType": "Funding",
                          "startTime": window_start, "endTime": window_end,
                          "limit": EXECUTION_PAGE_LIMIT}
                if cursor:
                    params["cursor"] = cursor
                response = await self._derivatives(
                    "funding payments", "default",
                    lambda params=params: self.exchange.privateGetV5ExecutionList(params))
                result = (response or {}).get("result") or {}
                rows = result.get("list") or []
                payments += [self._payment(r, symbols, settles) for r in rows]
                cursor = result.get("nextPageCursor")
                if not cursor or len(rows) < EXECUTION_PAGE_LIMIT:
                    break
            window_start = window_end + 1
        return payments

    def _payment(self, row: dict[str, Any], symbols: dict[str, str],
                 settles: dict[str, str | None]) -> FundingPayment:
        try:
            venue_symbol = row["symbol"]
            currency = row.get("feeCurrency") or settles.get(venue_symbol)
            if not currency:
                raise KeyError(f"feeCurrency of {venue_symbol}")
            return FundingPayment(
                self.venue_id, symbols.get(venue_symbol, venue_symbol),
                -Decimal(row["execFee"]), currency, ms_to_datetime(row["execTime"]),
                row["execId"])
        except (KeyError, TypeError, ArithmeticError) as err:
            raise InvalidResponse(self.venue_id, f"funding execution unreadable: {err!r}") \
                from None
