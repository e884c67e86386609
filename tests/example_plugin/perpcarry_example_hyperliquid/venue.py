"""Hyperliquid market data over ccxt: a complete perpcarry venue in one small module.

Everything the venue needs in common with every other one (error translation, retries with
Retry-After, the weight budget, the market cache, paging and caching funding history) comes
from :class:`perpcarry.ccxt.venue.CcxtVenue`. This subclass sets class attributes and writes
the venue-specific requests and parsing.

Hyperliquid's public API is one endpoint, ``POST https://api.hyperliquid.xyz/info``, whose
JSON body names the query (``{"type": "metaAndAssetCtxs"}``). ccxt exposes it as the implicit
method ``publicPostInfo``; recorded sessions therefore match on the request body too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal

from perpcarry.ccxt.venue import CcxtVenue
from perpcarry.config.settings import VenueConfig
from perpcarry.domain.errors import InvalidResponse, VenueError
from perpcarry.domain.parsing import MalformedField, decimal_field, int_field, optional_decimal
from perpcarry.domain.types import (
    BookSnapshot,
    FundingQuote,
    FundingRecord,
    FundingSnapshot,
    Market,
    MarketKind,
    SkipLog,
)
from perpcarry.venues.protocol import VenueContext

INTERVAL_HOURS = 1
# "Funding is capped at 4%/hour" in either direction: Hyperliquid docs, "Trading > Funding"
# (hyperliquid.gitbook.io/hyperliquid-docs/trading/funding), read 2026-11.
RATE_CAP = Decimal("0.04")
# /info weights: Hyperliquid docs "For developers > API > Rate limits and user limits", read
# 2026-11: 1200 weight per minute per IP; metaAndAssetCtxs and fundingHistory weigh 20, and
# fundingHistory adds 1 per 20 items returned (a full 500-row page: 20 + 25).
INFO_WEIGHT = 20
HISTORY_WEIGHT = 20 + 500 // 20


class HyperliquidVenue(CcxtVenue):
    venue_id = "hyperliquid"
    ccxt_id = "hyperliquid"
    # ccxt's hyperliquid.fetch_markets: 'swap' = POST info {"type": "metaAndAssetCtxs"},
    # 'spot' = {"type": "spotMetaAndAssetCtxs"}. Left out: 'hip3' (builder-deployed perp dexes).
    market_types = ("spot", "swap")
    weight_budgets: ClassVar[dict[str, int]] = {"info": 1200}
    # Both market requests (metaAndAssetCtxs, spotMetaAndAssetCtxs) go to POST /info.
    market_requests: ClassVar[dict[str, tuple[int, str]]] = {"/info": (INFO_WEIGHT, "info")}
    # fundingHistory returns at most 500 rows, oldest first from startTime (same docs page).
    history_page_limit = 500
    history_paging: ClassVar[Literal["forward", "backward"]] = "forward"
    # Config field -> ccxt constructor key (see HyperliquidConfig).
    credential_keys: ClassVar[dict[str, str]] = {
        "wallet_address": "walletAddress", "private_key": "privateKey"}

    def __init__(self, config: VenueConfig, context: VenueContext) -> None:
        super().__init__(config, context)
        # ccxt would add a third market-load request ({"type": "spotMeta"}) for currencies;
        # markets do not need it.
        self.exchange.has = {**self.exchange.has, "fetchCurrencies": False}

    # -- funding ------------------------------------------------------------------------

    async def fetch_funding_snapshot(self) -> FundingSnapshot:
        """Every perp's funding from ONE ``{"type": "metaAndAssetCtxs"}`` request."""
        perps = await self._perps_by_coin()
        response = await self.request("publicPostInfo", {"type": "metaAndAssetCtxs"},
                                      weight=INFO_WEIGHT, budget="info")
        # The asset contexts carry no time at all: the server's HTTP Date is the instant.
        timestamp = _response_time(self.exchange.last_response_headers) or self.context.clock()
        skips = SkipLog(self.venue_id)
        quotes = parse_asset_contexts(self.venue_id, response, perps, timestamp, skips)
        return FundingSnapshot(self.venue_id, quotes, tuple(skips.entries))

    async def fetch_history_page(self, market: Market, start_ms: int,
                                 end_ms: int) -> list[FundingRecord]:
        """Up to 500 settlements of one coin from ``start_ms``, oldest first."""
        params = {"type": "fundingHistory", "coin": self._coin(market.symbol),
                  "startTime": start_ms, "endTime": end_ms}
        rows = await self.request("publicPostInfo", params, weight=HISTORY_WEIGHT, budget="info")
        if not isinstance(rows, list):
            raise InvalidResponse(self.venue_id, "fundingHistory: body is not a JSON list")
        records = []
        for row in rows:
            try:
                records.append(FundingRecord(
                    self.venue_id, market.symbol, _from_ms(int_field(row, "time")),
                    decimal_field(row, "fundingRate")))
            except (MalformedField, AttributeError) as err:
                raise InvalidResponse(self.venue_id, f"fundingHistory: {err}") from None
        return records

    async def fetch_book_tops(self, kind: MarketKind) -> BookSnapshot:
        # Declared in the spec (bulk_books=False): core does not ask; say so if someone does.
        raise VenueError(self.venue_id, "Hyperliquid has no bulk best bid/ask endpoint")

    # -- helpers ------------------------------------------------------------------------

    def _coin(self, symbol: str) -> str:
        """Hyperliquid names a perp by its coin ("BTC"); ccxt's market id is its index."""
        return self.raw_markets[symbol]["info"]["name"]

    async def _perps_by_coin(self) -> dict[str, Market]:
        perps = {m.symbol: m for m in await self.load_markets() if m.kind is MarketKind.PERP}
        return {self._coin(symbol): market for symbol, market in perps.items()}


def parse_asset_contexts(venue: str, response: Any, perps: dict[str, Market],
                         timestamp: datetime, skips: SkipLog) -> dict[str, FundingQuote]:
    """Quotes from ``[{"universe": [...]}, [ctx, ...]]``: two lists zipped by position.

    ``funding`` is the rate predicted for the hour still running (it settles on the next
    full hour), per hour, as a fraction. A missing, null or empty field skips the coin.
    """
    if not (isinstance(response, list) and len(response) == 2
            and isinstance(response[0], dict) and isinstance(response[1], list)):
        raise InvalidResponse(venue, "metaAndAssetCtxs: expected [meta, asset contexts]")
    universe = response[0].get("universe")
    contexts = response[1]
    if not isinstance(universe, list) or len(universe) != len(contexts):
        # Zipped by position: lists of different lengths cannot be paired safely.
        raise InvalidResponse(venue, "metaAndAssetCtxs: universe and contexts do not pair up")
    next_funding = timestamp.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    quotes: dict[str, FundingQuote] = {}
    for meta, ctx in zip(universe, contexts, strict=True):
        coin = meta.get("name") if isinstance(meta, dict) else None
        market = perps.get(coin)
        if market is None:
            skips.skip(str(coin), "unknown symbol (not a listed perp)")
            continue
        try:
            rate = decimal_field(ctx, "funding")
            if abs(rate) > RATE_CAP:
                raise ValueError(f"rate {rate} outside the published cap ±{RATE_CAP}")
            quotes[market.symbol] = FundingQuote(
                venue=venue, symbol=market.symbol, rate=rate, interval_hours=INTERVAL_HOURS,
                next_funding_time=next_funding,
                mark_price=optional_decimal(ctx, "markPx"),
                index_price=optional_decimal(ctx, "oraclePx"),
                is_predicted=True, rate_cap=RATE_CAP, rate_floor=-RATE_CAP,
                timestamp=timestamp)
        except (ValueError, AttributeError) as err:  # MalformedField is a ValueError
            skips.skip(market.symbol, str(err))
    return quotes


def _response_time(headers: Any) -> datetime | None:
    for key, value in (headers or {}).items():
        if key.lower() == "date":
            try:
                return parsedate_to_datetime(value).astimezone(UTC)
            except (TypeError, ValueError):
                return None
    return None


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
