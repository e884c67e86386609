"""The history table as time x series arrays, with the funding estimates of ``scan``.

Rows are the union of all settlement times (the grid), columns are (venue, symbol, source)
series. Estimates are :func:`perpcarry.estimators.settlement_estimates`' definitions, computed
on the grid by their array twin :func:`perpcarry.estimators.dense_settlement_estimates` over
each series' whole history (so the window warms up before ``start``); each stays in force
until the series' next settlement, which is what a trader watching the venue would know.

Speed: one pass over the long table in numpy. Series get integer ids from run boundaries
of the (already grouped) table, grid rows from a bitmap of settlement minutes, and every
(T, S) array is a scatter or a gather through "the last settlement in force" index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from perpcarry import yields
from perpcarry.errors import UsageError
from perpcarry.estimators import dense_settlement_estimates

# A series whose next settlement comes later than this many intervals has a gap (delisting,
# missing data): positions leave at its last settlement before the gap.
GAP_INTERVALS = 1.5
SERIES_KEY = ("venue", "symbol", "source")
MINUTE_US = 60_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Above this many minutes between the first and last settlement the grid rows come from a
# sort instead of a bitmap of minutes.
MAX_BITMAP_MINUTES = 50_000_000


@dataclass(frozen=True)
class Panel:
    times: np.ndarray            # (T,) datetime64[us], UTC
    hours: np.ndarray            # (T,) hours since the epoch
    venues: tuple[str, ...]      # (S,) per series
    symbols: tuple[str, ...]
    bases: tuple[str, ...]
    rate: np.ndarray             # (T, S) settled rate, 0 where the series did not settle
    settled: np.ndarray          # (T, S) bool
    carry: np.ndarray            # (T, S) funding per unit held: rate x mark at settlement
    mark: np.ndarray             # (T, S) perp price in force (1.0 for unpriced series)
    spot: np.ndarray             # (T, S) spot price in force (= mark where unknown)
    expected_hourly: np.ndarray  # (T, S) estimator's hourly funding, NaN where unavailable
    live: np.ndarray             # (T, S) bool: inside the series' data, no gap ahead
    priced: np.ndarray           # (S,) bool: the data has a perp price for the series
    hedged: np.ndarray           # (S,) bool: the data has a spot price (basis can move)
    rebalance: np.ndarray        # (R,) grid indices where the strategy rebalances
    cadence_hours: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def events(self) -> int:
        """Funding settlements in the panel."""
        return int(self.settled.sum())


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


def expected_hourly(current, mean, ewma, estimator: str) -> np.ndarray:
    """The estimator's hourly funding, as ``scan`` picks it (NaN: not available)."""
    if estimator == "current":
        return current
    if estimator == "mean":
        return mean
    if estimator == "ewma":
        return ewma
    if estimator == "conservative":
        return yields.conservative(current, mean, ewma)
    raise UsageError(f"unknown estimator {estimator!r} (current, mean, ewma, conservative)")


def last_valid_row(valid: np.ndarray) -> np.ndarray:
    """Per cell, the row of the column's last valid value at or above it (-1: none yet)."""
    rows = np.where(valid, np.arange(valid.shape[0])[:, None], -1)
    np.maximum.accumulate(rows, axis=0, out=rows)
    return rows


def _grouped(history: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """The table with each series in one run of rows in time order: (table, series id per
    row, first row of each series). Loaders already group and sort; others are sorted here."""
    for attempt in range(2):
        # rle ids never decrease, so their sum changes exactly where one of them changes.
        runs = history.lazy().select(sum(pl.col(c).rle_id().cast(pl.Int64)
                                         for c in SERIES_KEY)).collect().to_series().to_numpy()
        time_us = history["time"].to_numpy().view(np.int64)
        boundary = np.empty(runs.size, dtype=bool)
        boundary[0] = True
        np.not_equal(runs[1:], runs[:-1], out=boundary[1:])
        starts = np.flatnonzero(boundary)
        inside = ~boundary[1:]
        ordered = bool(np.all(time_us[1:][inside] > time_us[:-1][inside]))
        keys = history[starts].select(SERIES_KEY)
        if ordered and keys.n_unique() == starts.size:
            return history, np.cumsum(boundary) - 1, starts
        if attempt:  # pragma: no cover - sorted and de-duplicated above
            break
        history = history.unique([*SERIES_KEY, "time"], keep="first", maintain_order=True) \
            .sort(*SERIES_KEY, "time")
    raise UsageError("funding history has duplicate settlements")  # pragma: no cover


def _grid_rows(time_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct times, row of each time)."""
    first, last = int(time_us.min()), int(time_us.max())
    if (last - first) // MINUTE_US < MAX_BITMAP_MINUTES and not np.any(time_us % MINUTE_US):
        minute = (time_us - first) // MINUTE_US
        present = np.zeros(int(minute.max()) + 1, dtype=bool)
        present[minute] = True
        row_of = np.cumsum(present) - 1
        return np.flatnonzero(present) * MINUTE_US + first, row_of[minute]
    times, rows = np.unique(time_us, return_inverse=True)
    return times, rows


def _fill_forward(values: np.ndarray, starts_of_row: np.ndarray) -> np.ndarray:
    """Forward-fill NaN within each series of the long table (rows grouped by series)."""
    if not np.isnan(values).any():
        return values
    index = np.where(np.isfinite(values), np.arange(values.size), -1)
    np.maximum.accumulate(index, out=index)
    index[index < starts_of_row] = -1
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
    if estimator not in ("current", "mean", "ewma", "conservative"):
        expected_hourly(None, None, None, estimator)  # raises the UsageError
    if history.is_empty():
        raise UsageError("no funding history to simulate")
    # One series per dataset: two datasets of one pair (years apart) must not share a price
    # or an estimate window across the gap between them.
    history, series, starts = _grouped(history)
    time_us = history["time"].to_numpy().view(np.int64)
    rate = _column(history, "rate")
    interval = _column(history, "interval_hours")
    series_start = starts[series]
    mark = _fill_forward(_column(history, "mark_price"), series_start)
    spot = _fill_forward(_column(history, "spot_price"), series_start)

    # Estimates on the full grid, then read back at each settlement.
    times, row = _grid_rows(time_us)
    n_series = starts.size
    current = yields.hourly_rate(rate, interval)
    if estimator == "current":
        estimate = current
    else:
        want = {"mean": ("mean",), "ewma": ("ewma",)}.get(estimator, ("mean", "ewma"))
        settled = np.zeros((times.size, n_series), dtype=bool)
        settled[row, series] = True
        grid_rate = np.zeros((times.size, n_series))
        grid_rate[row, series] = rate
        dense = dense_settlement_estimates(times, settled, grid_rate, window_hours=window_hours,
                                           halflife_hours=halflife_hours, want=want)
        flat = row * n_series + series
        mean = dense["hourly_mean"].ravel()[flat] if "mean" in want else None
        ewma = dense["hourly_ewma"].ravel()[flat] if "ewma" in want else None
        estimate = expected_hourly(current, mean, ewma, estimator)

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
        kept_series = np.unique(series[keep])
        new_id = np.full(n_series, -1)
        new_id[kept_series] = np.arange(kept_series.size)
        series = new_id[series[keep]]
        time_us, rate, interval, mark, spot, estimate, row = (
            a[keep] for a in (time_us, rate, interval, mark, spot, estimate, row))
        starts = starts[kept_series]
        first_row, last_row = int(row.min()), int(row.max())
        present = np.zeros(last_row - first_row + 1, dtype=bool)
        present[row - first_row] = True
        row_of = np.cumsum(present) - 1
        times = times[first_row:last_row + 1][present]
        row = row_of[row - first_row]
        n_series = kept_series.size
    info = history[starts].select("venue", "symbol", "base")
    n_events = time_us.size
    shape = (times.size, n_series)

    # Long-table per-settlement facts.
    new_series = np.empty(n_events, dtype=bool)
    new_series[0] = True
    np.not_equal(series[1:], series[:-1], out=new_series[1:])
    has_price = np.zeros(n_series, dtype=bool)
    has_price[series[np.isfinite(mark)]] = True
    notes = []
    if not has_price.all():
        unpriced = sorted({v for v, p in zip(info["venue"], has_price, strict=True) if not p})
        notes.append(f"{int((~has_price).sum())} series ({', '.join(unpriced)}) have no price "
                     "in the data: sized in quote terms (constant notional, no basis)")
        mark = np.where(has_price[series], mark, 1.0)
    hedged = np.zeros(n_series, dtype=bool)
    hedged[series[np.isfinite(spot)]] = True
    spot = np.where(np.isfinite(spot), spot, mark)
    # Live after a settlement: the series settles again within GAP_INTERVALS intervals.
    nxt = np.empty(n_events)
    nxt[:-1] = time_us[1:]
    nxt[-1] = np.nan
    nxt[np.flatnonzero(new_series)[1:] - 1] = np.nan
    ok = (nxt - time_us) <= GAP_INTERVALS * interval * 3_600_000_000

    # Settlement in force at each cell: an index into the long arrays (-1: none yet).
    flat = row * n_series + series
    in_force = np.full(shape, -1, dtype=np.int64)
    in_force.ravel()[flat] = np.arange(n_events)
    np.maximum.accumulate(in_force, axis=0, out=in_force)
    none = in_force < 0
    index = np.where(none, n_events, in_force)  # n_events: a trailing NaN / False

    def in_force_of(values, fill):
        return np.append(values, fill)[index]

    settled = np.zeros(shape, dtype=bool)
    settled.ravel()[flat] = True
    grid_rate = np.zeros(shape)
    grid_rate.ravel()[flat] = rate
    carry = np.zeros(shape)
    carry.ravel()[flat] = np.nan_to_num(rate * mark)
    mark_in_force = in_force_of(mark, np.nan)
    spot_in_force = in_force_of(spot, np.nan) if hedged.any() else mark_in_force

    hours = (times // 1_000_000) / 3600.0
    cadence = float(cadence_hours or np.nanmin(interval))
    remainder = np.mod(hours, cadence)
    rebalance = np.flatnonzero(np.isclose(remainder, 0.0) | np.isclose(remainder, cadence))
    if rebalance.size == 0:
        raise UsageError(f"no settlement falls on the {cadence:g}h rebalance cadence")
    return Panel(
        times=times.view("datetime64[us]"), hours=hours, venues=tuple(info["venue"]),
        symbols=tuple(info["symbol"]), bases=tuple(info["base"]), rate=grid_rate,
        settled=settled, carry=carry, mark=mark_in_force, spot=spot_in_force,
        expected_hourly=in_force_of(estimate, np.nan), live=in_force_of(ok, False),
        priced=has_price, hedged=hedged, rebalance=rebalance, cadence_hours=cadence,
        notes=tuple(notes),
    )


def _us(moment: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)
