"""The REST side of the streams: what a venue's market-data client answers for each
stream kind, as the same updates a stream pushes."""

from __future__ import annotations

from collections.abc import Iterable

from perpcarry.domain.errors import PerpcarryError, VenueError
from perpcarry.domain.types import MarketKind
from perpcarry.venues.protocol import MarketDataVenue
from perpcarry.venues.streams import BookTick, FundingTick, MarkTick, StreamKind, StreamUpdate

BOOK_KINDS = {StreamKind.SPOT_BOOK: MarketKind.SPOT, StreamKind.PERP_BOOK: MarketKind.PERP}


async def rest_updates(venue: MarketDataVenue, kinds: Iterable[StreamKind]
                       ) -> tuple[list[StreamUpdate], dict[str, str]]:
    """Poll ``venue`` for ``kinds``: one funding snapshot for marks and funding, one book
    request per book kind (the bulk endpoints the scan uses). Returns the updates and, per
    request that failed, why (the others still count). A quote without a mark is no mark
    update (never a zero). Account kinds are read by the session's reconciliation."""
    kinds = set(kinds)
    updates: list[StreamUpdate] = []
    failures: dict[str, str] = {}
    if kinds & {StreamKind.MARK, StreamKind.FUNDING}:
        try:
            snapshot = await venue.fetch_funding_snapshot()
        except (VenueError, PerpcarryError) as err:
            failures["funding"] = str(err)
        else:
            for quote in snapshot.quotes.values():
                if StreamKind.MARK in kinds and quote.mark_price is not None:
                    updates.append(MarkTick(quote.symbol, quote.timestamp, quote.mark_price,
                                            quote.index_price))
                if StreamKind.FUNDING in kinds:
                    updates.append(FundingTick(quote.symbol, quote.timestamp, quote.rate,
                                               quote.next_funding_time))
    for kind, market in BOOK_KINDS.items():
        if kind in kinds:
            try:
                books = await venue.fetch_book_tops(market)
            except (VenueError, PerpcarryError) as err:
                failures[kind.value] = str(err)
                continue
            updates += [BookTick(b.symbol, b.timestamp, b.bid, b.ask, kind)
                        for b in books.books.values()]
    return updates, failures
