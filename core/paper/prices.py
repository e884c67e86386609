"""What the paper venue reads of real market data: markets, fill prices, marks and the
funding rate of each settlement, from the venue's own market-data client.

Fills take the book's ask (buys) or bid (sells) when a book is known, else the mark price
plus or minus the configured half-spread; each fill names its source. In ``perpcarry run``
on streams (:meth:`MarketView.use_streams`), a book top or mark the venue's stream pushed
within ``[streams] max_age_seconds`` on a live feed comes first (``stream book ask``,
``stream mark``); REST otherwise, as above. A spot market's mark
is its perp's index price where the venue reports one (the spot index), else the perp's
mark price. Nothing is invented: without a book and a mark the order is refused, and a
settlement whose rate is not in the data stays unsettled until it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING

from loguru import logger

from perpcarry.domain.errors import VenueError
from perpcarry.domain.types import BookSnapshot, FundingQuote, FundingSnapshot, Market, MarketKind
from perpcarry.scan.engine import HISTORY_LOOKBACK_DAYS
from perpcarry.venues.orders import Side
from perpcarry.venues.protocol import MarketDataVenue
from perpcarry.venues.streams import StreamKind

if TYPE_CHECKING:
    from perpcarry.streams.session import HubSet

BPS = Decimal(10_000)
BOOK_KIND = {MarketKind.SPOT: StreamKind.SPOT_BOOK, MarketKind.PERP: StreamKind.PERP_BOOK}
STAMP_LAG = timedelta(minutes=1)


class MarketView:
    """Market data of one venue, each kind reused while younger than ``max_age``."""

    def __init__(self, client: MarketDataVenue, half_spread_bps: Decimal,
                 max_age: timedelta, clock: Callable[[], datetime]) -> None:
        self.client = client
        self.venue_id = client.venue_id
        self.half_spread_bps = half_spread_bps
        self.max_age = max_age
        self.clock = clock
        self._markets: dict[str, Market] | None = None
        self._funding: tuple[datetime, FundingSnapshot] | None = None
        self._books: dict[MarketKind, tuple[datetime, BookSnapshot | None]] = {}
        self._streams: tuple[HubSet, str, float] | None = None

    def use_streams(self, hubs: HubSet, venue_id: str, max_age: float) -> None:
        """Read ``venue_id``'s hub in ``hubs`` first: its values younger than ``max_age``
        seconds, from a live feed, replace the REST ones."""
        self._streams = (hubs, venue_id, max_age)

    def _streamed(self, kind: StreamKind, symbol: str):
        """The hub's fresh value of ``kind`` for ``symbol``, or None (no streams, not
        streamed, stale)."""
        if self._streams is None:
            return None
        hubs, venue_id, max_age = self._streams
        hub = hubs.get(venue_id)
        return hub.fresh(kind, symbol, max_age) if hub is not None else None

    async def markets(self) -> dict[str, Market]:
        if self._markets is None:
            self._markets = {m.symbol: m for m in await self.client.load_markets()}
        return self._markets

    def _fresh(self, fetched: datetime) -> bool:
        return self.clock() - fetched <= self.max_age

    async def funding(self) -> FundingSnapshot:
        """The venue's funding snapshot, each perp's mark replaced by a fresh streamed one
        where there is one."""
        if self._funding is None or not self._fresh(self._funding[0]):
            self._funding = (self.clock(), await self.client.fetch_funding_snapshot())
        snapshot = self._funding[1]
        hub = self._streams and self._streams[0].get(self._streams[1])
        if hub is None:
            return snapshot
        quotes = dict(snapshot.quotes)
        for symbol in {s for f in hub.feeds if StreamKind.MARK in f.kinds for s in f.symbols}:
            tick = self._streamed(StreamKind.MARK, symbol)
            if tick is not None and symbol in quotes:
                quotes[symbol] = dataclasses.replace(
                    quotes[symbol], mark_price=tick.mark_price,
                    index_price=tick.index_price or quotes[symbol].index_price)
        return dataclasses.replace(snapshot, quotes=quotes)

    async def book(self, kind: MarketKind) -> BookSnapshot | None:
        """The book tops of ``kind``; None when the venue cannot give them now (offline
        snapshots hold none): fills then use the mark."""
        cached = self._books.get(kind)
        if cached is None or not self._fresh(cached[0]):
            try:
                books: BookSnapshot | None = await self.client.fetch_book_tops(kind)
            except VenueError as err:
                logger.info("{}: no {} books, paper fills use the mark ({})", self.venue_id,
                            kind.value, err)
                books = None
            cached = self._books[kind] = (self.clock(), books)
        return cached[1]

    async def quote_of(self, market: Market) -> FundingQuote | None:
        """The funding quote carrying ``market``'s mark: its own for a perp, its perp's
        (same base, settled in the spot's quote) for a spot market."""
        quotes = (await self.funding()).quotes
        if market.kind is MarketKind.PERP:
            return quotes.get(market.symbol)
        return quotes.get(f"{market.base}/{market.quote}:{market.quote}")

    async def mark(self, market: Market) -> tuple[Decimal, str] | None:
        """``market``'s mark price and what it is; None when the data has none."""
        quote = await self.quote_of(market)
        if quote is None:
            return None
        # funding() took a fresh streamed mark (and index) where there was one: say so.
        tick = self._streamed(StreamKind.MARK, quote.symbol)
        streamed = "stream " if tick is not None else ""
        if market.kind is MarketKind.SPOT and quote.index_price is not None:
            index_streamed = tick is not None and tick.index_price is not None
            return quote.index_price, ("stream " if index_streamed else "") + "index"
        if quote.mark_price is None:
            return None
        return quote.mark_price, streamed + ("mark" if market.kind is MarketKind.PERP
                                             else "perp mark")

    async def fill_price(self, market: Market, side: Side) -> tuple[Decimal, str]:
        """Where a taker order of ``side`` fills now, on the market's tick, and its source."""
        top = self._streamed(BOOK_KIND[market.kind], market.symbol)
        name = "stream book"
        if top is None:
            books = await self.book(market.kind)
            top, name = books.books.get(market.symbol) if books else None, "book"
        # A venue lists a halted market with bid and ask 0: no book to fill at.
        if top is not None and top.bid > 0 and top.ask > 0:
            return (top.ask, f"{name} ask") if side is Side.BUY else (top.bid, f"{name} bid")
        marked = await self.mark(market)
        if marked is None:
            raise VenueError(self.venue_id, f"{market.symbol}: no book and no mark price to "
                             "fill a paper order at")
        mark, name = marked
        spread = mark * self.half_spread_bps / BPS
        bps = f"{self.half_spread_bps.normalize():f}bps"
        # Off the tick the way that costs the trader: buys up, sells down.
        if side is Side.BUY:
            price, source = mark + spread, f"{name}+{bps}"
            rounding = ROUND_CEILING
        else:
            price, source = mark - spread, f"{name}-{bps}"
            rounding = ROUND_FLOOR
        ticks = (price / market.price_tick).to_integral_value(rounding)
        return ticks * market.price_tick, source

    async def settlement(self, quote: FundingQuote, moment: datetime
                         ) -> tuple[Decimal, Decimal] | None:
        """The rate settled at ``moment`` and the mark it applies to; None when the data
        does not say (yet)."""
        settling_now = moment == quote.next_funding_time and quote.is_predicted
        just_settled = moment == quote.last_settlement and not quote.is_predicted
        if settling_now or just_settled:
            return None if quote.mark_price is None else (quote.rate, quote.mark_price)
        # The window every scan reads (ending at the last settlement), so the venue's
        # history cache, or an offline snapshot, answers it.
        end = quote.last_settlement
        start = min(moment, end - timedelta(days=HISTORY_LOOKBACK_DAYS))
        try:
            records = await self.client.fetch_funding_history(quote.symbol, start, end)
        except VenueError as err:
            logger.info("{}: funding of {} at {} unknown: {}", self.venue_id, quote.symbol,
                        moment, err)
            return None
        # Venues stamp a settlement a few milliseconds after the hour (Binance: ...007).
        record = next((r for r in records if abs(r.funding_time - moment) < STAMP_LAG), None)
        if record is None:
            return None
        mark = record.mark_price if record.mark_price is not None else quote.mark_price
        return None if mark is None else (record.rate, mark)


def settlement_times(quote: FundingQuote, after: datetime, until: datetime) -> list[datetime]:
    """The settlements of ``quote``'s perp in (after, until], on the grid its next funding
    time and interval define."""
    interval = timedelta(hours=quote.interval_hours)
    steps = (after - quote.next_funding_time) // interval + 1
    moment = quote.next_funding_time + steps * interval
    times = []
    while moment <= until:
        times.append(moment)
        moment += interval
    return times
