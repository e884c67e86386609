"""Parsing Bybit v5 market responses into perpcarry types.

Pure functions: no HTTP, no clock. A malformed entry is skipped with a reason; a malformed
envelope raises ``MalformedField``. Nothing defaults to a zero rate or price.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import repeat
from operator import itemgetter
from typing import Any

from perpcarry.domain.parsing import (
    MalformedField,
    best_bid_ask,
    decimal_field,
    funding_page,
    int_field,
    oldest_first,
    optional_decimal,
    time_field,
)
from perpcarry.domain.types import (
    BookSnapshot,
    BookTop,
    FundingQuote,
    FundingRecord,
    FundingSnapshot,
    Market,
    MarketKind,
    SkipLog,
)

# Bybit instruments-info `fundingInterval` is in minutes; linear perps settle every 1, 2, 4
# or 8 hours (all 555 USDT perps of the 2026-02-07 instruments-info dump use one of these).
FUNDING_INTERVAL_MINUTES = frozenset({60, 120, 240, 480})


@dataclass(frozen=True, slots=True)
class FundingTerms:
    """What instruments-info says about one perp's funding: interval and rate limits."""

    interval_hours: int
    rate_cap: Decimal | None
    rate_floor: Decimal | None


def result_list(venue: str, response: Any, what: str) -> tuple[list[Any], dict[str, Any]]:
    """The ``result.list`` of a v5 envelope and the envelope itself; ccxt has already
    raised for a non-zero ``retCode``."""
    if not isinstance(response, dict):
        raise MalformedField(what, response, f"{what}: response is not a JSON object")
    result = response.get("result")
    rows = result.get("list") if isinstance(result, dict) else None
    if not isinstance(rows, list):
        raise MalformedField("result.list", rows, f"{what}: response has no result.list")
    return rows, response


def response_time(response: dict[str, Any], fallback: datetime) -> datetime:
    """The server time of a v5 envelope (``time``, ms), or ``fallback`` if it is absent."""
    try:
        return time_field(response, "time")
    except MalformedField:
        return fallback


def funding_terms(info: Mapping[str, Any]) -> FundingTerms:
    """Interval (hours) and caps of one linear instrument, from its raw instruments-info.

    ``fundingInterval`` is a string in older responses ("480") and a number in newer ones
    (480); both are accepted. Raises ``MalformedField`` for a missing or unknown interval.
    """
    minutes = int_field(dict(info), "fundingInterval")
    if minutes not in FUNDING_INTERVAL_MINUTES:
        raise MalformedField("fundingInterval", info.get("fundingInterval"))
    return FundingTerms(
        interval_hours=minutes // 60,
        rate_cap=optional_decimal(dict(info), "upperFundingRate"),
        rate_floor=optional_decimal(dict(info), "lowerFundingRate"),
    )


def _symbol_of(row: Any) -> str | None:
    if isinstance(row, dict) and isinstance(row.get("symbol"), str) and row["symbol"]:
        return row["symbol"]
    return None


def _rows_of(rows: list, markets: Mapping[str, Market], known_ids: Iterable[str],
             skips: SkipLog) -> Iterator[tuple[str, Market, dict[str, Any]]]:
    """(venue symbol, market, row) of the ticker rows of ``markets``. A row without a symbol,
    or with one ccxt does not know, is skipped; known contracts that are not among
    ``markets`` (dated futures, inverse) are passed over."""
    known = set(known_ids)
    for row in rows:
        venue_symbol = _symbol_of(row)
        if venue_symbol is None:
            skips.skip("?", "ticker without a symbol")
            continue
        market = markets.get(venue_symbol)
        if market is None:
            if venue_symbol not in known:
                skips.skip(venue_symbol, "unknown symbol (not in the loaded markets)")
            continue
        yield venue_symbol, market, row


def parse_funding_tickers(
    venue: str,
    response: Any,
    perps: Mapping[str, Market],
    instruments: Mapping[str, Mapping[str, Any]],
    known_ids: Iterable[str],
    fallback_time: datetime,
) -> FundingSnapshot:
    """``/v5/market/tickers?category=linear`` → one quote per perp.

    ``perps`` maps venue symbol → Market (active linear USDT/USDC perps); ``instruments``
    maps venue symbol → raw instruments-info (the interval and caps live there, not in the
    ticker); ``known_ids`` are all venue ids ccxt knows, so dated futures and other
    contracts that are not carry perps are passed over rather than reported as unknown.
    """
    rows, envelope = result_list(venue, response, "tickers")
    timestamp = response_time(envelope, fallback_time)
    skips = SkipLog(venue)
    quotes: dict[str, FundingQuote] = {}
    for venue_symbol, market, row in _rows_of(rows, perps, known_ids, skips):
        try:
            terms = funding_terms(instruments.get(venue_symbol) or {})
            rate = decimal_field(row, "fundingRate")
            next_funding = time_field(row, "nextFundingTime")
            mark = optional_decimal(row, "markPrice")
            index = optional_decimal(row, "indexPrice")
        except MalformedField as exc:
            skips.skip(market.symbol, str(exc))
            continue
        if terms.rate_cap is not None and rate > terms.rate_cap:
            skips.skip(market.symbol, f"rate {rate} above the cap {terms.rate_cap}")
            continue
        if terms.rate_floor is not None and rate < terms.rate_floor:
            skips.skip(market.symbol, f"rate {rate} below the floor {terms.rate_floor}")
            continue
        quotes[market.symbol] = FundingQuote(
            venue=venue,
            symbol=market.symbol,
            rate=rate,
            interval_hours=terms.interval_hours,
            next_funding_time=next_funding,
            mark_price=mark,
            index_price=index,
            # The ticker's fundingRate is the current period's rate, still moving until
            # nextFundingTime (Bybit v5 docs, Get Tickers).
            is_predicted=True,
            rate_cap=terms.rate_cap,
            rate_floor=terms.rate_floor,
            timestamp=timestamp,
        )
    return FundingSnapshot(venue, quotes, tuple(skips.entries))


def parse_book_tickers(
    venue: str,
    kind: MarketKind,
    response: Any,
    markets: Mapping[str, Market],
    known_ids: Iterable[str],
    fallback_time: datetime,
) -> BookSnapshot:
    """``/v5/market/tickers?category=spot|linear`` → best bid/ask, sizes and 24h turnover."""
    rows, envelope = result_list(venue, response, "tickers")
    ours = [row for row in rows if _symbol_of(row) in markets]
    if ours and not any("bid1Price" in row or "ask1Price" in row for row in ours):
        # A response without any book field (the offline snapshot's rebuilt tickers) is
        # no book source at all, rather than one skip per symbol.
        raise MalformedField("bid1Price", None, f"{kind.value} tickers carry no best bid/ask")
    timestamp = response_time(envelope, fallback_time)
    skips = SkipLog(venue)
    books: dict[str, BookTop] = {}
    for _, market, row in _rows_of(rows, markets, known_ids, skips):
        try:
            bid, ask = best_bid_ask(row, "bid1Price", "ask1Price")
            bid_size = optional_decimal(row, "bid1Size")
            ask_size = optional_decimal(row, "ask1Size")
            turnover = optional_decimal(row, "turnover24h")
        except MalformedField as exc:
            skips.skip(market.symbol, str(exc))
            continue
        books[market.symbol] = BookTop(
            venue=venue, symbol=market.symbol, bid=bid, ask=ask, bid_size=bid_size,
            ask_size=ask_size, timestamp=timestamp, quote_volume_24h=turnover)
    return BookSnapshot(venue, kind, books, tuple(skips.entries))


def parse_funding_history(venue: str, response: Any, market: Market) -> list[FundingRecord]:
    """``/v5/market/funding/history`` → settled records, oldest first.

    A malformed row fails the whole page (``MalformedField``): dropping it would leave a
    silent gap in the history cache.
    """
    rows, _ = result_list(venue, response, "funding history")
    try:
        # A page at once (``funding_page``); a row that is not an object or lacks a field
        # raises here, and every doubt goes to the record-by-record reading, which names it.
        if set(map(dict.get, rows, repeat("symbol"))) <= {None, market.venue_symbol}:
            records = funding_page(venue, market.symbol, list(map(_SETTLED_AT, rows)),
                                   list(map(_FUNDING_RATE, rows)))
            if records is not None:
                return records
    except (KeyError, TypeError):
        pass
    return _funding_records(venue, rows, market)


_SETTLED_AT, _FUNDING_RATE = itemgetter("fundingRateTimestamp"), itemgetter("fundingRate")


def _funding_records(venue: str, rows: list[Any], market: Market) -> list[FundingRecord]:
    """``parse_funding_history`` record by record: raises ``MalformedField`` for the first
    bad value."""
    records = []
    for row in rows:
        if not isinstance(row, dict):
            raise MalformedField("list", row, f"bad row {row!r}")
        if row.get("symbol") not in (None, market.venue_symbol):
            raise MalformedField("symbol", row.get("symbol"), f"holds {row.get('symbol')}")
        records.append(FundingRecord(venue, market.symbol,
                                     time_field(row, "fundingRateTimestamp"),
                                     decimal_field(row, "fundingRate")))
    return oldest_first(records)
