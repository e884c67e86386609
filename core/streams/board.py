"""What ``perpcarry watch`` shows: per carry pair and venue, the predicted funding rate, the
next funding time, the perp's mark, the spot book, the basis and the spread, updated from
every value a :class:`~perpcarry.streams.hub.StreamHub` accepts (pushed or polled)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from perpcarry.domain.types import CarryPair
from perpcarry.venues.streams import BookTick, FundingTick, MarkTick, StreamKind, StreamUpdate

BPS = Decimal(10_000)


@dataclass
class PairRow:
    """One pair on one venue; a value is None until a stream or REST has given it."""

    venue: str
    base: str
    pair: CarryPair
    rate: Decimal | None = None  # predicted rate of the coming settlement, per period
    next_funding_time: datetime | None = None
    mark: Decimal | None = None
    spot_bid: Decimal | None = None
    spot_ask: Decimal | None = None
    source: str = "waiting"  # where the last value came from: stream | rest
    updated: datetime | None = None

    @property
    def spot_mid(self) -> Decimal | None:
        if self.spot_bid is None or self.spot_ask is None:
            return None
        return (self.spot_bid + self.spot_ask) / 2

    @property
    def basis(self) -> Decimal | None:
        """Perp mark over spot mid, minus one: what an entry earns (or pays) at once."""
        mid = self.spot_mid
        return None if mid is None or self.mark is None else self.mark / mid - 1

    @property
    def spread_bps(self) -> Decimal | None:
        """The spot book's spread over its mid, in basis points."""
        mid = self.spot_mid
        return None if mid is None else (self.spot_ask - self.spot_bid) / mid * BPS

    def as_dict(self) -> dict:
        def text(value):
            return None if value is None else f"{value:f}"

        return {"venue": self.venue, "base": self.base, "perp": self.pair.perp.symbol,
                "spot": self.pair.spot.symbol, "rate": text(self.rate),
                "next_funding_time": self.next_funding_time.isoformat()
                if self.next_funding_time else None,
                "mark": text(self.mark), "spot_bid": text(self.spot_bid),
                "spot_ask": text(self.spot_ask),
                "basis": text(None if self.basis is None else round(self.basis, 8)),
                "spread_bps": text(None if self.spread_bps is None
                                   else round(self.spread_bps, 4)),
                "source": self.source,
                "updated": self.updated.isoformat() if self.updated else None}


class Board:
    """The rows of every watched pair, by venue and market symbol."""

    def __init__(self, pairs: dict[str, list[CarryPair]]) -> None:
        self.rows: dict[tuple[str, str], PairRow] = {}
        self._by_symbol: dict[tuple[str, str], PairRow] = {}
        for venue, venue_pairs in pairs.items():
            for pair in venue_pairs:
                row = PairRow(venue, pair.spot.base, pair)
                self.rows[(venue, pair.spot.base)] = row
                self._by_symbol[(venue, pair.perp.symbol)] = row
                self._by_symbol[(venue, pair.spot.symbol)] = row

    def apply(self, venue: str, update: StreamUpdate, source: str) -> PairRow | None:
        """Fold ``update`` into its pair's row; the row, or None when no watched pair has
        that market (a bulk REST poll answers for every market of the venue)."""
        row = self._by_symbol.get((venue, update.symbol))
        if row is None:
            return None
        if isinstance(update, MarkTick):
            row.mark = update.mark_price
        elif isinstance(update, FundingTick):
            row.rate, row.next_funding_time = update.rate, update.next_funding_time
        elif isinstance(update, BookTick) and update.kind is StreamKind.SPOT_BOOK:
            row.spot_bid, row.spot_ask = update.bid, update.ask
        else:
            return None  # a perp book: not a column of the board
        row.source, row.updated = source, update.at
        return row
