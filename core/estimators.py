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


def dense_settlement_estimates(
    time_us, settled, rate, *, window_hours: float, halflife_hours: float,
    want: tuple[str, ...] = ("mean", "ewma"),
) -> dict:
    """:func:`settlement_estimates` on a time x series grid, for the backtest's speed.

    The SAME definitions, on arrays instead of a long table: ``time_us`` (T,) strictly
    increasing settlement times in microseconds since the epoch, ``settled`` (T, S) bool
    (column s settles at row t), ``rate`` (T, S) per-interval rate where settled (any value
    elsewhere). Each column is one ``key`` and the grid must hold its whole history (the
    window and the EWMA start at the column's first settlement, as ``over("key")`` does).

    Returns (T, S) float arrays, NaN where the long-table version is null or where the
    column does not settle: ``interval_h`` and ``hourly_last`` always, ``hourly_mean`` and
    ``hourly_ewma`` when named in ``want``. The rolling sum is a difference of cumulative
    sums (equal to polars' running sum up to float rounding, ~1e-16 of the column's total);
    the EWMA is polars' ``ewm_mean_by`` recurrence, run once per time step across all
    columns: ``y = d * y_prev + (1 - d) * x`` with ``d = exp(-dt / half_life * ln 2)``.
    """
    import math

    import numpy as np

    time_us = np.asarray(time_us, dtype=np.int64)
    settled = np.asarray(settled, dtype=bool)
    n_rows, n_cols = settled.shape
    rows = np.arange(n_rows)
    # Row of the column's previous settlement (strictly before each row), -1 if none.
    last = np.where(settled, rows[:, None], -1)
    np.maximum.accumulate(last, axis=0, out=last)
    prev = np.empty_like(last)
    prev[0] = -1
    prev[1:] = last[:-1]
    valid = settled & (prev >= 0)                  # interval_h is not null
    gap_us = np.where(valid, time_us[:, None] - time_us[np.clip(prev, 0, None)], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        # total_seconds() is whole seconds, then / 3600.0, as in the long-table version.
        interval_h = np.where(valid, (gap_us // 1_000_000) / 3600.0, np.nan)
        hourly_last = rate / interval_h
    out = {"interval_h": interval_h, "hourly_last": hourly_last}
    if "mean" in want:
        window_us = round(window_hours * 3600) * 1_000_000
        cum = np.cumsum(np.where(settled, rate, 0.0), axis=0)
        # Window (t - window, t]: the first row inside it; the sum is cum[t] - cum[lo - 1].
        lo = np.searchsorted(time_us, time_us - window_us, side="right")
        before = np.zeros((n_rows, n_cols))
        inside = lo > 0
        before[inside] = cum[lo[inside] - 1]
        first = np.argmax(settled, axis=0)
        since_first_h = ((time_us[:, None] - time_us[first][None, :]) // 1_000_000) / 3600.0
        with np.errstate(invalid="ignore"):
            covered = valid & (since_first_h >= window_hours - interval_h)
        out["hourly_mean"] = np.where(covered, (cum - before) / window_hours, np.nan)
    if "ewma" in want:
        halflife_us = float(round(halflife_hours * 3600) * 1_000_000)
        # Cells that do not update keep y (d = 1, x = 0); a column's first value is x (d = 0).
        started = np.cumsum(valid, axis=0) > 1
        decay = np.where(valid, np.exp(-gap_us.astype(float) / halflife_us * math.log(2)), 1.0)
        decay[valid & ~started] = 0.0
        pushed = np.where(valid, (1.0 - decay) * np.where(valid, hourly_last, 0.0), 0.0)
        ewma = np.empty((n_rows, n_cols))
        state = np.zeros(n_cols)
        for t in range(n_rows):
            np.multiply(decay[t], state, out=state)
            np.add(state, pushed[t], out=state)
            ewma[t] = state
        out["hourly_ewma"] = np.where(valid, ewma, np.nan)
    return out
