"""Bybit v5 client: spot and linear (USDT/USDC) perpetuals over ccxt."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from perpcarry.ccxt.venue import CcxtVenue
from perpcarry.config.settings import VenueConfig
from perpcarry.domain.types import (
    BookSnapshot,
    FundingRecord,
    FundingSnapshot,
    Market,
    MarketKind,
)
from perpcarry.venues.protocol import VenueContext
from perpcarry_bybit.orders import BybitOrders
from perpcarry_bybit.parsing import (
    parse_book_tickers,
    parse_funding_history,
    parse_funding_tickers,
)

# The linear tickers response serves both the funding snapshot and the perp books; a scan
# asks for both within a second or two, so one response is reused for this long.
LINEAR_TICKERS_REUSE_SECONDS = 5.0


class BybitVenue(BybitOrders, CcxtVenue):
    """Bybit spot + linear perps. Funding interval and caps come from instruments-info
    (kept by ccxt in ``market['info']`` and cached on disk with the markets)."""

    venue_id: ClassVar[str] = "bybit"
    ccxt_id: ClassVar[str] = "bybit"
    # ccxt then calls GET /v5/market/instruments-info for category=spot, category=linear
    # (limit=1000, cursor-paged) and category=linear&status=PreLaunch: 3 requests.
    market_types: ClassVar[tuple[str, ...]] = ("spot", "linear")
    ccxt_options: ClassVar[dict[str, Any]] = {
        # No /v5/market/time call before loading markets.
        "adjustForTimeDifference": False,
    }
    # IP limit for all of api.bybit.com: 600 requests per 5-second window = 7,200 per
    # minute (bybit-exchange.github.io/docs/v5/rate-limit, "HTTP IP limit", read 2026-11).
    # Bybit counts requests, not weights, so every call below has weight 1.
    weight_budgets: ClassVar[dict[str, int]] = {"default": 7200}
    market_requests: ClassVar[dict[str, tuple[int, str]]] = {
        "/v5/market/instruments-info": (1, "default")}
    # /v5/market/funding/history: limit max 200, newest first within [startTime, endTime]
    # (bybit-exchange.github.io/docs/v5/market/history-fund-rate, read 2026-11).
    history_page_limit: ClassVar[int] = 200
    history_paging = "backward"
    # GET /v5/account/fee-rate, category spot and linear: one request each.
    fee_requests = ((1, "default"), (1, "default"))
    fee_endpoints = "/v5/account/fee-rate"

    def __init__(self, config: VenueConfig, context: VenueContext) -> None:
        import ccxt

        super().__init__(config, context)
        # Currencies are not needed for market data; with keys ccxt would otherwise call
        # the private /v5/asset/coin/query-info on every market load.
        self.exchange.has["fetchCurrencies"] = False
        # retCode 10016 is Bybit's "Server error / System error, please try again later";
        # ccxt maps it to a plain ExchangeError, which would read as a bad response.
        self.exchange.exceptions["exact"]["10016"] = ccxt.ExchangeNotAvailable
        self._linear_tickers: tuple[float, Any] | None = None
        self._linear_tickers_lock = asyncio.Lock()

    # -- helpers ----------------------------------------------------------------------

    def _raw_instruments(self) -> dict[str, dict[str, Any]]:
        """Venue symbol → raw instruments-info of every linear contract ccxt loaded."""
        return {m["id"]: m.get("info") or {} for m in self.raw_markets.values()
                if m.get("linear") and m.get("contract")}

    def _known_ids(self, kind: MarketKind) -> set[str]:
        want_spot = kind is MarketKind.SPOT
        return {m["id"] for m in self.raw_markets.values()
                if bool(m.get("spot")) == want_spot}

    async def _tickers(self, category: str) -> Any:
        return await self.request("publicGetV5MarketTickers", {"category": category})

    async def _linear_tickers_response(self) -> Any:
        """The linear tickers, reused for ``LINEAR_TICKERS_REUSE_SECONDS`` so a scan that
        wants funding and perp books makes one request, even when it asks concurrently."""
        async with self._linear_tickers_lock:
            now = self.context.clock().timestamp()
            if self._linear_tickers is not None:
                fetched_at, response = self._linear_tickers
                if 0 <= now - fetched_at <= LINEAR_TICKERS_REUSE_SECONDS:
                    return response
            response = await self._tickers("linear")
            self._linear_tickers = (now, response)
            return response

    # -- market data ------------------------------------------------------------------

    async def fetch_funding_snapshot(self) -> FundingSnapshot:
        """Every linear perp's current-period funding from one GET /v5/market/tickers."""
        response = await self._linear_tickers_response()
        perps = await self.markets_by_venue_symbol(MarketKind.PERP)
        with self.parsing("linear tickers"):
            return parse_funding_tickers(
                self.venue_id, response, perps, self._raw_instruments(),
                self._known_ids(MarketKind.PERP), self.context.clock())

    async def fetch_book_tops(self, kind: MarketKind) -> BookSnapshot:
        """Best bid/ask, sizes and 24h turnover (quote volume) of every market of ``kind``
        from one GET /v5/market/tickers (category spot or linear)."""
        if kind is MarketKind.SPOT:
            response = await self._tickers("spot")
        else:
            response = await self._linear_tickers_response()
        markets = await self.markets_by_venue_symbol(kind)
        with self.parsing(f"{kind.value} tickers"):
            return parse_book_tickers(self.venue_id, kind, response, markets,
                                      self._known_ids(kind), self.context.clock())

    async def fetch_history_page(self, market: Market, start_ms: int,
                                 end_ms: int) -> list[FundingRecord]:
        """Up to 200 settlements in [start_ms, end_ms], the newest ones (Bybit pages
        backward)."""
        response = await self.request("publicGetV5MarketFundingHistory", {
            "category": "linear",
            "symbol": market.venue_symbol,
            "startTime": start_ms,
            "endTime": end_ms,
            "limit": self.history_page_limit,
        })
        with self.parsing(f"funding history of {market.symbol}"):
            return parse_funding_history(self.venue_id, response, market)
