"""Turning Binance REST responses into perpcarry types.

Pure functions over decoded JSON: no HTTP, no clock. A malformed entry is skipped with a
reason (``SkipLog``), never read as a zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
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
from perpcarry.domain.types import BookTop, FundingQuote, FundingRecord, Market, SkipLog

# USDⓈ-M funding intervals in use (developers.binance.com, "Get Funding Rate Info",
# read 2026-11; the 2025-06-17 premiumIndex shows all four: next funding at +1h/+2h/+4h/+8h).
FUNDING_INTERVALS_HOURS = frozenset({1, 2, 4, 8})
# A symbol missing from /fapi/v1/fundingInfo settles on the default 8h schedule with the
# default caps ("Get Funding Rate Info" lists only symbols with adjusted interval or caps).
DEFAULT_INTERVAL_HOURS = 8


@dataclass(frozen=True, slots=True)
class FundingTerms:
    """One symbol's entry of /fapi/v1/fundingInfo."""

    interval_hours: int
    rate_cap: Decimal | None
    rate_floor: Decimal | None


def _rows(payload: Any, what: str) -> list[Any]:
    if not isinstance(payload, list):
        raise MalformedField(what, payload,
                             f"{what}: expected a JSON array, got {type(payload).__name__}")
    return payload


def _symbol(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return None
    symbol = entry.get("symbol")
    return symbol if isinstance(symbol, str) and symbol else None


def parse_funding_info(payload: Any) -> tuple[dict[str, FundingTerms], dict[str, str]]:
    """``/fapi/v1/fundingInfo`` → (terms by venue symbol, reason by symbol whose entry is bad).

    A symbol with a bad entry must not fall back to the 8h default: its interval is unknown.
    """
    terms: dict[str, FundingTerms] = {}
    bad: dict[str, str] = {}
    for entry in _rows(payload, "fundingInfo"):
        symbol = _symbol(entry)
        if symbol is None:
            continue
        try:
            interval = int_field(entry, "fundingIntervalHours")
            cap = optional_decimal(entry, "adjustedFundingRateCap")
            floor = optional_decimal(entry, "adjustedFundingRateFloor")
        except MalformedField as err:
            bad[symbol] = f"fundingInfo: {err}"
            continue
        terms[symbol] = FundingTerms(interval, cap, floor)
    return terms, bad


def parse_premium_index(
    venue: str,
    payload: Any,
    perps: dict[str, Market],
    terms: dict[str, FundingTerms],
    bad_terms: dict[str, str],
    skips: SkipLog,
) -> dict[str, FundingQuote]:
    """``/fapi/v1/premiumIndex`` (all symbols) → funding quotes by unified symbol.

    ``lastFundingRate`` is the current period's rate, still moving until
    ``nextFundingTime``, hence ``is_predicted=True``.
    """
    quotes: dict[str, FundingQuote] = {}
    for entry in _rows(payload, "premiumIndex"):
        venue_symbol = _symbol(entry)
        if venue_symbol is None:
            skips.skip("?", "premiumIndex entry without a symbol")
            continue
        market = perps.get(venue_symbol)
        if market is None:
            skips.skip(venue_symbol, "not a listed perpetual")
            continue
        if venue_symbol in bad_terms:
            skips.skip(venue_symbol, bad_terms[venue_symbol])
            continue
        try:
            if int_field(entry, "nextFundingTime") <= 0:
                skips.skip(venue_symbol, "nextFundingTime is 0: not trading as a perpetual")
                continue
            next_funding = time_field(entry, "nextFundingTime")
            rate = decimal_field(entry, "lastFundingRate")
            stamp = time_field(entry, "time")
            mark = optional_decimal(entry, "markPrice")
            index = optional_decimal(entry, "indexPrice")
        except MalformedField as err:
            skips.skip(venue_symbol, str(err))
            continue
        symbol_terms = terms.get(venue_symbol, FundingTerms(DEFAULT_INTERVAL_HOURS, None, None))
        if symbol_terms.interval_hours not in FUNDING_INTERVALS_HOURS:
            skips.skip(venue_symbol, f"funding interval {symbol_terms.interval_hours}h is not "
                                     f"one of {sorted(FUNDING_INTERVALS_HOURS)}")
            continue
        cap, floor = symbol_terms.rate_cap, symbol_terms.rate_floor
        if (cap is not None and rate > cap) or (floor is not None and rate < floor):
            skips.skip(venue_symbol, f"rate {rate} outside [{floor}, {cap}]")
            continue
        quotes[market.symbol] = FundingQuote(
            venue=venue, symbol=market.symbol, rate=rate,
            interval_hours=symbol_terms.interval_hours,
            next_funding_time=next_funding, mark_price=mark, index_price=index,
            is_predicted=True, rate_cap=cap, rate_floor=floor, timestamp=stamp)
    return quotes


def parse_quote_volumes(payload: Any, markets: dict[str, Market]) -> dict[str, Decimal]:
    """``/ticker/24hr`` (all symbols) → 24h quote volume by venue symbol, our markets only.
    A bad volume leaves the volume unknown (None), it does not drop the book."""
    volumes = {}
    for entry in _rows(payload, "ticker/24hr"):
        symbol = _symbol(entry)
        if symbol not in markets:
            continue
        try:
            volume = optional_decimal(entry, "quoteVolume")
        except MalformedField:
            continue
        if volume is not None:
            volumes[symbol] = volume
    return volumes


def parse_book_tickers(
    venue: str,
    payload: Any,
    markets: dict[str, Market],
    volumes: dict[str, Decimal],
    fallback_time: datetime,
    skips: SkipLog,
) -> dict[str, BookTop]:
    """``/ticker/bookTicker`` (bidPrice/bidQty/askPrice/askQty) → book tops by unified
    symbol. Symbols that are not our markets (other quotes, delivery
    contracts) are left out without a skip: they were never candidates."""
    books: dict[str, BookTop] = {}
    for entry in _rows(payload, "bookTicker"):
        venue_symbol = _symbol(entry)
        market = markets.get(venue_symbol) if venue_symbol else None
        if market is None:
            continue
        try:
            bid, ask = best_bid_ask(entry, "bidPrice", "askPrice")
            bid_size = optional_decimal(entry, "bidQty")
            ask_size = optional_decimal(entry, "askQty")
            # Spot bookTicker rows carry no time; USDⓈ-M ones carry `time`.
            stamp_field = next((f for f in ("time", "closeTime") if entry.get(f)), None)
            stamp = time_field(entry, stamp_field) if stamp_field else fallback_time
        except MalformedField as err:
            skips.skip(venue_symbol, str(err))
            continue
        books[market.symbol] = BookTop(
            venue=venue, symbol=market.symbol, bid=bid, ask=ask, bid_size=bid_size,
            ask_size=ask_size, timestamp=stamp, quote_volume_24h=volumes.get(venue_symbol))
    return books


def parse_funding_rates(venue: str, payload: Any, market: Market) -> list[FundingRecord]:
    """``/fapi/v1/fundingRate`` → settled records, ascending. A malformed record raises
    ``MalformedField``: dropping it would leave a silent gap in the history."""
    rows = _rows(payload, "fundingRate")
    try:
        # A page at once (``funding_page``); a row that is not an object or lacks a field
        # raises here, and every doubt goes to the record-by-record reading, which names it.
        if set(map(_SYMBOL, rows)) <= {market.venue_symbol}:
            records = funding_page(venue, market.symbol, list(map(_FUNDING_TIME, rows)),
                                   list(map(_FUNDING_RATE, rows)), list(map(_MARK, rows)))
            if records is not None:
                return records
    except (KeyError, TypeError):
        pass
    return _funding_records(venue, rows, market)


_SYMBOL, _FUNDING_TIME, _FUNDING_RATE, _MARK = map(
    itemgetter, ("symbol", "fundingTime", "fundingRate", "markPrice"))


def _funding_records(venue: str, rows: list[Any], market: Market) -> list[FundingRecord]:
    """``parse_funding_rates`` record by record: raises ``MalformedField`` for the first
    bad value."""
    symbol, venue_symbol = market.symbol, market.venue_symbol
    records = []
    for entry in rows:
        if not isinstance(entry, dict) or entry.get("symbol") != venue_symbol:
            raise MalformedField("symbol", entry)
        records.append(FundingRecord(venue, symbol, time_field(entry, "fundingTime"),
                                     decimal_field(entry, "fundingRate"),
                                     optional_decimal(entry, "markPrice")))
    return oldest_first(records)
