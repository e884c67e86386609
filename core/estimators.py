"""Expected funding from history: the estimators a user picks between.

Seeds warn never to enter on a single snapshot, so the default is the mean over a window.
Everything is computed per settlement from a long table of settled funding, so one
function serves ``scan`` (the latest settlement of each symbol) and ``backtest`` (every
settlement of every symbol).

Input columns: ``key`` (any string naming a series, e.g. "binance|BTC/USDT:USDT"),
``time`` (UTC datetime of the settlement), ``rate`` (per-interval fraction).
"""

from __future__ import annotations

import polars as pl

ESTIMATORS = ("current", "mean", "ewma", "conservative")


def settlement_estimates(
    history: pl.DataFrame, *, window_hours: float, halflife_hours: float
) -> pl.DataFrame:
    """Add hourly funding estimates at each settlement.

    - ``interval_h``: hours since the previous settlement of the series (null for the first).
    - ``hourly_last``: the settled rate spread over its interval.
    - ``hourly_mean``: funding paid in (t - window, t] divided by the window; null until the
      series covers the whole window (its first settlement in the window lies within one
      interval of the window start), so a short history never passes for a full one.
    - ``hourly_ewma``: exponentially weighted mean of ``hourly_last`` with the given
      half-life in time, not in settlements, so 1h and 8h series weigh alike.
    """
    window = f"{round(window_hours * 3600)}s"
    halflife = f"{round(halflife_hours * 3600)}s"
    frame = history.sort("key", "time").with_columns(
        interval_h=(pl.col("time").diff().dt.total_seconds() / 3600.0).over("key"),
    )
    frame = frame.with_columns(
        hourly_last=pl.col("rate") / pl.col("interval_h"),
        window_sum=pl.col("rate").rolling_sum_by("time", window_size=window).over("key"),
        series_first=pl.col("time").min().over("key"),
    )
    covered = (
        pl.col("time") - pl.col("series_first")
    ).dt.total_seconds() / 3600.0 >= window_hours - pl.col("interval_h")
    return frame.with_columns(
        hourly_mean=pl.when(covered).then(pl.col("window_sum") / window_hours),
        hourly_ewma=pl.col("hourly_last").ewm_mean_by("time", half_life=halflife).over("key"),
    ).drop("window_sum", "series_first")


def accumulate_down(ufunc, array):
    """``ufunc.accumulate(array, axis=0)`` in place, one row at a time: numpy accumulates a
    C-ordered (T, S) array along axis 0 several times slower than T vector steps."""
    for t in range(1, array.shape[0]):
        ufunc(array[t - 1], array[t], out=array[t])
    return array


def dense_settlement_estimates(
    grid_time_us, row, column, rate, *, window_hours: float, halflife_hours: float,
    want: tuple[str, ...] = ("interval_h", "hourly_last", "mean", "ewma"),
) -> dict:
    """:func:`settlement_estimates` on numpy arrays, for the backtest's speed.

    The SAME definitions and the same rows in and out, as arrays: settlement e of series
    ``column[e]`` (integer ids 0..S-1, the ``key``) at ``grid_time_us[row[e]]`` (the
    distinct settlement times, increasing, microseconds since the epoch) with per-interval
    ``rate[e]``. Rows must be grouped by column, in time order within each; each column
    holds its whole history (the window and the EWMA start at its first settlement, as
    ``over("key")`` does).

    Returns arrays aligned with the input for the names in ``want``: ``interval_h``,
    ``hourly_last``, ``hourly_mean`` (``mean``) and ``hourly_ewma`` (``ewma``), NaN where
    the long-table version is null. Both estimates run across all series at once on the
    time x series grid: the window sum is a difference of cumulative sums down each column
    (equal to polars' compensated running sum up to float rounding of the column's running
    total, ~1e-16 of it); the EWMA is polars' ``ewm_mean_by`` recurrence, one vector step
    per distinct time: ``y = d * y_prev + (1 - d) * x``, ``d = exp(-dt / half_life * ln 2)``.
    """
    import math

    import numpy as np

    grid_time_us = np.asarray(grid_time_us, dtype=np.int64)
    row, column = np.asarray(row), np.asarray(column)
    rate = np.asarray(rate, dtype=float)
    n_events, n_rows = row.size, grid_time_us.size
    n_cols = int(column.max()) + 1 if n_events else 0
    time_us = grid_time_us[row]
    first = np.ones(n_events, dtype=bool)          # first settlement of its series
    if n_events:
        np.not_equal(column[1:], column[:-1], out=first[1:])
    gap_us = np.empty(n_events, dtype=np.int64)
    gap_us[0:1] = 0
    np.subtract(time_us[1:], time_us[:-1], out=gap_us[1:])
    gap_us[first] = 0
    # total_seconds() is whole seconds, then / 3600.0, as in the long-table version.
    interval_h = (gap_us // 1_000_000) / 3600.0
    interval_h[first] = np.nan
    out = {}
    if "interval_h" in want:
        out["interval_h"] = interval_h
    with np.errstate(invalid="ignore", divide="ignore"):
        hourly_last = rate / interval_h
    if "hourly_last" in want:
        out["hourly_last"] = hourly_last
    flat = row * n_cols + column
    if "mean" in want:
        window_us = round(window_hours * 3600) * 1_000_000
        # cum[r + 1] sums rows 0..r of each column (cum[0] = 0). The window (t - window, t]
        # starts at grid row lo, so its sum is cum[t + 1] - cum[lo].
        cum = np.zeros((n_rows + 1, n_cols))
        cum.ravel()[flat + n_cols] = rate
        accumulate_down(np.add, cum)
        lo = np.searchsorted(grid_time_us, grid_time_us - window_us, side="right")
        window_sum = cum.ravel()[flat + n_cols]
        window_sum -= cum.ravel()[lo[row] * n_cols + column]
        del cum
        starts = np.flatnonzero(first)
        series_first = np.repeat(time_us[starts], np.diff(np.append(starts, n_events)))
        with np.errstate(invalid="ignore"):
            covered = ((time_us - series_first) // 1_000_000) / 3600.0 \
                >= window_hours - interval_h                      # False where NaN
        out["hourly_mean"] = np.where(covered, window_sum / window_hours, np.nan)
    if "ewma" in want:
        halflife_us = float(round(halflife_hours * 3600) * 1_000_000)
        decay = np.exp(-gap_us.astype(float) / halflife_us * math.log(2))
        # A series' first value is x itself (d = 0); its very first settlement has no x.
        second = np.zeros(n_events, dtype=bool)
        second[1:] = first[:-1] & ~first[1:]
        decay[second] = 0.0
        pushed = (1.0 - decay) * hourly_last
        decay[first], pushed[first] = 1.0, 0.0
        # Cells where a column does not settle keep its value: d = 1, x contributes 0.
        grid_decay = np.ones((n_rows, n_cols))
        grid_decay.ravel()[flat] = decay
        ewma = np.zeros((n_rows, n_cols))
        ewma.ravel()[flat] = pushed
        step = np.empty(n_cols)
        for t in range(1, n_rows):
            np.multiply(grid_decay[t], ewma[t - 1], out=step)
            ewma[t] += step
        values = ewma.ravel()[flat]
        values[first] = np.nan
        out["hourly_ewma"] = values
    return out
