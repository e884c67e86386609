"""An independent, long-table (polars) statement of the estimator definitions of
``perpcarry.money.estimators.settlement_estimates``, which the tests compare the core
implementation against on real data."""

from __future__ import annotations

import polars as pl


def reference_settlement_estimates(
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


