"""A venue's market data replayed from recorded history, as known at a simulated instant.

:class:`HistoryMarketData` satisfies :class:`perpcarry.venues.protocol.MarketDataVenue`,
so the real :class:`perpcarry.paper.PaperVenue` (through its ``MarketView``) and the run
loop read it as they read a live venue. At the clock's ``now`` a perp's funding quote is the
newest settlement in the history at or before ``now``: its rate (settled, not predicted),
the perp's mark and the spot price recorded with it, and the next settlement one interval
later. Nothing from after ``now`` is ever returned, and nothing is made up: a series with no
settlement where the next one was due (a gap, or the end of the data) has no quote then,
and says so in the snapshot's ``skipped``.

The markets are the venue's real definitions (steps, minimums, maximums) from its bundled
offline snapshot, restricted to the perps in the history and their spot legs; a perp in the
history that the snapshot does not list is left out with a reason. History records no order
books, so ``fetch_book_tops`` has none and paper fills take the mark plus or minus the
configured half-spread, labelled as such by the paper venue.

Each series is indexed once into a sorted int64 array of settlement times with its records
built beside it, so a read at any instant is one binary search, not a scan of the frame.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import polars as pl

from perpcarry.domain.errors import BadSymbol
from perpcarry.domain.types import (
    BookSnapshot,
    FeeSchedule,
    FundingQuote,
    FundingRecord,
    FundingSnapshot,
    Market,
    MarketKind,
    Skipped,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
NO_BOOK = "the replayed history holds no order books: fills use the mark and half-spread"


def to_micros(moment: datetime) -> int:
    """``moment`` as epoch microseconds, exactly (the history's time unit)."""
    return (moment - EPOCH) // MICROSECOND


def _decimal(value: float | None) -> Decimal | None:
    # The shortest repr of the stored float: the decimal the dataset published.
    return None if value is None else Decimal(str(value))


@dataclass(frozen=True, slots=True)
class _Series:
    """One perp's settlements, sorted by time, with what was recorded at each."""

    times: np.ndarray  # int64 epoch microseconds
    records: list[FundingRecord]  # rate and perp mark at each settlement
    spot_prices: list[Decimal | None]
    intervals: list[int]  # hours until the next settlement

    def latest(self, now: int) -> int:
        """Index of the newest settlement at or before ``now``; -1 when none is."""
        return int(np.searchsorted(self.times, now, side="right")) - 1

    def between(self, start: datetime, end: datetime) -> list[FundingRecord]:
        """The settlements in [start, end]."""
        low = int(np.searchsorted(self.times, to_micros(start), side="left"))
        high = int(np.searchsorted(self.times, to_micros(end), side="right"))
        return self.records[low:high]


def _index(venue_id: str, symbol: str, rows: pl.DataFrame) -> _Series | str:
    """The series of one perp, or why it cannot be replayed."""
    rows = rows.sort("time")
    if rows["rate"].null_count():
        return "a settlement in the history has no rate"
    hours = rows["interval_hours"].to_list()
    if any(h is None or h <= 0 or h != int(h) for h in hours):
        return "a settlement interval in the history is not a whole number of hours"
    times = rows["time"].to_list()
    records = [FundingRecord(venue_id, symbol, time, Decimal(str(rate)), _decimal(mark))
               for time, rate, mark in zip(times, rows["rate"].to_list(),
                                           rows["mark_price"].to_list(), strict=True)]
    micros = rows["time"].dt.epoch("us").to_numpy().astype(np.int64)
    return _Series(micros, records, [_decimal(p) for p in rows["spot_price"].to_list()],
                   [int(h) for h in hours])


class HistoryMarketData:
    """The market data of ``venue_id`` replayed from ``history`` at ``clock()``.

    ``history`` is a ``perpcarry.backtest.history.HISTORY_SCHEMA`` frame (rows of other
    venues are ignored); ``markets`` the venue's market definitions from its offline
    snapshot. ``skipped`` lists the history's symbols (and missing spot legs) that cannot be
    replayed, each with its reason.
    """

    def __init__(self, venue_id: str, history: pl.DataFrame, markets: list[Market],
                 clock: Callable[[], datetime]) -> None:
        self.venue_id = venue_id
        self.clock = clock
        rows = history.filter(pl.col("venue") == venue_id)
        perps = {m.symbol: m for m in markets if m.kind is MarketKind.PERP}
        skipped: list[Skipped] = []
        self._series: dict[str, _Series] = {}
        for (symbol,), series_rows in rows.group_by("symbol", maintain_order=True):
            if symbol not in perps:
                skipped.append(Skipped(venue_id, symbol, f"not listed in {venue_id}'s market "
                                       "snapshot: left out of the replay"))
                continue
            series = _index(venue_id, symbol, series_rows)
            if isinstance(series, str):
                skipped.append(Skipped(venue_id, symbol, series))
            else:
                self._series[symbol] = series
        kept = [perps[symbol] for symbol in sorted(self._series)]
        spots = {(m.base, m.quote): m for m in markets if m.kind is MarketKind.SPOT}
        legs = []
        for perp in kept:
            spot = spots.get((perp.base, perp.settle))
            if spot is None:
                skipped.append(Skipped(venue_id, f"{perp.base}/{perp.settle}", "no spot "
                                       f"market in the snapshot: {perp.symbol} is replayed "
                                       "without its spot leg"))
            else:
                legs.append(spot)
        self._markets = kept + legs
        self.skipped: tuple[Skipped, ...] = tuple(skipped)
        self._snapshot: tuple[datetime, FundingSnapshot] | None = None

    def settlement_times(self, start: datetime, end: datetime) -> list[datetime]:
        """Every replayed series' settlements in [start, end], the steps of a replay."""
        times = []
        for series in self._series.values():
            times.extend(record.funding_time for record in series.between(start, end))
        return times

    async def load_markets(self) -> list[Market]:
        return list(self._markets)

    def quote_at(self, symbol: str, now: datetime) -> FundingQuote | str:
        """``symbol``'s funding quote as known at ``now``, or why there is none."""
        series = self._series[symbol]
        i = series.latest(to_micros(now))
        if i < 0:
            return f"the history starts at {series.records[0].funding_time:%Y-%m-%d %H:%M}"
        record = series.records[i]
        due = record.funding_time + timedelta(hours=series.intervals[i])
        if now >= due:
            return (f"no settlement in the history at {due:%Y-%m-%d %H:%M} (a gap, or the "
                    "end of the data)")
        return FundingQuote(
            venue=self.venue_id, symbol=symbol, rate=record.rate,
            interval_hours=series.intervals[i], next_funding_time=due,
            mark_price=record.mark_price, index_price=series.spot_prices[i],
            is_predicted=False, rate_cap=None, rate_floor=None,
            timestamp=record.funding_time)

    async def fetch_funding_snapshot(self) -> FundingSnapshot:
        """Every replayed perp's quote at ``clock()``; built once per instant."""
        now = self.clock()
        if self._snapshot is not None and self._snapshot[0] == now:
            return self._snapshot[1]
        quotes: dict[str, FundingQuote] = {}
        skipped = list(self.skipped)
        for symbol in self._series:
            quote = self.quote_at(symbol, now)
            if isinstance(quote, str):
                skipped.append(Skipped(self.venue_id, symbol, quote))
            else:
                quotes[symbol] = quote
        snapshot = FundingSnapshot(self.venue_id, quotes, tuple(skipped))
        self._snapshot = (now, snapshot)
        return snapshot

    async def fetch_book_tops(self, kind: MarketKind) -> BookSnapshot:
        """No books: every market of ``kind`` is skipped with the reason."""
        return BookSnapshot(self.venue_id, kind, {}, tuple(
            Skipped(self.venue_id, m.symbol, NO_BOOK) for m in self._markets
            if m.kind is kind))

    def prefetch_funding_history(self, symbols: Collection[str], span: timedelta) -> None:
        """Nothing to prefetch: the history is in memory."""

    async def flush_funding_history(self) -> None:
        """Nothing to write: the history is in memory."""

    async def fetch_funding_history(self, symbol: str, start: datetime, end: datetime
                                    ) -> list[FundingRecord]:
        """Settlements of ``symbol`` in [start, end], cut at ``clock()``."""
        series = self._series.get(symbol)
        if series is None:
            raise BadSymbol(self.venue_id, f"{symbol}: not in the replayed history")
        return series.between(start, min(end, self.clock()))

    async def fetch_fee_schedule(self) -> FeeSchedule | None:
        """A replay has no account: the venue's fee model uses its table or the config."""
        return None

    async def close(self) -> None:
        """Nothing is held open."""
