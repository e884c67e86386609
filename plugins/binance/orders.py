"""Binance's account and order half: where it differs from the ccxt base.

Spot (api.binance.com) and USDⓈ-M (fapi.binance.com) are separate wallets, so margin for a
short is transferred first (``MAIN_UMFUTURE``). Orders are found by ``origClientOrderId``;
Binance refuses a duplicate client id only while the first order is open, which is why an id
is never reused. Funding payments come from ``/fapi/v1/income`` (``FUNDING_FEE``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

from perpcarry.ccxt.order_requests import error_body, ms_to_datetime
from perpcarry.ccxt.orders import CcxtOrderVenue
from perpcarry.config.settings import VenueConfig
from perpcarry.domain.errors import InvalidResponse
from perpcarry.domain.types import Market, MarketKind
from perpcarry.venues.orders import FundingPayment, Wallet
from perpcarry.venues.protocol import VenueContext

# /fapi/v1/income: weight 30, at most 1000 records per page, oldest first from startTime
# (developers.binance.com, USDⓈ-M "Get Income History", read 2026-12).
INCOME_WEIGHT = 30
INCOME_PAGE_LIMIT = 1000
# Answers that a setting is already in place: -4059 "No need to change position side.",
# -4046 "No need to change margin type." (ccxt raises MarginModeAlreadySet for the latter
# only when it reads the message).
ALREADY_SET_CODES = frozenset({-4059, -4046})


class BinanceOrders(CcxtOrderVenue):
    """Binance spot + USDⓈ-M orders and account."""

    client_id_param = "newClientOrderId"
    query_client_id_param = "origClientOrderId"
    # Request weights (developers.binance.com, read 2026-12): GET /api/v3/account 20,
    # GET /fapi/v3/account 5, POST /sapi/v1/asset/get-funding-asset 1 (UID limit),
    # GET /fapi/v3/positionRisk 5.
    balance_wallets: ClassVar[dict[Wallet, dict[str, Any]]] = {
        Wallet.SPOT: {"type": "spot", "weight": 20},
        Wallet.FUTURES: {"type": "swap", "weight": 5},
        Wallet.FUNDING: {"type": "funding"},
    }
    position_scopes: ClassVar[tuple[dict[str, Any], ...]] = ({"weight": 5},)
    # POST /sapi/v1/asset/transfer, type e.g. MAIN_UMFUTURE.
    transfer_accounts: ClassVar[dict[Wallet, str]] = {
        Wallet.SPOT: "spot", Wallet.FUTURES: "linear", Wallet.FUNDING: "funding"}
    order_budgets: ClassVar[dict[MarketKind, str]] = {
        MarketKind.SPOT: "spot", MarketKind.PERP: "fapi"}
    # Without a symbol, GET /api/v3/openOrders weighs 80 and /fapi/v1/openOrders 40
    # (developers.binance.com, read 2026-12).
    open_order_scopes: ClassVar[tuple[dict[str, Any], ...]] = (
        {"type": "spot", "weight": 80}, {"type": "swap", "perp": True, "weight": 40})
    derivatives_permission = (
        "the API key may not trade USDⓈ-M futures (Binance -2015): tick 'Enable Futures' for "
        "the key in Binance API Management, and add this machine's IP if the key is "
        "IP-restricted")

    def __init__(self, config: VenueConfig, context: VenueContext) -> None:
        import ccxt

        super().__init__(config, context)
        exchange = self.exchange
        if config.sandbox and not (config.base_url or context.base_url):
            # ``sandbox = true`` means Binance demo trading (demo-api / demo-fapi.binance.com,
            # real order matching on demo funds); the spot testnet ccxt calls sandbox has no
            # USDⓈ-M futures.
            exchange.set_sandbox_mode(False)
            exchange.enable_demo_trading(True)
        linear = exchange.exceptions["linear"]["exact"]
        # -4116 DUPLICATED_CLIENT_ORDER_ID (futures) and spot's -2010 "Duplicate order sent."
        linear["-4116"] = ccxt.DuplicateOrderId
        exchange.exceptions["broad"]["Duplicate order sent"] = ccxt.DuplicateOrderId
        # -1111 precision over the maximum, -1013 a filter failure (LOT_SIZE, NOTIONAL):
        # the order's terms, not a malformed request.
        exchange.exceptions["exact"]["-1111"] = ccxt.InvalidOrder
        exchange.exceptions["exact"]["-1013"] = ccxt.InvalidOrder
        # Position maintenance margin is in /fapi/v3/positionRisk itself; without this ccxt
        # would first load every symbol's leverage brackets (another keyed request).
        exchange.options["leverageBrackets"] = {}
        # Open orders of every symbol are asked for knowingly (weights above).
        exchange.options["fetchOpenOrders"]["warnWithoutSymbol"] = False

    async def _fills(self, market: Market, venue_order_id: str) -> list[dict[str, Any]]:
        """GET /api/v3/myTrades or /fapi/v1/userTrades by orderId (ccxt's
        fetch_order_trades covers spot only)."""
        return await self.exchange.fetch_my_trades(market.symbol, None, None,
                                                   {"orderId": venue_order_id})

    def _is_already_set(self, exc: Exception) -> bool:
        body = error_body(exc) or {}
        return body.get("code") in ALREADY_SET_CODES

    async def funding_payment_pages(self, start_ms: int, end_ms: int) -> list[FundingPayment]:
        """``/fapi/v1/income`` FUNDING_FEE pages, forward from ``start_ms``; ``income`` is
        already positive when received."""
        payments: list[FundingPayment] = []
        cursor = start_ms
        perps = await self.markets_by_venue_symbol(MarketKind.PERP)
        while cursor <= end_ms:
            params = {"incomeType": "FUNDING_FEE", "startTime": cursor, "endTime": end_ms,
                      "limit": INCOME_PAGE_LIMIT}
            rows = await self._derivatives(
                "funding payments", "fapi",
                lambda params=params: self.exchange.fapiPrivateGetIncome(params), INCOME_WEIGHT)
            try:
                page = [FundingPayment(
                    self.venue_id,
                    perps[r["symbol"]].symbol if r["symbol"] in perps else r["symbol"],
                    Decimal(r["income"]), r["asset"], ms_to_datetime(r["time"]),
                    str(r["tranId"])) for r in rows]
            except (KeyError, TypeError, ArithmeticError) as err:
                raise InvalidResponse(self.venue_id, f"income record unreadable: {err!r}") \
                    from None
            payments += page
            if len(rows) < INCOME_PAGE_LIMIT:
                break
            # Many symbols settle at the same millisecond and a page may end inside one: the
            # next page starts at that millisecond again (records are unique by tranId).
            last = max(int(r["time"]) for r in rows)
            if last <= cursor:
                # A full page at one millisecond: more may share it, and time paging
                # cannot reach them. Said, never left as a silent gap.
                raise InvalidResponse(self.venue_id, f"{INCOME_PAGE_LIMIT} or more funding "
                                      f"records at {ms_to_datetime(cursor)}: cannot page "
                                      "past them")
            cursor = last
        return payments
