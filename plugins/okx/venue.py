"""OKX (API v5) market data over ccxt: spot and USDT/USDC-margined swaps.

OKX swaps trade in contracts: ``ctVal`` (base currency per contract) becomes
``Market.contract_size`` and ``lotSz``/``minSz`` stay in contracts (ccxt does this).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar, Literal

from ccxt.base.precise import Precise
from loguru import logger

from perpcarry.ccxt.venue import CcxtVenue
from perpcarry.config.settings import VenueConfig
from perpcarry.domain.errors import VenueError
from perpcarry.domain.types import (
    BookSnapshot,
    FundingRecord,
    FundingSnapshot,
    Market,
    MarketKind,
    SkipLog,
)
from perpcarry.venues.protocol import VenueContext

from .orders import OkxOrders
from .parsing import (
    parse_funding_history,
    parse_funding_rates,
    parse_mark_prices,
    parse_tickers,
    response_rows,
)

INST_TYPE = {MarketKind.SPOT: "SPOT", MarketKind.PERP: "SWAP"}


class OkxVenue(OkxOrders, CcxtVenue):
    """OKX spot + linear swaps. Every public endpoint used here answers all instruments of
    a type in one request, so a full funding snapshot is one request and books one per kind."""

    venue_id = "okx"
    ccxt_id = "okx"
    # ccxt okx.fetch_markets reads options.fetchMarkets.types; each type is one
    # GET /api/v5/public/instruments?instType=... request. 'swap' includes inverse swaps,
    # which perpcarry.ccxt.markets.market_from_ccxt drops.
    market_types = ("spot", "swap")
    # Nothing else to switch off: okx.fetch_currencies returns {} without keys and
    # adjustForTimeDifference (a /public/time call) is off by default; with keys the
    # currency call is disabled on the instance in __init__.
    ccxt_options: ClassVar[dict[str, Any]] = {"adjustForTimeDifference": False}
    # OKX v5 REST limits are per endpoint, "N requests per 2 seconds" (docs-v5 "Rate
    # limits" and each endpoint's "Rate Limit" line, okx.com/docs-v5/en, read 2026-11),
    # expressed here as requests per minute (weight 1 = one request):
    #   public/instruments          20 req / 2 s per IP            -> 600 / min
    #   public/funding-rate         10 req / 2 s per IP+instId     -> 300 / min
    #   public/funding-rate-history 10 req / 2 s per IP+instId     -> 300 / min
    #   public/mark-price           10 req / 2 s per IP            -> 300 / min
    #   market/tickers              20 req / 2 s per IP            -> 600 / min
    #   account/trade-fee            5 req / 2 s per user          -> 150 / min
    weight_budgets: ClassVar[dict[str, int]] = {
        "instruments": 600, "funding": 300, "history": 300, "marks": 300, "tickers": 600,
        "account": 150,
    }
    # instruments?instType=SPOT and ?instType=SWAP: two requests.
    market_requests: ClassVar[dict[str, tuple[int, str]]] = {
        "/api/v5/public/instruments": (1, "instruments")}
    # funding-rate-history "limit: maximum 400, default 400" (docs-v5, Get funding rate
    # history, read 2026-11; the okxr R client defaults to 400 too). ccxt still pages by
    # 100 and by fixed 8h steps, which is why the raw endpoint is used.
    history_page_limit = 400
    # Newest first; `after` = records older than ts, `before` = newer than ts (exclusive).
    history_paging: ClassVar[Literal["forward", "backward"]] = "backward"
    credential_keys: ClassVar[dict[str, str]] = {
        "api_key": "apiKey", "secret": "secret", "passphrase": "password"}
    # GET /api/v5/account/trade-fee, instType SPOT and SWAP: one request each.
    fee_requests = ((1, "account"), (1, "account"))
    fee_endpoints = "/api/v5/account/trade-fee"

    def __init__(self, config: VenueConfig, context: VenueContext) -> None:

        super().__init__(config, context)
        # With keys ccxt would add GET /api/v5/asset/currencies (private) to every market
        # load; markets do not need it.
        self.exchange.has = {**self.exchange.has, "fetchCurrencies": False}

    async def fetch_funding_snapshot(self) -> FundingSnapshot:
        """Current-period funding of every linear swap: one GET /public/funding-rate?instId=ANY.

        Offline (a replayed snapshot, which holds no books) also one GET
        /public/mark-price?instType=SWAP: ``plan`` sizes a position on the spot ask, else the
        perp's mark, and the funding-rate answer carries no price. Online the spot books
        give the price, so a warm scan stays at one request per data kind."""
        response = await self.request("publicGetPublicFundingRate", {"instId": "ANY"},
                                      budget="funding")
        marks = await self._mark_prices() if self.context.offline else {}
        perps = await self.markets_by_venue_symbol(MarketKind.PERP)
        # Swaps ccxt knows that perpcarry does not trade (inverse, pre-open): not skips.
        ignored = {m["id"] for m in self.raw_markets.values() if m["id"] not in perps}
        skips = SkipLog(self.venue_id)
        with self.parsing("funding-rate response"):
            rows = response_rows(self.venue_id, response, "public/funding-rate")
            quotes = parse_funding_rates(self.venue_id, rows, perps, ignored, skips, marks)
        return FundingSnapshot(self.venue_id, quotes, tuple(skips.entries))

    async def _mark_prices(self) -> dict[str, Decimal]:
        """instId -> mark price of every swap. Optional: if this request fails (or a
        recording lacks it), the quotes have no mark, as online."""
        try:
            response = await self.request("publicGetPublicMarkPrice", {"instType": "SWAP"},
                                          budget="marks")
            with self.parsing("mark-price response"):
                return parse_mark_prices(
                    response_rows(self.venue_id, response, "public/mark-price"))
        except VenueError as err:
            logger.warning("{}: funding quotes without mark prices: {}", self.venue_id, err)
            return {}

    async def fetch_book_tops(self, kind: MarketKind) -> BookSnapshot:
        """Best bid/ask and 24h quote volume of every market of ``kind``: one
        GET /market/tickers?instType=SPOT|SWAP."""
        response = await self.request("publicGetMarketTickers", {"instType": INST_TYPE[kind]},
                                      budget="tickers")
        markets = await self.markets_by_venue_symbol(kind)
        skips = SkipLog(self.venue_id)
        with self.parsing(f"{kind.value} tickers"):
            rows = response_rows(self.venue_id, response, "market/tickers")
            books = parse_tickers(self.venue_id, kind, rows, markets, skips)
        return BookSnapshot(self.venue_id, kind, books, tuple(skips.entries))

    async def fetch_history_page(self, market: Market, start_ms: int,
                                 end_ms: int) -> list[FundingRecord]:
        """The newest ``history_page_limit`` settlements in [start_ms, end_ms]."""
        params = {
            "instId": market.venue_symbol,
            "after": str(end_ms + 1),  # older than end_ms + 1, i.e. <= end_ms
            "before": str(max(start_ms - 1, 0)),  # newer than start_ms - 1, i.e. >= start_ms
            "limit": str(self.history_page_limit),
        }
        response = await self.request("publicGetPublicFundingRateHistory", params,
                                      budget="history")
        with self.parsing(f"funding history of {market.symbol}"):
            rows = response_rows(self.venue_id, response, "public/funding-rate-history")
            return parse_funding_history(self.venue_id, market, rows)

    async def trading_fee(self, symbol: str) -> dict[str, Any]:
        """ccxt's trading fee, with a USDT-margined swap's own rates. For swaps OKX's
        ``maker``/``taker`` are the crypto-margined rates, which ccxt reads first; the
        USDT-margined ones are ``makerU``/``takerU``, negated here as ccxt negates the others
        (OKX reports a fee as a negative number)."""
        fee = await self.exchange.fetch_trading_fee(symbol)
        info = fee.get("info") or {}
        if not info.get("makerU") or not info.get("takerU"):
            return fee
        return {**fee, "maker": Precise.string_neg(info["makerU"]),
                "taker": Precise.string_neg(info["takerU"])}
