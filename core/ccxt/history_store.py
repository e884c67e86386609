"""Local SQLite cache of settled funding, so a second request fetches only what is new."""

from __future__ import annotations

import sqlite3
from bisect import bisect_left, bisect_right
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from perpcarry.domain.parsing import from_ms, to_ms
from perpcarry.domain.types import FundingRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS funding (
    venue TEXT NOT NULL, symbol TEXT NOT NULL, funding_time_ms INTEGER NOT NULL,
    rate TEXT NOT NULL, mark_price TEXT,
    PRIMARY KEY (venue, symbol, funding_time_ms)
);
-- The span each symbol has been fetched over; a span with no settlement is still known.
CREATE TABLE IF NOT EXISTS coverage (
    venue TEXT NOT NULL, symbol TEXT NOT NULL, start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL, PRIMARY KEY (venue, symbol)
);
"""


class FundingHistoryStore:
    """Settled funding by venue and symbol in SQLite at ``path``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        # A cache: losing the last commits on power loss only means fetching them again,
        # so commits need not wait for the disk.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def missing_spans(
        self, venue: str, symbol: str, start_ms: int, end_ms: int
    ) -> list[tuple[int, int]]:
        """The parts of [start_ms, end_ms] not fetched yet."""
        row = self._db.execute(
            "SELECT start_ms, end_ms FROM coverage WHERE venue=? AND symbol=?", (venue, symbol)
        ).fetchone()
        if row is None or row[0] > end_ms or row[1] < start_ms:
            return [(start_ms, end_ms)]
        spans = []
        if start_ms < row[0]:
            spans.append((start_ms, row[0] - 1))
        if end_ms > row[1]:
            spans.append((row[1] + 1, end_ms))
        return spans

    def add(
        self, venue: str, symbol: str, records: list[FundingRecord], start_ms: int, end_ms: int
    ) -> None:
        """Store ``records`` fetched for [start_ms, end_ms] and extend the covered span."""
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO funding VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        venue,
                        symbol,
                        to_ms(r.funding_time),
                        str(r.rate),
                        None if r.mark_price is None else str(r.mark_price),
                    )
                    for r in records
                ],
            )
            row = self._db.execute(
                "SELECT start_ms, end_ms FROM coverage WHERE venue=? AND symbol=?", (venue, symbol)
            ).fetchone()
            if row is not None and row[0] <= end_ms + 1 and row[1] >= start_ms - 1:
                start_ms, end_ms = min(start_ms, row[0]), max(end_ms, row[1])
            self._db.execute(
                "INSERT OR REPLACE INTO coverage VALUES (?, ?, ?, ?)",
                (venue, symbol, start_ms, end_ms),
            )

    def records(self, venue: str, symbol: str, start_ms: int, end_ms: int) -> list[FundingRecord]:
        rows = self._db.execute(_RECORDS, (venue, symbol, start_ms, end_ms)).fetchall()
        return _records(venue, symbol, rows)


_RECORDS = (
    "SELECT funding_time_ms, rate, mark_price FROM funding WHERE venue=? AND symbol=? "
    "AND funding_time_ms BETWEEN ? AND ? ORDER BY funding_time_ms"
)


def _records(venue: str, symbol: str, rows: list[tuple]) -> list[FundingRecord]:
    return [
        FundingRecord(
            venue, symbol, from_ms(t), Decimal(rate), None if mark is None else Decimal(mark)
        )
        for t, rate, mark in rows
    ]


@dataclass(frozen=True)
class CachedTail:
    """The newest part of one symbol's cached history, read ahead of need."""

    read_from_ms: int
    covered_end_ms: int
    times_ms: list[int]
    records: list[FundingRecord]

    def window(self, start_ms: int, end_ms: int) -> list[FundingRecord] | None:
        """The records in [start_ms, end_ms]; None unless all of it was fetched and read."""
        if start_ms < self.read_from_ms or end_ms > self.covered_end_ms:
            return None
        return self.records[bisect_left(self.times_ms, start_ms):
                            bisect_right(self.times_ms, end_ms)]


def read_tails(
    path: Path, venue: str, symbols: Collection[str], span_ms: int
) -> dict[str, CachedTail]:
    """The newest ``span_ms`` of what is cached for each of ``symbols`` (those with any), on
    a read-only connection of its own, so that it can run in a worker thread while the
    event loop waits on the network."""
    if not path.is_file():
        return {}
    db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        tails = {}
        coverage = db.execute(
            "SELECT symbol, start_ms, end_ms FROM coverage WHERE venue=?", (venue,)
        ).fetchall()
        for symbol, start_ms, end_ms in coverage:
            if symbol not in symbols:
                continue
            read_from = max(start_ms, end_ms - span_ms)
            rows = db.execute(_RECORDS, (venue, symbol, read_from, end_ms)).fetchall()
            tails[symbol] = CachedTail(read_from, end_ms, [row[0] for row in rows],
                                       _records(venue, symbol, rows))
        return tails
    finally:
        db.close()
