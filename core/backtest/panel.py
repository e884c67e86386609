"""The history table as time x series arrays, with the funding estimates of ``scan``.

Rows are the union of all settlement times (the grid), columns are (venue, symbol, source)
series. Estimates are :func:`perpcarry.money.estimators.settlement_estimates`, computed over
each series' whole history (so the window warms up before ``start``); each stays in force
until the series' next settlement, which is what a trader watching the venue would know.

Speed: one pass over the long table in numpy. Series get integer ids from run boundaries
of the (already grouped) table, grid rows from a bitmap of settlement minutes, and every
(T, S) array is a scatter or a gather through "the last settlement in force" index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property

import numpy as np
import polars as pl

from perpcarry.domain.errors import UsageError
from perpcarry.money import yields
from perpcarry.money.estimators import (
    expected_hourly,
    grid_cells,
    in_force_index,
    settlement_estimates,
)

# A series whose next settlement comes later than this many intervals has a gap (delisting,
# missing data): positions leave at its last settlement before the gap.
GAP_INTERVALS = 1.5
SERIES_KEY = ("venue", "symbol", "source")
MINUTE_US = 60_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A stretch with no settlement of any selected series longer than this splits the history
# into segments (the default span stays inside one).
SEGMENT_GAP_DAYS = 7
# The parts of settlement_estimates each estimator needs.
ESTIMATOR_PARTS = {"current": (), "mean": ("mean",), "ewma": ("ewma",),
                   "conservative": ("mean", "ewma")}
# Above this many minutes between the first and last settlement the grid rows come from a
# sort instead of a bitmap of minutes.
MAX_BITMAP_MINUTES = 50_000_000


@dataclass(frozen=True)
class Panel:
    """Settlements as long arrays (grouped by series, time order within each) plus the
    (S, T) index of the settlement in force at each grid cell; (T, S) views of prices,
    estimates and liveness are built from them on first use."""

    times: np.ndarray            # (T,) datetime64[us], UTC
    hours: np.ndarray            # (T,) hours since the epoch
    venues: tuple[str, ...]      # (S,) per series
    symbols: tuple[str, ...]
    bases: tuple[str, ...]
    event_row: np.ndarray        # (N,) grid row of each settlement
    event_series: np.ndarray     # (N,) its series (column)
    event_rate: np.ndarray       # (N,) settled rate
    event_mark: np.ndarray       # (N,) perp price at the settlement (1.0 for unpriced series)
    event_spot: np.ndarray       # (N,) spot price (= mark where unknown)
    event_expected: np.ndarray   # (N,) estimator's hourly funding, NaN where unavailable
    event_live: np.ndarray       # (N,) bool: the series settles again, without a gap
    index: np.ndarray            # (S, T) 1 + the settlement in force (0: none yet)
    priced: np.ndarray           # (S,) bool: the data has a perp price for the series
    hedged: np.ndarray           # (S,) bool: the data has a spot price (basis can move)
    rebalance: np.ndarray        # (R,) grid indices where the strategy rebalances
    cadence_hours: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def events(self) -> int:
        """Funding settlements in the panel."""
        return int(self.event_row.size)

    @property
    def shape(self) -> tuple[int, int]:
        """(T, S): grid times x series."""
        return self.index.shape[1], self.index.shape[0]

    def in_force_series_major(self, values: np.ndarray, fill,
                              rows: np.ndarray | None = None) -> np.ndarray:
        """(S, T) (or S x the given rows) of a per-settlement value: the one in force."""
        index = self.index if rows is None else self.index[:, rows]
        return np.concatenate([np.asarray([fill], dtype=values.dtype), values]).take(index)

    def in_force(self, values: np.ndarray, fill, rows: np.ndarray | None = None) -> np.ndarray:
        """(T, S) (or the given rows x S) of a per-settlement value: the one in force."""
        return np.ascontiguousarray(self.in_force_series_major(values, fill, rows).T)

    @cached_property
    def carry(self) -> np.ndarray:
        """(T, S) funding per unit held: rate x mark at each settlement, 0 elsewhere."""
        out = np.zeros(self.shape)
        out.ravel()[self.event_flat] = np.nan_to_num(self.event_rate * self.event_mark)
        return out

    @cached_property
    def event_flat(self) -> np.ndarray:
        return grid_cells(self.event_row, self.event_series, *self.shape)

    @cached_property
    def settled(self) -> np.ndarray:
        out = np.zeros(self.shape, dtype=bool)
        out.ravel()[self.event_flat] = True
        return out

    @cached_property
    def mark(self) -> np.ndarray:
        """(T, S) perp price in force (NaN before the series' first settlement)."""
        return self.in_force(self.event_mark, np.nan)

    @cached_property
    def spot(self) -> np.ndarray:
        return self.in_force(self.event_spot, np.nan)

    @cached_property
    def expected_hourly(self) -> np.ndarray:
        return self.in_force(self.event_expected, np.nan)

    @cached_property
    def live(self) -> np.ndarray:
        return self.in_force(self.event_live, False)


@dataclass(frozen=True)
class Span:
    start: datetime
    end: datetime
    note: str


def default_span(history: pl.DataFrame) -> Span:
    """The window a run without --start/--end covers: a stretch of the data without a gap.

    The history splits into segments wherever no selected series settles for more than
    ``SEGMENT_GAP_DAYS``. The segment where the most venues have data wins (then the one with
    the most settlements), cut to the span where all of those venues have data, so the run
    neither replays months with no data nor lets one venue stand in for the others."""
    times = history.select(pl.col("time").unique().sort())["time"]
    gaps = times.diff().dt.total_seconds() > SEGMENT_GAP_DAYS * 86_400
    segment_start = times.filter(gaps.fill_null(True)).to_numpy()
    segment = np.searchsorted(segment_start, history["time"].to_numpy(), side="right") - 1
    per_venue = history.with_columns(segment=segment).group_by("segment", "venue").agg(
        pl.col("time").min().alias("first"), pl.col("time").max().alias("last"), pl.len())
    ranked = per_venue.group_by("segment").agg(
        pl.col("venue").n_unique().alias("venues"), pl.col("len").sum().alias("settlements"),
        pl.col("first").max(), pl.col("last").min(), pl.col("venue").sort()) \
        .sort(["venues", "settlements"], descending=True)
    best = ranked.row(0, named=True)
    whole = f"{_day(times[0])} → {_day(times[-1])}"
    where = ", ".join(best["venue"])
    if len(ranked) > 1:
        spans = per_venue.group_by("segment").agg(pl.col("first").min(), pl.col("last").max(),
                                                  pl.col("venue").unique().sort()).sort("first")
        others = "; ".join(f"{_day(r['first'])} → {_day(r['last'])} ({', '.join(r['venue'])})"
                           for r in spans.iter_rows(named=True)
                           if r["segment"] != best["segment"])
        why = (f"the data ({whole}) has gaps of more than {SEGMENT_GAP_DAYS} days; other "
               f"stretches: {others}")
    else:
        why = f"the data covers {whole}"
    have = "all have" if len(best["venue"]) > 1 else "has"
    note = (f"span {_day(best['first'])} → {_day(best['last'])} (default): where {where} {have} "
            f"data ({why}; choose with --start/--end)")
    return Span(best["first"], best["last"], note)


def _day(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def select(history: pl.DataFrame, venues=None, symbols=None) -> pl.DataFrame:
    """Rows of the given venues and base assets (or unified symbols); UsageError if none."""
    if venues:
        history = history.filter(pl.col("venue").is_in(list(venues)))
    if symbols:
        wanted = [s.upper() for s in symbols]
        history = history.filter(pl.col("base").is_in(wanted) | pl.col("symbol").is_in(wanted))
    if history.is_empty():
        raise UsageError("no funding history matches the chosen venues and symbols")
    return history


def _grouped(history: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """The table with each series in one run of rows in time order: (table, its times in
    microseconds, series id per row, first row of each series). Loaders already group and
    sort; others are sorted here."""
    for attempt in range(2):
        # rle ids never decrease, so their sum changes exactly where one of them changes.
        runs = history.lazy().select(sum(pl.col(c).rle_id() for c in SERIES_KEY)) \
            .collect().to_series().to_numpy()
        time_us = history["time"].to_numpy().view(np.int64)
        boundary = np.empty(runs.size, dtype=bool)
        boundary[0] = True
        np.not_equal(runs[1:], runs[:-1], out=boundary[1:])
        starts = np.flatnonzero(boundary)
        ordered = time_us[1:] > time_us[:-1]
        ordered |= boundary[1:]
        if ordered.all() and history.select(SERIES_KEY)[starts].n_unique() == starts.size:
            series = np.repeat(np.arange(starts.size, dtype=np.int32),
                               np.diff(starts, append=runs.size))
            return history, time_us, series, starts
        if attempt:  # pragma: no cover - sorted and de-duplicated above
            break
        history = history.unique([*SERIES_KEY, "time"], keep="first", maintain_order=True) \
            .sort(*SERIES_KEY, "time")
    raise UsageError("funding history has duplicate settlements")  # pragma: no cover


def _grid_rows(time_us: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct times, row of each time); ``starts``: first row of each series."""
    first = int(time_us[starts].min())
    last = int(time_us[np.append(starts[1:], time_us.size) - 1].max())
    if (last - first) // MINUTE_US < MAX_BITMAP_MINUTES:
        minute = time_us - first
        total_us = int(minute.view(np.uint64).sum())
        minute //= MINUTE_US
        # Exact when every time is on a minute (then it is its grid time): when the
        # remainders, each in [0, MINUTE_US), sum to 0. Their sum is far below 2**64, so
        # sums that wrap around (unsigned, where wrapping is well defined) show it.
        if (total_us - MINUTE_US * int(minute.view(np.uint64).sum())) % 2**64 == 0:
            present = np.zeros((last - first) // MINUTE_US + 1, dtype=bool)
            present[minute] = True
            row_of = np.cumsum(present, dtype=np.intp)
            row_of -= 1
            return np.flatnonzero(present) * MINUTE_US + first, row_of.take(minute)
    return np.unique(time_us, return_inverse=True)


def _fill_forward(values: np.ndarray, starts: np.ndarray, series: np.ndarray) -> np.ndarray:
    """Forward-fill NaN within each series of the long table (rows grouped by series)."""
    missing = np.isnan(values)
    if not missing.any() or missing.all():
        return values
    index = np.where(missing, -1, np.arange(values.size))
    np.maximum.accumulate(index, out=index)
    index[index < starts[series]] = -1
    out = values[np.clip(index, 0, None)]
    out[index < 0] = np.nan
    return out


def _column(frame: pl.DataFrame, name: str) -> np.ndarray:
    series = frame[name]
    if series.null_count() == series.len():
        return np.full(series.len(), np.nan)
    return series.cast(pl.Float64).to_numpy().astype(float, copy=False)


def build_panel(history: pl.DataFrame, *, estimator: str, window_hours: float,
                halflife_hours: float, start: datetime | None = None,
                end: datetime | None = None, cadence_hours: float | None = None) -> Panel:
    """Estimate on the whole history (so the window warms up before ``start``), then cut."""
    if estimator not in ESTIMATOR_PARTS:
        raise UsageError(f"unknown estimator {estimator!r} "
                         f"(choose from {', '.join(ESTIMATOR_PARTS)})")
    if history.is_empty():
        raise UsageError("no funding history to simulate")
    # One series per dataset: two datasets of one pair (years apart) must not share a price
    # or an estimate window across the gap between them.
    history, time_us, series, starts = _grouped(history)
    rate = _column(history, "rate")
    interval = _column(history, "interval_hours")
    mark = _fill_forward(_column(history, "mark_price"), starts, series)
    # No spot price anywhere (most funding datasets): spot = mark, nothing to fill or mark.
    spot = None if history["spot_price"].null_count() == history.height else \
        _fill_forward(_column(history, "spot_price"), starts, series)

    # Estimates over each series' whole history, one value per settlement.
    times, row = _grid_rows(time_us, starts)
    current = yields.hourly_rate(rate, interval) if estimator in ("current", "conservative") \
        else None
    want = ESTIMATOR_PARTS[estimator]
    index = None
    if want:
        parts = settlement_estimates(times, row, series, rate, window_hours=window_hours,
                                           halflife_hours=halflife_hours, want=want)
        index = parts.get("in_force")
        estimate = expected_hourly(current, parts.get("hourly_mean"), parts.get("hourly_ewma"),
                                   estimator)
    else:
        estimate = current

    # The cut: each series' rows in [start, end] are one contiguous run.
    keep = None
    if start is not None:
        keep = time_us >= _us(start)
    if end is not None:
        before_end = time_us <= _us(end)
        keep = before_end if keep is None else keep & before_end
    if keep is not None and not keep.all():
        if not keep.any():
            raise UsageError("no funding history between the chosen start and end")
        index = None
        kept_series = np.unique(series[keep])
        new_id = np.full(starts.size, -1)
        new_id[kept_series] = np.arange(kept_series.size)
        series = new_id[series[keep]]
        time_us, rate, interval, mark, estimate, row = (
            a[keep] for a in (time_us, rate, interval, mark, estimate, row))
        spot = None if spot is None else spot[keep]
        starts = np.flatnonzero(np.diff(series, prepend=-1))
        first_row = int(row.min())
        present = np.zeros(int(row.max()) - first_row + 1, dtype=bool)
        present[row - first_row] = True
        times = times[first_row:first_row + present.size][present]
        row = (np.cumsum(present) - 1)[row - first_row]
        info = history.select("venue", "symbol", "base")[np.flatnonzero(keep)[starts]]
    else:
        info = history.select("venue", "symbol", "base")[starts]
    n_events, n_series = time_us.size, starts.size
    shape = (times.size, n_series)

    has_price = np.logical_or.reduceat(np.isfinite(mark), starts)
    notes = []
    if not has_price.all():
        unpriced = sorted({v for v, p in zip(info["venue"], has_price, strict=True) if not p})
        notes.append(f"{int((~has_price).sum())} series ({', '.join(unpriced)}) have no price "
                     "in the data: sized in quote terms (constant notional, no basis)")
        mark = np.where(has_price[series], mark, 1.0)
    if spot is None:
        hedged = np.zeros(n_series, dtype=bool)
    else:
        hedged = np.logical_or.reduceat(np.isfinite(spot), starts)
    # Live after a settlement: the series settles again within GAP_INTERVALS intervals.
    ok = np.zeros(n_events, dtype=bool)
    np.less_equal(time_us[1:] - time_us[:-1], GAP_INTERVALS * 3_600_000_000 * interval[:-1],
                  out=ok[:-1])
    ok[starts[1:] - 1] = False

    # The settlement in force at each cell, as 1 + its index in the long arrays (0: none
    # yet), so every (T, S) view is one gather.
    if index is None:
        index = in_force_index(row, series, *shape)
    spot = np.where(np.isfinite(spot), spot, mark) if hedged.any() else mark

    hours = (times // 1_000_000) / 3600.0
    cadence = float(cadence_hours or np.nanmin(interval))
    remainder = np.mod(hours, cadence)
    rebalance = np.flatnonzero(np.isclose(remainder, 0.0) | np.isclose(remainder, cadence))
    if rebalance.size == 0:
        raise UsageError(f"no settlement falls on the {cadence:g}h rebalance cadence")
    return Panel(
        times=times.view("datetime64[us]"), hours=hours, venues=tuple(info["venue"]),
        symbols=tuple(info["symbol"]), bases=tuple(info["base"]), event_row=row,
        event_series=series, event_rate=rate, event_mark=mark, event_spot=spot,
        event_expected=estimate, event_live=ok, index=index, priced=has_price, hedged=hedged,
        rebalance=rebalance, cadence_hours=cadence, notes=tuple(notes),
    )


def _us(moment: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)
