"""OKX's account and order half (API v5, trading account): where it differs from the ccxt
base.

Swaps trade in contracts: the base converts base units with ``ctVal``. Every order names
its margin mode (``tdMode``: ``cash`` for spot, ``cross``/``isolated`` for swaps); the
trading account is unified, so spot and swaps need no transfer (only to and from the
funding account). Orders are found by ``clOrdId``. Funding payments are account bills of
type 8, whose ``balChg`` is positive when received.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

from perpcarry.ccxt.order_requests import ms_to_datetime
from perpcarry.ccxt.orders import CcxtOrderVenue
from perpcarry.config.settings import VenueConfig
from perpcarry.domain.errors import InvalidResponse
from perpcarry.domain.types import MarketKind
from perpcarry.venues.orders import FundingPayment, MarginMode, OrderRequest, Wallet
from perpcarry.venues.protocol import VenueContext

# GET /api/v5/account/bills-archive (last 3 months): limit at most 100, newest first,
# ``after`` = bills older than that billId; type 8 = funding fee (docs-v5 "Get bills details
# (last 3 months)", read 2026-12).
BILLS_PAGE_LIMIT = 100
FUNDING_FEE_BILL = "8"


def _with_market_order_limits(fetch_markets):
    async def fetch(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        markets = await fetch_markets(*args, **kwargs)
        for market in markets:
            info = market.get("info") or {}
            # maxMktSz is in contracts for swaps (and in USDT for spot, not an order unit).
            if market.get("swap") and info.get("maxMktSz"):
                market["limits"]["market"] = {"min": None, "max": info["maxMktSz"]}
        return markets
    return fetch


class OkxOrders(CcxtOrderVenue):
    """OKX spot + USDT/USDC swaps on the trading account."""

    client_id_param = "clOrdId"
    query_client_id_param = "clOrdId"
    balance_wallets: ClassVar[dict[Wallet, dict[str, Any]]] = {
        Wallet.UNIFIED: {},                       # GET /api/v5/account/balance
        Wallet.FUNDING: {"type": "funding"},      # GET /api/v5/asset/balances
    }
    transfer_accounts: ClassVar[dict[Wallet, str]] = {
        Wallet.UNIFIED: "trading", Wallet.FUNDING: "funding"}
    order_budgets: ClassVar[dict[MarketKind, str]] = {
        MarketKind.SPOT: "account", MarketKind.PERP: "account"}
    open_order_scopes: ClassVar[tuple[dict[str, Any], ...]] = (
        {"instType": "SPOT"}, {"instType": "SWAP", "perp": True})
    position_scopes: ClassVar[tuple[dict[str, Any], ...]] = ({"instType": "SWAP"},)
    # ccxt reads orders-history by one state at a time: filled, then canceled.
    finished_orders_methods = ("fetch_closed_orders", "fetch_canceled_orders")
    derivatives_permission = (
        "the API key may not trade: give it the 'Trade' permission in OKX API management")

    def __init__(self, config: VenueConfig, context: VenueContext) -> None:
        super().__init__(config, context)
        # A swap's market-order maximum (maxMktSz, contracts), which ccxt does not carry,
        # joins ccxt's limits so that sizes are checked before sending.
        self.exchange.fetch_markets = _with_market_order_limits(self.exchange.fetch_markets)

    def _order_params(self, request: OrderRequest) -> dict[str, Any]:
        """Plus the margin mode every OKX order names: cash for spot, cross for swaps
        (perpcarry's default account setup)."""
        params = super()._order_params(request)
        params["tdMode"] = "cross" if request.market.kind is MarketKind.PERP else "cash"
        return params

    def _setup_steps(self, market, leverage: Decimal, margin_mode: MarginMode):
        """Net (one-way) position mode, then leverage per instrument and margin mode: OKX
        sets a swap's margin mode with its leverage (and names it on every order). An
        unchanged setting is answered with code 0."""
        return [
            ("one-way position mode",
             lambda: self.exchange.set_position_mode(False, market.symbol)),
            (f"{margin_mode.value} leverage {leverage}",
             lambda: self.exchange.set_leverage(
                 int(leverage), market.symbol, {"marginMode": margin_mode.value})),
        ]

    async def funding_payment_pages(self, start_ms: int, end_ms: int) -> list[FundingPayment]:
        """Funding-fee bills in [start_ms, end_ms], paged backward by billId."""
        symbols = {m.venue_symbol: m.symbol
                   for m in (await self.markets_by_venue_symbol(MarketKind.PERP)).values()}
        payments: list[FundingPayment] = []
        after = None
        while True:
            params = {"type": FUNDING_FEE_BILL, "begin": str(start_ms), "end": str(end_ms),
                      "limit": str(BILLS_PAGE_LIMIT)}
            if after:
                params["after"] = after
            response = await self._derivatives(
                "funding payments", "account",
                lambda params=params: self.exchange.privateGetAccountBillsArchive(params))
            rows = (response or {}).get("data") or []
            try:
                payments += [FundingPayment(
                    self.venue_id, symbols.get(r["instId"], r["instId"]), Decimal(r["balChg"]),
                    r["ccy"], ms_to_datetime(r["ts"]), r["billId"]) for r in rows]
            except (KeyError, TypeError, ArithmeticError) as err:
                raise InvalidResponse(self.venue_id, f"funding bill unreadable: {err!r}") \
                    from None
            if len(rows) < BILLS_PAGE_LIMIT or rows[-1].get("billId") == after:
                break
            after = rows[-1]["billId"]
        return payments
