"""Binance spot + USDⓈ-M perpetuals over ccxt: endpoints, weights, budgets."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, NamedTuple

from perpcarry.ccxt.venue import CcxtVenue
from perpcarry.domain.types import (
    BookSnapshot,
    FundingRecord,
    FundingSnapshot,
    Market,
    MarketKind,
    SkipLog,
)
from perpcarry_binance.orders import BinanceOrders
from perpcarry_binance.parsing import (
    parse_book_tickers,
    parse_funding_info,
    parse_funding_rates,
    parse_premium_index,
    parse_quote_volumes,
)

# Request weights of the calls below, from developers.binance.com (spot "Market data
# endpoints", USDⓈ-M "Market Data"), read 2026-11: weights when no symbol is given.
SPOT_EXCHANGE_INFO_WEIGHT = 20
FAPI_EXCHANGE_INFO_WEIGHT = 1
PREMIUM_INDEX_ALL_WEIGHT = 10
FUNDING_INFO_WEIGHT = 1  # also counts against a separate 500 requests / 5 min / IP limit
FUNDING_RATE_WEIGHT = 1  # shares that 500 / 5 min / IP limit with fundingInfo
SPOT_BOOK_TICKER_ALL_WEIGHT = 4
SPOT_TICKER_24HR_ALL_WEIGHT = 80
FAPI_BOOK_TICKER_ALL_WEIGHT = 5
FAPI_TICKER_24HR_ALL_WEIGHT = 40
SPOT_TRADE_FEE_WEIGHT = 1  # sapi /asset/tradeFee
FAPI_COMMISSION_RATE_WEIGHT = 20
# A 24h rolling volume barely moves in minutes; refetching it every scan would cost two
# more requests (and 120 weight) for a liquidity filter.
VOLUME_CACHE_SECONDS = 900


class Endpoint(NamedTuple):
    endpoint: str
    weight: int
    budget: str


# (best bid/ask, 24h volume) per market kind.
BOOK_ENDPOINTS = {
    MarketKind.SPOT: (Endpoint("publicGetTickerBookTicker", SPOT_BOOK_TICKER_ALL_WEIGHT, "spot"),
                      Endpoint("publicGetTicker24hr", SPOT_TICKER_24HR_ALL_WEIGHT, "spot")),
    MarketKind.PERP: (Endpoint("fapiPublicGetTickerBookTicker", FAPI_BOOK_TICKER_ALL_WEIGHT,
                               "fapi"),
                      Endpoint("fapiPublicGetTicker24hr", FAPI_TICKER_24HR_ALL_WEIGHT, "fapi")),
}


class BinanceVenue(BinanceOrders, CcxtVenue):
    """Binance market data and orders: spot (api.binance.com) and USDⓈ-M perps
    (fapi.binance.com)."""

    venue_id = "binance"
    ccxt_id = "binance"
    market_types = ("spot", "linear")
    ccxt_options: ClassVar[dict[str, Any]] = {
        # Both are keyed calls (sapi capital/config/getall, margin/allPairs); without them
        # load_markets is exactly the two exchangeInfo requests, with or without keys.
        "fetchCurrencies": False,
        "fetchMargins": False,
    }
    # REQUEST_WEIGHT per minute from the rateLimits of the real exchangeInfo responses:
    # spot 6000 (api/v3/exchangeInfo, 2023-09-08), USDⓈ-M 2400 (fapi/v1/exchangeInfo,
    # 2025-08-22); same figures in the Binance API docs, read 2026-11.
    weight_budgets: ClassVar[dict[str, int]] = {"spot": 6000, "fapi": 2400}
    # With market_types spot + linear and the options above, ccxt 4.5's load_markets sends
    # exactly these two (counted in the replay of cassettes/binance/markets_full.json).
    market_requests: ClassVar[dict[str, tuple[int, str]]] = {
        "/api/v3/exchangeInfo": (SPOT_EXCHANGE_INFO_WEIGHT, "spot"),
        "/fapi/v1/exchangeInfo": (FAPI_EXCHANGE_INFO_WEIGHT, "fapi"),
    }
    history_page_limit = 1000  # /fapi/v1/fundingRate maximum `limit`
    history_paging = "forward"  # with startTime the endpoint returns the oldest records first
    fee_requests = ((SPOT_TRADE_FEE_WEIGHT, "spot"), (FAPI_COMMISSION_RATE_WEIGHT, "fapi"))
    fee_endpoints = "/sapi/v1/asset/tradeFee, /fapi/v1/commissionRate"

    async def _perps(self) -> dict[str, Market]:
        return await self.markets_by_venue_symbol(MarketKind.PERP)

    async def fetch_funding_snapshot(self) -> FundingSnapshot:
        """premiumIndex (rates, mark/index, next funding) + fundingInfo (intervals and caps
        of the symbols off the 8h default): two bulk requests, fundingInfo cached."""
        # fundingInfo holds instrument terms (interval, caps) that change as rarely as
        # markets do, so it is cached with them.
        premium, info = await asyncio.gather(
            self.request("fapiPublicGetPremiumIndex", weight=PREMIUM_INDEX_ALL_WEIGHT,
                         budget="fapi"),
            self.request_cached("fapiPublicGetFundingInfo", weight=FUNDING_INFO_WEIGHT,
                                budget="fapi",
                                max_age_seconds=self.config.market_cache_hours * 3600))
        perps = await self._perps()
        skips = SkipLog(self.venue_id)
        with self.parsing("funding response"):
            terms, bad_terms = parse_funding_info(info)
            quotes = parse_premium_index(self.venue_id, premium, perps, terms, bad_terms, skips)
        return FundingSnapshot(self.venue_id, quotes, tuple(skips.entries))

    async def fetch_book_tops(self, kind: MarketKind) -> BookSnapshot:
        """Best bid/ask from the all-symbols ``ticker/bookTicker`` of spot or USDⓈ-M, plus the
        24h quote volume from ``ticker/24hr`` (which is heavy and moves slowly, so it is
        cached briefly): one request per scan and market kind once the volumes are cached."""
        books, volumes = BOOK_ENDPOINTS[kind]
        book_rows, tickers = await asyncio.gather(
            self.request(books.endpoint, weight=books.weight, budget=books.budget),
            self.request_cached(volumes.endpoint, weight=volumes.weight, budget=volumes.budget,
                                max_age_seconds=VOLUME_CACHE_SECONDS))
        markets = await self.markets_by_venue_symbol(kind)
        skips = SkipLog(self.venue_id)
        with self.parsing("ticker response"):
            books_by_symbol = parse_book_tickers(
                self.venue_id, book_rows, markets, parse_quote_volumes(tickers, markets),
                self.context.clock(), skips)
        return BookSnapshot(self.venue_id, kind, books_by_symbol, tuple(skips.entries))

    async def fetch_history_page(self, market: Market, start_ms: int,
                                 end_ms: int) -> list[FundingRecord]:
        params = {"symbol": market.venue_symbol, "startTime": start_ms, "endTime": end_ms,
                  "limit": self.history_page_limit}
        rows = await self.request("fapiPublicGetFundingRate", params,
                                  weight=FUNDING_RATE_WEIGHT, budget="fapi")
        with self.parsing(f"fundingRate record for {market.symbol}"):
            return parse_funding_rates(self.venue_id, rows, market)
