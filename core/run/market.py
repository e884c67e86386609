"""What the run loop sees of the market each cycle: one row per carry pair it may trade.

A :class:`MarketSnapshot` holds the pairs (venue, base) with what the shared rules
(:mod:`perpcarry.strategy.rules`) read of each, as arrays, and what the loop needs to trade
them (the :class:`CarryPair`, a price to size with, the FMZ entry order). Two sources make
it: :class:`ScanMarket`, live or offline, is a scan (the same gathering and money math as
``perpcarry scan``) over the session's own clients; the replay's source reads the bundled
history at the simulated time (:mod:`perpcarry.run.replay`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

import numpy as np

from perpcarry.config.loader import Config
from perpcarry.domain.types import CarryPair
from perpcarry.scan.engine import CarryYield, ScanOptions, gather_from, scan_result
from perpcarry.strategy.rules import PairState
from perpcarry.venues.protocol import MarketDataVenue

HOUR = 3600.0


def hours(moment: datetime) -> float:
    """The rules' clock: hours since the epoch."""
    return moment.timestamp() / HOUR


@dataclass(frozen=True)
class Candidate:
    """One carry pair this cycle."""

    venue: str
    base: str
    pair: CarryPair
    price: Decimal | None  # the perp's mark: what orders are sized with; None: not priced
    rate: float  # the current funding rate per period
    premium: float | None  # perp over spot - 1, where known
    net_apr: float  # what the rules read: the expected APR at entry (nan: unknown)

    @property
    def key(self) -> tuple[str, str]:
        return self.venue, self.base

    @property
    def entry_rank(self) -> float:
        """FMZ's entry order: the highest current rate plus entry premium first."""
        return self.rate + (self.premium or 0.0)


@dataclass
class MarketSnapshot:
    now: datetime
    candidates: list[Candidate]
    pairs: PairState
    failures: dict[str, str] = field(default_factory=dict)  # venue -> why it is missing
    notes: list[str] = field(default_factory=list)
    scan: dict | None = None  # the ``scan --json`` document it came from (None: a replay)

    def index(self) -> dict[tuple[str, str], int]:
        return {c.key: i for i, c in enumerate(self.candidates)}


class MarketSource(Protocol):
    """Where a cycle's market data come from."""

    async def snapshot(self, now: datetime) -> MarketSnapshot: ...


def _float(value: Decimal | float | None) -> float:
    return math.nan if value is None else float(value)


class ScanMarket:
    """A scan of the session's venues each cycle, evaluated with the strategy's estimator,
    window and horizon. Every evaluated pair is a row, the reverse-funding ones too: a held
    pair whose funding turned negative must be seen to be left."""

    def __init__(self, config: Config, clients: dict[str, MarketDataVenue],
                 options: ScanOptions) -> None:
        options.validate()
        self.config = config
        self.clients = clients
        self.options = options

    async def snapshot(self, now: datetime) -> MarketSnapshot:
        data, failures = await gather_from(self.config, self.clients, self.options,
                                           lambda venue, stage: None)
        result = scan_result(data, failures, self.options)
        rows = [*result.candidates, *result.reverse_rows]
        # Offline, each venue's bundled snapshot is read as if it were captured now: the
        # time left to a pair's next settlement is the one it had at the capture.
        shift = ({v: now - t for v, t in result.snapshot_times.items()}
                 if self.options.offline else {})
        from perpcarry.cli.scan import result_to_json

        return MarketSnapshot(now, [_candidate(row) for row in rows], _pair_state(rows, shift),
                              dict(failures), list(result.notes),
                              result_to_json(result, self.options))


def _candidate(row: CarryYield) -> Candidate:
    return Candidate(row.venue, row.pair.base, row.pair, row.quote.mark_price,
                     float(row.quote.rate), row.entry_premium, _float(row.net_apr))


def _pair_state(rows: list[CarryYield], shift: dict[str, timedelta]) -> PairState:
    def spot(row: CarryYield) -> float:
        if row.spot_book is not None:
            return float((row.spot_book.bid + row.spot_book.ask) / 2)
        return _float(row.quote.index_price)

    return PairState(
        net_apr=np.array([_float(r.net_apr) for r in rows]),
        rate=np.array([float(r.quote.rate) for r in rows]),
        mark=np.array([_float(r.quote.mark_price) for r in rows]),
        spot=np.array([spot(r) for r in rows]),
        live=np.ones(len(rows), dtype=bool),
        next_settlement_hours=np.array([
            hours(r.quote.next_funding_time + shift.get(r.venue, timedelta(0)))
            if r.quote.next_funding_time else math.inf for r in rows]),
    )
