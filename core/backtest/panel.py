"""The history table as time x series arrays, with the funding estimates of ``scan``.

Rows are the union of all settlement times (the grid), columns are (venue, symbol) series.
Estimates come from :func:`perpcarry.estimators.settlement_estimates` at each settlement and
stay in force until the series' next settlement, which is what a trader watching the venue
would know at any grid time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl

from perpcarry import yields
from perpcarry.errors import UsageError
from perpcarry.estimators import settlement_estimates

# A series whose next settlement comes later than this many intervals has a gap (delisting,
# missing data): positions leave at its last settlement before the gap.
GAP_INTERVALS = 1.5


@dataclass(frozen=True)
class Panel:
    times: np.ndarray            # (T,) datetime64[us], UTC
    hours: np.ndarray            # (T,) hours since the epoch
    venues: tuple[str, ...]      # (S,) per series
    symbols: tuple[str, ...]
    bases: tuple[str, ...]
    rate: np.ndarray             # (T, S) settled rate, 0 where the series did not settle
    settled: np.ndarray          # (T, S) bool
    mark: np.ndarray             # (T, S) perp price in force (1.0 for unpriced series)
    spot: np.ndarray             # (T, S) spot price in force (= mark where unknown)
    expected_hourly: np.ndarray  # (T, S) estimator's hourly funding, NaN where unavailable
    live: np.ndarray             # (T, S) bool: inside the series' data, no gap ahead
    priced: np.ndarray           # (S,) bool: the data has a perp price for the series
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


def expected_hourly(frame: pl.DataFrame, estimator: str) -> np.ndarray:
    """The estimator's hourly funding per settlement row, as ``scan`` picks it."""
    current = yields.hourly_rate(frame["rate"].to_numpy(), frame["interval_hours"].to_numpy())
    mean = frame["hourly_mean"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    ewma = frame["hourly_ewma"].cast(pl.Float64).fill_null(np.nan).to_numpy()
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


def _take_last(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each cell's value at ``rows`` of its column: a forward fill (NaN where -1)."""
    out = np.take_along_axis(values, np.clip(rows, 0, None), axis=0)
    out[rows < 0] = np.nan
    return out


def build_panel(history: pl.DataFrame, *, estimator: str, window_hours: float,
                halflife_hours: float, start: datetime | None = None,
                end: datetime | None = None, cadence_hours: float | None = None) -> Panel:
    """Estimate on the whole history (so the window warms up before ``start``), then cut."""
    # One series per dataset: two datasets of one pair (years apart) must not share a price
    # or an estimate window across the gap between them. Integer keys keep this fast.
    frame = history.sort("venue", "symbol", "source", "time").with_columns(
        key=pl.struct("venue", "symbol", "source").rle_id())
    estimates = settlement_estimates(frame.select("key", "time", "rate"),
                                     window_hours=window_hours, halflife_hours=halflife_hours)
    # settlement_estimates sorts by (key, time), the frame's own order: rows align.
    assert estimates["key"].equals(frame["key"]) and estimates["time"].equals(frame["time"])
    frame = frame.with_columns(estimates["hourly_mean"], estimates["hourly_ewma"])
    frame = frame.with_columns(
        pl.col("mark_price").fill_null(strategy="forward").over("key"),
        pl.col("spot_price").fill_null(strategy="forward").over("key"),
    )
    if start is not None:
        frame = frame.filter(pl.col("time") >= start)
    if end is not None:
        frame = frame.filter(pl.col("time") <= end)
    if frame.is_empty():
        raise UsageError("no funding history between the chosen start and end")
    frame = frame.with_columns(key=pl.col("key").rle_id())
    estimate = expected_hourly(frame, estimator)

    series = frame.select("key", "venue", "symbol", "base").unique("key", maintain_order=True)
    times, ti = np.unique(frame["time"].to_numpy(), return_inverse=True)
    si = frame["key"].to_numpy()
    shape = (times.size, len(series))

    def grid(values, fill=np.nan):
        out = np.full(shape, fill, dtype=float)
        out[ti, si] = values
        return out

    settled = np.zeros(shape, dtype=bool)
    settled[ti, si] = True
    rate = grid(frame["rate"].to_numpy(), 0.0)
    interval = grid(frame["interval_hours"].to_numpy())
    mark_raw = grid(frame["mark_price"].fill_null(np.nan).to_numpy())
    spot_raw = grid(frame["spot_price"].fill_null(np.nan).to_numpy())
    priced = np.isfinite(mark_raw).any(axis=0)
    notes = []
    if not priced.all():
        unpriced = sorted({v for v, p in zip(series["venue"], priced, strict=True) if not p})
        notes.append(f"{int((~priced).sum())} series ({', '.join(unpriced)}) have no price in "
                     "the data: sized in quote terms (constant notional, no basis)")
        mark_raw[:, ~priced] = np.where(settled[:, ~priced], 1.0, np.nan)
    # Prices are forward-filled within each series in the long table, so on the grid the
    # value in force is the one at the series' last settlement.
    last = last_valid_row(settled)
    mark = _take_last(mark_raw, last)
    spot = _take_last(spot_raw, last)
    spot = np.where(np.isfinite(spot), spot, mark)

    hours = times.astype("datetime64[s]").astype(np.int64) / 3600.0
    nxt = np.where(settled, np.arange(shape[0])[:, None], shape[0])
    nxt = np.minimum.accumulate(nxt[::-1], axis=0)[::-1]
    nxt = np.vstack([nxt[1:], np.full((1, shape[1]), shape[0])])  # first settlement after t
    cols = np.arange(shape[1])
    has = (last >= 0) & (nxt < shape[0])
    gap = hours[np.clip(nxt, 0, shape[0] - 1)] - hours[np.clip(last, 0, None)]
    live = has & (gap <= GAP_INTERVALS * interval[np.clip(last, 0, None), cols])

    cadence = float(cadence_hours or np.nanmin(frame["interval_hours"].to_numpy()))
    on_cadence = np.isclose(np.mod(hours, cadence), 0.0) | np.isclose(np.mod(hours, cadence),
                                                                       cadence)
    rebalance = np.flatnonzero(on_cadence)
    if rebalance.size == 0:
        raise UsageError(f"no settlement falls on the {cadence:g}h rebalance cadence")
    return Panel(
        times=times, hours=hours, venues=tuple(series["venue"]), symbols=tuple(series["symbol"]),
        bases=tuple(series["base"]), rate=rate, settled=settled, mark=mark, spot=spot,
        expected_hourly=_take_last(grid(estimate), last), live=live, priced=priced,
        rebalance=rebalance, cadence_hours=cadence, notes=tuple(notes),
    )
