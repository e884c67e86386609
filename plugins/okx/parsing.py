"""Parsing OKX v5 public responses into perpcarry types. Pure functions, no I/O.

Every OKX REST response is an envelope ``{"code": "0", "data": [...], "msg": ""}``; ccxt
raises on a non-zero ``code`` before we see it, so here a missing or non-list ``data`` means
the body itself is broken.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from perpcarry.domain.types import BookTop, FundingQuote, FundingRecord, Market, MarketKind, SkipLog

HOUR_MS = 3_600_000
# Settlement intervals OKX runs swaps on (hours). Source: OKX "Funding fee" help page and
# the v5 changelog for /public/funding-rate (interval shortening to 1/2/4h), read 2026-11.
FUNDING_INTERVALS_HOURS = frozenset({1, 2, 4, 8})


def response_rows(venue: str, response: Any, endpoint: str) -> list[dict[str, Any]]:
    """The ``data`` list of an OKX envelope, every row an object; anything else is a
    ``MalformedField`` (a row dropped in silence would leave a gap in a history)."""
    if not isinstance(response, dict):
        raise MalformedField(endpoint, response, f"{endpoint}: body is not a JSON object")
    code = response.get("code")
    rows = response.get("data")
    if code not in ("0", 0) or not isinstance(rows, list):
        raise MalformedField("data", rows, f"{endpoint}: unexpected envelope (code={code!r})")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise MalformedField("data", row, f"{endpoint}: data row {index} is not an object")
    return rows


def parse_mark_prices(rows: list[dict[str, Any]]) -> dict[str, Decimal]:
    """instId -> mark price from ``GET /api/v5/public/mark-price?instType=SWAP``. An entry
    without a positive ``markPx`` is left out, so its quote has no mark (unknown, not 0)."""
    marks: dict[str, Decimal] = {}
    for row in rows:
        inst_id = row.get("instId")
        try:
            mark = decimal_field(row, "markPx")
        except MalformedField:
            continue
        if isinstance(inst_id, str) and mark > 0:
            marks[inst_id] = mark
    return marks


def parse_funding_rates(venue: str, rows: list[dict[str, Any]], perps: dict[str, Market],
                        ignored_ids: set[str], skips: SkipLog,
                        marks: Mapping[str, Decimal] | None = None) -> dict[str, FundingQuote]:
    """Quotes from ``GET /api/v5/public/funding-rate?instId=ANY``.

    ``fundingRate`` is the current period's rate, paid at ``fundingTime`` (the upcoming
    settlement); ``nextFundingTime`` is the settlement after it, so their difference is the
    symbol's real interval. ``ignored_ids`` are instruments the venue knows but perpcarry
    does not trade (inverse swaps): left out without a skip entry. ``marks`` (instId ->
    mark price, :func:`parse_mark_prices`) fills each quote's mark price where known.
    """
    quotes: dict[str, FundingQuote] = {}
    for row in rows:
        inst_id = row.get("instId")
        if not isinstance(inst_id, str) or not inst_id:
            skips.skip("?", "entry without instId")
            continue
        if inst_id in ignored_ids:
            continue
        market = perps.get(inst_id)
        if market is None:
            skips.skip(inst_id, "unknown symbol (not a listed USDT/USDC linear swap)")
            continue
        try:
            quote = _funding_quote(venue, market, row, (marks or {}).get(inst_id))
        except MalformedField as err:
            skips.skip(market.symbol, str(err))
            continue
        quotes[market.symbol] = quote
    return quotes


def _funding_quote(venue: str, market: Market, row: dict[str, Any],
                   mark: Decimal | None) -> FundingQuote:
    rate = decimal_field(row, "fundingRate")
    funding_time = time_field(row, "fundingTime")
    span_ms = int_field(row, "nextFundingTime") - int_field(row, "fundingTime")
    if span_ms <= 0 or span_ms % HOUR_MS or span_ms // HOUR_MS not in FUNDING_INTERVALS_HOURS:
        raise MalformedField("nextFundingTime", row.get("nextFundingTime"),
                             f"funding interval {span_ms / HOUR_MS:g}h is not one OKX uses")
    cap = optional_decimal(row, "maxFundingRate")
    floor = optional_decimal(row, "minFundingRate")
    if (cap is not None and rate > cap) or (floor is not None and rate < floor):
        raise MalformedField("fundingRate", rate,
                             f"rate {rate} outside the published limits [{floor}, {cap}]")
    return FundingQuote(
        venue=venue,
        symbol=market.symbol,
        rate=rate,
        interval_hours=span_ms // HOUR_MS,
        next_funding_time=funding_time,
        # /public/funding-rate carries no price; the mark comes from /public/mark-price.
        mark_price=mark,
        index_price=None,
        # The rate for the period still running (method current_period): it moves until
        # fundingTime settles it.
        is_predicted=True,
        rate_cap=cap,
        rate_floor=floor,
        timestamp=time_field(row, "ts"),
    )


def parse_tickers(venue: str, kind: MarketKind, rows: list[dict[str, Any]],
                  markets: dict[str, Market], skips: SkipLog) -> dict[str, BookTop]:
    """Book tops from ``GET /api/v5/market/tickers?instType=SPOT|SWAP``.

    Sizes are converted to base currency (swap sizes come in contracts). The 24h quote
    volume is ``volCcy24h`` for spot (quote currency) and ``volCcy24h × last`` for swaps,
    whose ``volCcy24h`` is in base currency (ccxt's okx.parse_ticker notes the same and
    leaves swap quoteVolume empty).
    """
    books: dict[str, BookTop] = {}
    for row in rows:
        market = markets.get(str(row.get("instId")))
        if market is None:
            continue  # other quote currencies, inverse swaps: not carry markets
        try:
            bid, ask = best_bid_ask(row, "bidPx", "askPx")
            bid_size = optional_decimal(row, "bidSz")
            ask_size = optional_decimal(row, "askSz")
            volume = optional_decimal(row, "volCcy24h")
            if volume is not None and kind is MarketKind.PERP:
                last = optional_decimal(row, "last")
                volume = None if last is None else volume * last
            timestamp = time_field(row, "ts")
        except MalformedField as err:
            skips.skip(market.symbol, str(err))
            continue
        books[market.symbol] = BookTop(
            venue=venue,
            symbol=market.symbol,
            bid=bid,
            ask=ask,
            bid_size=None if bid_size is None else bid_size * market.contract_size,
            ask_size=None if ask_size is None else ask_size * market.contract_size,
            timestamp=timestamp,
            quote_volume_24h=volume,
        )
    return books


def parse_funding_history(venue: str, market: Market,
                          rows: list[dict[str, Any]]) -> list[FundingRecord]:
    """Settled funding from ``GET /api/v5/public/funding-rate-history``, oldest first.

    ``realizedRate`` is what was actually paid; older rows (and rows rebuilt from
    datasets that kept only ``fundingRate``) lack it, so ``fundingRate`` is the fallback.
    """
    try:
        # A page at once (``funding_page``); a row that is not an object or lacks a field
        # raises here, and every doubt (a page mixing rows with and without realizedRate
        # too) goes to the record-by-record reading, which names it.
        if set(map(dict.get, rows, repeat("instId"))) <= {None, market.venue_symbol}:
            rates = list(map(dict.get, rows, repeat("realizedRate")))
            if rates.count(None) == len(rates):
                rates = list(map(_FUNDING_RATE, rows))
            records = funding_page(venue, market.symbol, list(map(_FUNDING_TIME, rows)),
                                   rates)
            if records is not None:
                return records
    except (KeyError, TypeError):
        pass
    return _funding_records(venue, market, rows)


_FUNDING_TIME, _FUNDING_RATE = itemgetter("fundingTime"), itemgetter("fundingRate")


def _funding_records(venue: str, market: Market,
                     rows: list[dict[str, Any]]) -> list[FundingRecord]:
    """``parse_funding_history`` record by record: raises ``MalformedField`` for the first
    bad value."""
    records = []
    for row in rows:
        if row.get("instId") not in (None, market.venue_symbol):
            raise MalformedField("instId", row.get("instId"),
                                 f"history for {row.get('instId')} in a "
                                 f"{market.venue_symbol} response")
        rate = optional_decimal(row, "realizedRate")
        if rate is None:
            rate = decimal_field(row, "fundingRate")
        funding_time = time_field(row, "fundingTime")
        records.append(FundingRecord(venue, market.symbol, funding_time, rate))
    return oldest_first(records)

