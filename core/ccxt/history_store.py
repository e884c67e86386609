"""Local SQLite cache of settled funding, so a second request fetches only what is new.

Several processes may share the file: the schema is created in one transaction, every write
is a transaction that waits for the others (busy timeout), and a reader that finds the file
not set up yet reads it as empty. A file that cannot be used raises ``UnusableCache``
naming it; the caller fetches from the venue instead.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from itertools import chain
from pathlib import Path

from perpcarry.ccxt.cache_warnings import blocking_path
from perpcarry.domain.parsing import from_ms, to_ms
from perpcarry.domain.types import FundingRecord

# Writes are short; a process waits this long for another one's write before giving up
# on the cache for the run.
BUSY_TIMEOUT_SECONDS = 30.0

_SCHEMA = """
BEGIN IMMEDIATE;
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
COMMIT;
"""


# Rows per INSERT statement: SQLite runs a statement without holding the GIL, and one
# statement per row (executemany) would pass the GIL back and forth with the event loop's
# thread thousands of times on a cold scan. Venue and symbol + 332 rows x 3 values stay
# under 999, the smallest limit on parameters any SQLite has had.
_ROWS_PER_INSERT = 332


@functools.lru_cache(maxsize=64)
def _insert(rows: int) -> str:
    """Rows of one symbol: venue and symbol bound once (?1, ?2), then the time, rate and
    mark of each row (an unnumbered ``?`` counts on from 3). Binding and flattening two
    values fewer per row is most of what the store's thread does with the GIL held."""
    return ("INSERT OR REPLACE INTO funding SELECT ?1, ?2, column1, column2, column3 FROM "
            "(VALUES " + ", ".join(["(?, ?, ?)"] * rows) + ")")


# What was fetched of one symbol: (symbol, records, start_ms, end_ms), the span asked.
Fetched = tuple[str, list[FundingRecord], int, int]


class UnusableCache(Exception):
    """The file at ``path`` cannot serve as the cache (``problem`` says why). Never reaches
    a user: the venue reports it as a warning and fetches from the venue instead."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class _BadValue(ValueError):
    """A value in the file that this module never writes."""


@contextmanager
def _usable(path: Path) -> Iterator[None]:
    """Any SQLite failure or foreign value while using the file at ``path`` as a
    ``UnusableCache`` naming it."""
    try:
        yield
    except (sqlite3.Error, _BadValue) as err:
        raise UnusableCache(path, str(err)) from None


def _set_wal(db: sqlite3.Connection) -> None:
    """WAL mode, waiting out another connection's brief hold on the file: switching the
    journal mode does not go through SQLite's busy handler, so a reader that has just
    opened the (new) file makes it fail at once."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class FundingHistoryStore:
    """Settled funding by venue and symbol in SQLite at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Used from the venue's history thread (one call at a time), opened wherever.
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS,
                                       check_same_thread=False)
        except (OSError, sqlite3.Error) as err:
            # A directory that cannot be created or written, or one where the file should be.
            raise UnusableCache(blocking_path(path),
                             getattr(err, "strerror", None) or str(err)) from None
        try:
            with _usable(path):
                # A cache: losing the last commits on power loss only means fetching them
                # again, so commits need not wait for the disk.
                _set_wal(self._db)
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
        except UnusableCache:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def missing_spans(
        self, venue: str, symbol: str, start_ms: int, end_ms: int
    ) -> list[tuple[int, int]]:
        """The parts of [start_ms, end_ms] not fetched yet."""
        with _usable(self.path):
            row = self._coverage(venue, symbol)
        if row is None or row[0] > end_ms or row[1] < start_ms:
            return [(start_ms, end_ms)]
        spans = []
        if start_ms < row[0]:
            spans.append((start_ms, row[0] - 1))
        if end_ms > row[1]:
            spans.append((row[1] + 1, end_ms))
        return spans

    def _coverage(self, venue: str, symbol: str) -> tuple[int, int] | None:
        row = self._db.execute(
            "SELECT start_ms, end_ms FROM coverage WHERE venue=? AND symbol=?", (venue, symbol)
        ).fetchone()
        return None if row is None else _span(symbol, *row)

    def add(
        self, venue: str, symbol: str, records: list[FundingRecord], start_ms: int, end_ms: int
    ) -> None:
        """Store ``records`` fetched for [start_ms, end_ms] and extend the covered span."""
        self.add_all(venue, [(symbol, records, start_ms, end_ms)])

    def add_all(self, venue: str, fetched: Collection[Fetched]) -> None:
        """:meth:`add` for several symbols in one transaction: on a cold scan a commit per
        symbol (~100 of them, ~100 rows each) cost a third more than the rows."""
        with _usable(self.path), self._db:
            # Take the write lock first: the coverage reads below then see the latest
            # spans even when another process is writing too.
            self._db.execute("BEGIN IMMEDIATE")
            step = _ROWS_PER_INSERT * 3
            for symbol, records, _, _ in fetched:
                values = list(chain.from_iterable([
                    (to_ms(funding_time), str(rate),
                     None if mark_price is None else str(mark_price))
                    for _, _, funding_time, rate, mark_price in records]))
                for first in range(0, len(values), step):
                    chunk = values[first:first + step]
                    self._db.execute(_insert(len(chunk) // 3), [venue, symbol, *chunk])
            for symbol, _, start_ms, end_ms in fetched:
                row = self._coverage(venue, symbol)
                if row is not None and row[0] <= end_ms + 1 and row[1] >= start_ms - 1:
                    start_ms, end_ms = min(start_ms, row[0]), max(end_ms, row[1])
                self._db.execute(
                    "INSERT OR REPLACE INTO coverage VALUES (?, ?, ?, ?)",
                    (venue, symbol, start_ms, end_ms),
                )

    def records(self, venue: str, symbol: str, start_ms: int, end_ms: int) -> list[FundingRecord]:
        with _usable(self.path):
            rows = self._db.execute(_RECORDS, (venue, symbol, start_ms, end_ms)).fetchall()
            return _records(venue, symbol, rows)


# A settlement time that is not an integer is selected too, to be rejected: compared as
# SQLite compares mixed types, it would fall outside the window and go missing unnoticed.
_RECORDS = (
    "SELECT funding_time_ms, rate, mark_price FROM funding WHERE venue=? AND symbol=? "
    "AND (funding_time_ms BETWEEN ? AND ? OR typeof(funding_time_ms) != 'integer') "
    "ORDER BY funding_time_ms"
)


def _int(value: object, what: str) -> int:
    if type(value) is not int:
        raise _BadValue(f"{what} holds {value!r}, not an integer")
    return value


def _decimal(value: object, what: str) -> Decimal:
    try:
        number = Decimal(value) if type(value) is str else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise _BadValue(f"{what} holds {value!r}, not a decimal number")
    return number


def _span(symbol: str, start_ms: object, end_ms: object) -> tuple[int, int]:
    return (_int(start_ms, f"the coverage of {symbol}"),
            _int(end_ms, f"the coverage of {symbol}"))


def _records(venue: str, symbol: str, rows: list[tuple]) -> list[FundingRecord]:
    what = f"the funding history of {symbol}"
    return [
        FundingRecord(
            venue, symbol, from_ms(_int(t, what)), _decimal(rate, what),
            None if mark is None else _decimal(mark, what),
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
    event loop waits on the network. A file that another process has created but not set
    up yet holds nothing."""
    if not path.is_file():
        return {}
    with _usable(path):
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True,
                             timeout=BUSY_TIMEOUT_SECONDS)
        try:
            tables = {name for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"funding", "coverage"} <= tables:
                return {}
            tails = {}
            coverage = db.execute(
                "SELECT symbol, start_ms, end_ms FROM coverage WHERE venue=?", (venue,)
            ).fetchall()
            for symbol, start, end in coverage:
                if symbol not in symbols:
                    continue
                start_ms, end_ms = _span(symbol, start, end)
                read_from = max(start_ms, end_ms - span_ms)
                rows = db.execute(_RECORDS, (venue, symbol, read_from, end_ms)).fetchall()
                tails[symbol] = CachedTail(read_from, end_ms, [row[0] for row in rows],
                                           _records(venue, symbol, rows))
            return tails
        finally:
            db.close()
