"""Expected funding from history: the estimators a user picks between.

Seeds warn never to enter on a single snapshot, so the default is the mean over a window.
Everything is computed per settlement, so one function serves ``scan`` (the latest
settlement of each symbol, :func:`latest_estimates`) and ``backtest`` (every settlement of
every series, :func:`settlement_estimates`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

ESTIMATORS = ("current", "mean", "ewma", "conservative")


def expected_hourly(current, mean, ewma, estimator: str):
    """The picked estimator's hourly funding (floats or arrays; NaN: not available).
    ``conservative`` is the lowest of the three, unavailable when any is."""
    from perpcarry.money import yields

    if estimator == "current":
        return current
    if estimator == "mean":
        return mean
    if estimator == "ewma":
        return ewma
    if estimator == "conservative":
        return yields.conservative(current, mean, ewma)
    raise ValueError(f"unknown estimator {estimator!r} (choose from {', '.join(ESTIMATORS)})")


def latest_estimates(histories: Mapping[str, Sequence[tuple[int, float]]], *,
                     window_hours: float, halflife_hours: float) -> dict[str, tuple[float, float]]:
    """(mean, ewma) hourly funding at the latest settlement of each series; NaN where not
    available. ``histories`` maps a key to its (time in microseconds, rate) settlements in
    time order."""
    import numpy as np

    keys = [key for key, settled in histories.items() if settled]
    if not keys:
        return {}
    lengths = np.array([len(histories[k]) for k in keys])
    time_us = np.array([t for k in keys for t, _ in histories[k]], np.int64)
    rate = np.array([r for k in keys for _, r in histories[k]], float)
    grid, position = np.unique(time_us, return_inverse=True)
    parts = settlement_estimates(grid, position,
                                 np.repeat(np.arange(len(keys)), lengths), rate,
                                 window_hours=window_hours, halflife_hours=halflife_hours,
                                 want=("mean", "ewma"))
    last = np.cumsum(lengths) - 1
    return {key: (float(parts["hourly_mean"][i]), float(parts["hourly_ewma"][i]))
            for key, i in zip(keys, last, strict=True)}


def grid_cells(row, column, n_rows: int, n_cols: int):
    """Flat positions ``row * n_cols + column`` in a C-ordered (n_rows, n_cols) grid, as
    numpy's index type (narrower indices are converted on every gather and scatter)."""
    import numpy as np

    out = np.multiply(row, n_cols, dtype=np.intp)
    out += column
    return out


def in_force_index(row, column, n_rows: int, n_cols: int, cells=None):
    """(S, T) grid, series-major: 1 + the position (in the long arrays) of the settlement
    in force at each cell, i.e. the column's last one at or before the row; 0 before its
    first. Series-major because the long arrays are: grouped by column in increasing order,
    time order within each, so their cells increase along them. ``cells`` is
    ``grid_cells(column, row, n_cols, n_rows)`` if the caller has it."""
    import numpy as np

    if cells is None:
        cells = grid_cells(column, row, n_cols, n_rows)
    # The cells increase along the long arrays, so counting settlements along the flat grid
    # gives each cell 1 + the position of the last one at or before it. A column's cells
    # before its first settlement count the columns before it instead: they become 0.
    settled = np.zeros(n_cols * n_rows, dtype=bool)
    settled[cells] = True
    index = np.cumsum(settled, dtype=np.int32 if row.size < 2**31 - 1 else np.int64) \
        .reshape(n_cols, n_rows)
    # Rows before each column's first settlement (past the end for a column without one).
    column_start = np.arange(n_cols) * n_rows
    first = np.searchsorted(cells, column_start)
    first_row = np.full(n_cols, n_rows)
    found = first < cells.size
    first_row[found] = cells[first[found]] - column_start[found]
    for col in np.flatnonzero(first_row):
        index[col, :first_row[col]] = 0
    return index


def settlement_estimates(
    grid_time_us, row, column, rate, *, window_hours: float, halflife_hours: float,
    want: tuple[str, ...] = ("interval_h", "hourly_last", "mean", "ewma"), in_force=None,
) -> dict:
    """Hourly funding estimates at every settlement of every series, all series at once.

    Definitions, per settlement of a series:

    - ``interval_h``: hours since the previous settlement of the series (NaN for the first).
    - ``hourly_last``: the settled rate spread over its interval.
    - ``hourly_mean``: funding paid in (t - window, t] divided by the window; NaN until the
      series covers the whole window (its first settlement lies at least one interval less
      than the window before t), so a short history never passes for a full one.
    - ``hourly_ewma``: exponentially weighted mean of ``hourly_last`` with the given
      half-life in time, not in settlements, so 1h and 8h series weigh alike.

    Input arrays: settlement e of series
    ``column[e]`` (integer ids 0..S-1, the ``key``) at ``grid_time_us[row[e]]`` (the
    distinct settlement times, increasing, microseconds since the epoch) with per-interval
    ``rate[e]``. Rows must be grouped by column in increasing order, in time order within
    each; each column holds its whole history (the window and the EWMA start at its first
    settlement, as a long table grouped by series would). ``in_force`` is
    :func:`in_force_index` of these rows if the caller has it.

    Returns arrays aligned with the input for the names in ``want``: ``interval_h``,
    ``hourly_last``, ``hourly_mean`` (``mean``) and ``hourly_ewma`` (``ewma``), and
    ``in_force`` when it was built for the mean. The window sum is a difference of running
    sums within each series, its start found through the grid; the EWMA is the time-based
    recurrence ``y = d * y_prev + (1 - d) * x`` with ``d = exp(-dt / half_life * ln 2)``,
    one vector step per distinct time across all series. tests/reference_estimators.py
    holds an independent long-table version the tests compare against on real data.
    """
    import math

    import numpy as np

    grid_time_us = np.asarray(grid_time_us, dtype=np.int64)
    row, column = np.asarray(row), np.asarray(column)
    rate = np.asarray(rate, dtype=float)
    n_events, n_rows = row.size, grid_time_us.size
    n_cols = int(column.max()) + 1 if n_events else 0
    first = np.ones(n_events, dtype=bool)          # first settlement of its series
    if n_events:
        np.not_equal(column[1:], column[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    out = {}
    if {"interval_h", "hourly_last", "ewma"} & set(want):
        # total_seconds() is whole seconds, then / 3600.0, as in the long-table version.
        if np.any(grid_time_us % 1_000_000):
            time_us = grid_time_us[row]
            gap_s = np.empty(n_events, dtype=np.int64)
            np.subtract(time_us[1:], time_us[:-1], out=gap_s[1:])
            gap_s //= 1_000_000
        else:   # whole seconds: seconds since the first time (int32 up to 68 years)
            grid_s = (grid_time_us - grid_time_us[0]) // 1_000_000
            narrow = np.int32 if grid_s[-1] < 2**31 else np.int64
            time_s = grid_s.astype(narrow)[row]
            gap_s = np.empty(n_events, dtype=narrow)
            np.subtract(time_s[1:], time_s[:-1], out=gap_s[1:])
        gap_s[first] = 0
        interval_h = gap_s / 3600.0
        interval_h[first] = np.nan
        if "interval_h" in want:
            out["interval_h"] = interval_h
        with np.errstate(invalid="ignore", divide="ignore"):
            hourly_last = rate / interval_h
        if "hourly_last" in want:
            out["hourly_last"] = hourly_last
    if "mean" in want:
        out["hourly_mean"] = _window_mean(grid_time_us, row, rate, starts, n_rows, n_cols,
                                          column, window_hours, in_force, out)
    if "ewma" in want:
        flat = grid_cells(row, column, n_rows, n_cols)
        halflife_us = float(round(halflife_hours * 3600) * 1_000_000)
        decay = np.exp((gap_s.astype(float) * -1_000_000.0) / halflife_us * math.log(2))
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


def _window_mean(grid_time_us, row, rate, starts, n_rows, n_cols, column, window_hours,
                 in_force, out):
    """``hourly_mean`` of :func:`settlement_estimates` (which documents it); puts the
    in-force index it builds into ``out``."""
    import numpy as np

    n_events = row.size
    # Series-major cells (column, row): increasing along the long arrays.
    cells = grid_cells(column, row, n_cols, n_rows)
    if in_force is None:
        in_force = out["in_force"] = in_force_index(row, column, n_rows, n_cols, cells=cells)
    # Settlements whose window reaches back to their series' first one (time - first time
    # < window: a prefix of each series, whose cells end before the grid row where the
    # window starts to leave the first one out), [starts, ends). The window read below
    # means nothing there: see ``whole``.
    window_us = round(window_hours * 3600) * 1_000_000
    leaves = np.searchsorted(grid_time_us, grid_time_us[row[starts]] + window_us, side="left")
    ends = np.searchsorted(cells, np.arange(starts.size) * n_rows + leaves, side="left")
    # Running sum within each series: each series starts from (about) zero, so its
    # rounding is that of its own total. total[k] is the running sum up to event k - 1.
    total = np.empty(n_events + 1)
    total[0] = 0.0
    np.copyto(total[1:], rate)
    total[1 + starts[1:]] -= np.add.reduceat(rate, starts)[:-1]
    np.cumsum(total[1:], out=total[1:])
    # Window (t - window, t]: lo[r] is the last grid row at or before grid time r minus the
    # window, so the series' settlements before the window end at in_force[series, lo]
    # (1 + position), read through the cell (series, lo[row]) = cell + (lo - row)[row]
    # (``cells`` becomes that cell, then the position read there).
    lo = np.searchsorted(grid_time_us, grid_time_us - window_us, side="right") - 1
    cells += (lo - np.arange(n_rows)).take(row)
    np.copyto(cells, in_force.ravel().take(cells))
    window_sum = total.take(cells)
    np.subtract(total[1:], window_sum, out=window_sum)
    # In the prefix the sum is the first rate plus the steps after it (total[start] still
    # holds the previous series' running sum). Everywhere else the series covers the window.
    counts = ends - starts
    first_of = np.repeat(starts, counts)
    whole = np.arange(first_of.size) + np.repeat(starts - (np.cumsum(counts) - counts), counts)
    window_sum[whole] = (total[whole + 1] - total[first_of + 1]) + rate[first_of]
    window_sum /= window_hours
    # Covered: the first settlement lies at least one interval less than the window back
    # (total_seconds() is whole seconds, then / 3600.0, as in the long-table version).
    time_us = grid_time_us[row[whole]]
    since_h = ((time_us - grid_time_us[row[first_of]]) // 1_000_000) / 3600.0
    later = whole != first_of
    interval_h = np.full(whole.size, np.nan)
    interval_h[later] = ((time_us[later] - grid_time_us[row[whole[later] - 1]]) // 1_000_000) \
        / 3600.0
    with np.errstate(invalid="ignore"):
        covered = since_h >= window_hours - interval_h      # False where NaN
    window_sum[whole[~covered]] = np.nan
    window_sum[starts] = np.nan   # no interval yet (in ``whole`` unless the window is 0)
    return window_sum
