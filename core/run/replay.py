"""``perpcarry run --paper --replay START..END``: the run loop over real history.

The same :class:`~perpcarry.run.loop.CarryLoop`, executor, journal, risk monitor and ledger
as a live run, with a simulated clock stepping through the data's own times (the backtest's
rebalance grid): the paper venues read their prices and funding settlements from the
bundled history (:mod:`perpcarry.replay`), the market snapshot each cycle is the history as
known at the simulated time, evaluated by the backtest's per-settlement money math. Fills
are at the recorded mark plus the paper half-spread, labelled as such.

A replay keeps its own journal and paper accounts under ``<data_dir>/replay/`` (started
afresh each time), so it never touches the paper account of ``run --paper``;
``perpcarry pnl --replay`` and ``perpcarry dashboard --replay`` read it.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
from loguru import logger

from perpcarry.backtest.facts import pair_state, settlement_facts
from perpcarry.backtest.panel import Panel
from perpcarry.domain.errors import LocalStateError, UsageError
from perpcarry.execution.journal import Journal
from perpcarry.risk.report import RiskReport
from perpcarry.run.loop import CarryLoop
from perpcarry.run.market import Candidate, MarketSnapshot
from perpcarry.run.report import Action, CycleReport
from perpcarry.strategy.rules import Facts, PairState
from perpcarry.venues.protocol import carry_pairs

# The journal flag a finished replay leaves (ReplayRecord).
REPLAY_FLAG = "replay"


def parse_span(text: str) -> tuple[datetime, datetime]:
    """``YYYY-MM-DD..YYYY-MM-DD`` as UTC instants; one line naming the problem otherwise."""
    parts = text.split("..")
    if len(parts) != 2 or not all(parts):
        raise UsageError(f"--replay: expected START..END (e.g. 2023-01-01..2024-07-01), got "
                         f"{text!r}")
    moments = []
    for part in parts:
        try:
            moments.append(datetime.strptime(part.strip(), "%Y-%m-%d").replace(tzinfo=UTC))
        except ValueError:
            raise UsageError(f"--replay: {part!r} is not a date (YYYY-MM-DD)") from None
    start, end = moments
    if end <= start:
        raise UsageError(f"--replay: the end ({parts[1]}) must come after the start "
                         f"({parts[0]})")
    return start, end


class ReplayMarket:
    """The market snapshot at the simulated time: for each replayed series, the settlement
    in force then (never a later one) with the backtest's facts of it (net APR of the
    estimator's funding known then, rate, prices, next settlement)."""

    def __init__(self, panel: Panel, facts: Facts, candidates: dict[int, Candidate]) -> None:
        self.panel = panel
        self.facts = facts
        self.series = np.array(sorted(candidates), dtype=np.int64)
        self.candidates = candidates
        self.last: MarketSnapshot | None = None
        self._row = {int(t): i for i, t in enumerate(panel.times.astype("datetime64[us]")
                                                     .astype(np.int64))}

    def row(self, now: datetime) -> int:
        row = self._row.get(round(now.timestamp() * 1_000_000))
        if row is None:
            raise UsageError(f"replay: {now:%Y-%m-%d %H:%M} is not a time of the data")
        return row

    async def snapshot(self, now: datetime) -> MarketSnapshot:
        state = pair_state(self.panel, self.facts, self.row(now))
        pairs = PairState(**{f.name: getattr(state, f.name)[self.series]
                             for f in fields(PairState)})
        candidates = []
        for k, s in enumerate(self.series):
            c = self.candidates[int(s)]
            mark, spot, rate = pairs.mark[k], pairs.spot[k], pairs.rate[k]
            price = Decimal(repr(float(mark))) if math.isfinite(mark) else None
            premium = float(mark / spot - 1) if math.isfinite(mark / spot) else None
            candidates.append(Candidate(c.venue, c.base, c.pair, price,
                                        float(rate) if math.isfinite(rate) else 0.0, premium,
                                        float(pairs.net_apr[k])))
        self.last = MarketSnapshot(now, candidates, pairs)
        return self.last


def replay_journal(data_dir: Path) -> Path:
    """The journal of the last replay (``--replay`` of ``pnl``, ``positions``, ...)."""
    return data_dir / "replay" / "journal.sqlite"


@dataclass(frozen=True)
class ReplayRecord:
    """What a finished replay leaves in its journal for the commands that read it: its span
    and the last recorded prices (to mark what it still holds)."""

    start: datetime
    end: datetime
    marks: dict[tuple[str, str], Decimal]

    def dump(self) -> str:
        return json.dumps({"start": self.start.isoformat(), "end": self.end.isoformat(),
                           "marks": [[v, s, str(p)] for (v, s), p in self.marks.items()]})

    @classmethod
    def load(cls, text: str) -> ReplayRecord:
        data = json.loads(text)
        return cls(datetime.fromisoformat(data["start"]), datetime.fromisoformat(data["end"]),
                   {(v, s): Decimal(p) for v, s, p in data["marks"]})


@contextmanager
def open_replay_journal(data_dir: Path) -> Iterator[tuple[Journal, ReplayRecord]]:
    """The last replay's journal (read-only use) and its record; one line when there is
    none, or when the replay did not finish."""
    path = replay_journal(data_dir)
    if not path.is_file():
        raise UsageError(f"--replay: no replay in {path.parent} yet: run `perpcarry run "
                         "--paper --replay START..END` first")
    with Journal.open(path, trading=False) as journal:
        text = journal.flag(REPLAY_FLAG)
        if text is None:
            raise UsageError(f"--replay: the replay in {path.parent} did not finish: run it "
                             "again")
        yield journal, ReplayRecord.load(text)


def _fresh_replay(data_dir: Path) -> None:
    """Remove what the last replay left (its journal and paper accounts): one replay is
    kept, the last."""
    folder = replay_journal(data_dir).parent
    if folder.exists():
        logger.info("replay: starting afresh in {}", folder)
        try:
            shutil.rmtree(folder)
        except OSError as err:
            raise LocalStateError(f"replay folder {folder}: {err.strerror or err}") from None


@dataclass
class MarginSeen:
    """What the margin monitor did and saw over a replay, like the backtest's ``margin``
    block: top-ups (transfers and rebalances), reductions at the utilisation ceiling, the
    smallest liquidation distance of a journalled perp (before the monitor acted) and the
    largest margin use it judged against the ceiling (after its top-ups). The paper venue
    does not liquidate: a perp at or past its liquidation price (a distance at or below
    zero, or none for a short its pool can no longer carry) is counted in
    ``liquidatable``."""

    topups: int = 0              # (check, pool) pairs topped up, by transfer or rebalance
    first_topup: datetime | None = None
    transfers: int = 0
    transferred: Decimal = Decimal(0)   # spot -> futures wallet, rebalance proceeds included
    rebalances: int = 0
    rebalanced_quantity: dict[str, Decimal] = field(default_factory=dict)  # base -> sold
    rebalanced_value: Decimal = Decimal(0)
    reduced: int = 0
    liquidatable: int = 0
    min_distance: tuple[Decimal, str, datetime] | None = None     # (distance, perp, when)
    max_utilisation: tuple[Decimal, str, datetime] | None = None  # (share, pool, when)

    def add(self, risk: RiskReport, journal: Journal) -> None:
        """Count one check's events and extremes."""
        pools = {e.venue for e in risk.events if e.kind in {"top_up", "rebalance"}}
        self.topups += len(pools)
        if pools and self.first_topup is None:
            self.first_topup = risk.at
        for event in risk.events:
            if event.kind == "top_up":
                self.transfers += 1
                self.transferred += event.numbers["amount"]
            elif event.kind == "rebalance":
                base = journal.position(event.subject).base
                self.rebalances += 1
                self.rebalanced_quantity[base] = (self.rebalanced_quantity.get(base, Decimal(0))
                                                  + event.numbers["spot_sold"])
                self.rebalanced_value += event.numbers["value"]
            elif event.kind == "reduced":
                self.reduced += 1
        for perp in risk.perps:
            if not perp.positions or perp.mark is None:
                continue
            if perp.distance is None or perp.distance <= 0:
                self.liquidatable += 1
            elif self.min_distance is None or perp.distance < self.min_distance[0]:
                self.min_distance = (perp.distance, f"{perp.venue} {perp.symbol}", risk.at)
        for pool in risk.pools:
            used = pool.utilisation
            if used is not None and (self.max_utilisation is None
                                     or used > self.max_utilisation[0]):
                self.max_utilisation = (used, f"{pool.venue} {pool.settle}", risk.at)

    def as_dict(self) -> dict:
        def extreme(value):
            return None if value is None else {"value": str(value[0]), "where": value[1],
                                               "at": value[2].isoformat()}

        return {"topups": self.topups,
                "first_topup": self.first_topup and self.first_topup.isoformat(),
                "transfers": self.transfers, "transferred": str(self.transferred),
                "rebalances": self.rebalances,
                "rebalanced_quantity": {b: str(q) for b, q in
                                        self.rebalanced_quantity.items()},
                "rebalanced_value": str(self.rebalanced_value), "reduced": self.reduced,
                "liquidatable": self.liquidatable,
                "min_distance": extreme(self.min_distance),
                "max_utilisation": extreme(self.max_utilisation)}


@dataclass
class ReplayReport:
    start: datetime
    end: datetime
    cycles: int = 0
    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    journal: Path | None = None
    margin: MarginSeen = field(default_factory=MarginSeen)

    def as_dict(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "cycles": self.cycles, "seconds": round(self.seconds, 3),
                "journal": str(self.journal), "actions": [a.as_dict() for a in self.actions],
                "margin": self.margin.as_dict(), "notes": self.notes}


def run_replay(config, start: datetime, end: datetime, *, venues, symbols, executor,
               slices, as_json: bool, log_json: bool) -> int:
    """Replay [start, end] through the run loop and print what it did."""
    from perpcarry.cli.run import print_replay

    report = asyncio.run(replay(config, start, end, venues=venues, symbols=symbols,
                                executor=executor, slices=slices,
                                on_cycle=_json_line if log_json else None))
    print_replay(report, as_json)
    return 0


async def replay(config, start: datetime, end: datetime, *, venues=None, symbols=None,
                 executor: str | None = None, slices: int | None = None,
                 on_cycle: Callable[[CycleReport], None] | None = None) -> ReplayReport:
    """The loop over [start, end] of the bundled history (selected by ``venues`` and
    ``symbols``), in a fresh replay journal and fresh paper accounts."""
    from perpcarry.backtest.history import load_bundled
    from perpcarry.backtest.panel import build_panel, select
    from perpcarry.backtest.run import taker_fees
    from perpcarry.cli.run import loop_settings
    from perpcarry.events import EventBus
    from perpcarry.execution.service import TradingSession
    from perpcarry.replay.venues import replay_venues

    began = time.perf_counter()
    report = ReplayReport(start, end)
    history = replay_history(select(load_bundled(), venues, symbols), end)
    _fresh_replay(config.data_dir)
    clock, handles = await replay_venues(config, history, start, end, config.data_dir)
    journal_file = replay_journal(config.data_dir)
    journal = Journal.open(journal_file, trading=True, clock=clock.now, durable=False)
    try:
        session = TradingSession(config, journal, handles, paper=True, offline=True,
                                 sleep=clock.sleep)
        settings = loop_settings(config, session, executor, slices)
        history = select(history, list(handles))
        fees, _ = await asyncio.to_thread(taker_fees, config, list(handles))
        strategy, backtest = config.settings.strategy, config.settings.backtest
        panel = build_panel(history, estimator=strategy.estimator,
                            window_hours=strategy.window_days * 24,
                            halflife_hours=strategy.ewma_halflife_days * 24,
                            start=start, end=end, cadence_hours=backtest.cadence_hours)
        report.notes += list(panel.notes)
        facts = settlement_facts(panel, settings.rules,
                                 np.array([fees[v][0] for v in panel.venues]),
                                 np.array([fees[v][1] for v in panel.venues]))
        candidates = await _candidates(panel, handles, report.notes)
        # A replay's events are journalled and reach the plugins; no alert is sent for
        # a simulated past.
        events = EventBus(config.registry.pm, journal, None, clock.now)
        loop = CarryLoop(session, ReplayMarket(panel, facts, candidates), settings, clock.now,
                         events)
        for micros in panel.times[panel.rebalance].astype("datetime64[us]").astype(np.int64):
            moment = datetime.fromtimestamp(int(micros) / 1_000_000, UTC)
            if moment < start:
                continue
            clock.advance_to(max(moment, clock.now()))
            cycle = await loop.cycle()
            report.cycles += 1
            report.actions += cycle.actions
            if loop.risk.last is not None:
                report.margin.add(loop.risk.last, journal)
            if on_cycle is not None:
                on_cycle(cycle)
        journal.set_flag(REPLAY_FLAG, ReplayRecord(start, clock.now(),
                                                   await _last_marks(loop.market)).dump())
    finally:
        journal.close()
        for handle in handles.values():
            await handle.orders.close()
    report.journal = journal_file
    report.seconds = time.perf_counter() - began
    return report


async def _last_marks(market: ReplayMarket) -> dict[tuple[str, str], Decimal]:
    """The prices of the last step, per (venue, symbol), both legs."""
    snapshot = market.last
    marks = {}
    if snapshot is not None:
        for c, mark, spot in zip(snapshot.candidates, snapshot.pairs.mark, snapshot.pairs.spot,
                                 strict=True):
            if math.isfinite(mark) and math.isfinite(spot):
                marks[(c.venue, c.pair.perp.symbol)] = Decimal(repr(float(mark)))
                marks[(c.venue, c.pair.spot.symbol)] = Decimal(repr(float(spot)))
    return marks


async def _candidates(panel: Panel, handles, notes: list[str]) -> dict[int, Candidate]:
    """The carry pair of each series of the panel, from its venue's markets; a series whose
    venue lists no pair for it is left out, named."""
    pairs = {}
    for venue_id, handle in handles.items():
        for pair in carry_pairs(await handle.market_data.load_markets()):
            pairs[(venue_id, pair.perp.symbol)] = pair
    out = {}
    for s, (venue, symbol, base) in enumerate(zip(panel.venues, panel.symbols, panel.bases,
                                                  strict=True)):
        pair = pairs.get((venue, symbol))
        if pair is None:
            notes.append(f"{venue} {symbol}: no spot and perp pair to trade in the replay")
            continue
        out[s] = Candidate(venue, base, pair, None, 0.0, None, math.nan)
    return out


def replay_history(history: pl.DataFrame, end: datetime) -> pl.DataFrame:
    """The rows a replay trades on: series with recorded perp and spot prices, up to END
    (earlier rows warm the estimators up)."""
    return history.filter(pl.col("mark_price").is_not_null()
                          & pl.col("spot_price").is_not_null()
                          & (pl.col("time") <= end))


def _json_line(cycle: CycleReport) -> None:
    sys.stdout.write(json.dumps(cycle.as_dict()) + "\n")
    sys.stdout.flush()
