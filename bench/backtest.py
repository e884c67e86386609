"""Backtest speed: 1 year x 500 symbols x 3 venues, vectorised engine vs a per-event loop.

    python bench/backtest.py [--loop-share 0.1]

The workload tiles the bundled real Binance history (zushen, 36 perps, 1 year, 8h and 4h,
with mark prices) to 500 series per venue on binance, bybit and okx: series j replays real
series j mod 36 with its rates rolled by 7 settlements per copy, so copies disagree. Both
engines start from the same history table with the same estimates (``settlement_estimates``)
and call the same allocator (``solve_lp``) whenever the eligible set changes. The loop is
the straightforward version: one Python step per funding event, one Python pass over the
series at each rebalance. It runs on the first ``--loop-share`` of the series and its time
is scaled to the full event count (its cost is linear in events and series).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl

from perpcarry import yields
from perpcarry.allocator import Limits
from perpcarry.backtest.engine import lp_allocator, simulate
from perpcarry.backtest.history import load_bundled
from perpcarry.backtest.panel import build_panel, expected_hourly
from perpcarry.backtest.run import strategy_from, taker_fees
from perpcarry.config import load_config
from perpcarry.estimators import settlement_estimates
from perpcarry.settings import BacktestConfig

VENUES = ("binance", "bybit", "okx")
PER_VENUE = 500
ROLL = 7


def workload() -> pl.DataFrame:
    real = load_bundled().filter((pl.col("source") == "zushen-funding")
                                 & (pl.col("venue") == "binance"))
    symbols = real["symbol"].unique().sort().to_list()
    frames = []
    for copy in range(PER_VENUE):
        series = real.filter(pl.col("symbol") == symbols[copy % len(symbols)])
        shift = ROLL * (copy // len(symbols))
        name = f"S{copy:03d}"
        rolled = series.with_columns(pl.col("rate").shift(shift).fill_null(
            pl.col("rate").tail(shift).implode().list.first()) if shift else pl.col("rate"),
            symbol=pl.lit(f"{name}/USDT:USDT"), base=pl.lit(name))
        frames.append(rolled)
    one = pl.concat(frames)
    return pl.concat([one.with_columns(venue=pl.lit(v)) for v in VENUES])


def per_event_loop(history: pl.DataFrame, panel, strategy, fees, allocate_fn) -> float:
    """Funding income of the straightforward loop: Python per event and per series."""
    keys = [f"{v}|{s}" for v, s in zip(panel.venues, panel.symbols, strict=True)]
    column = {k: i for i, k in enumerate(keys)}
    rows = history.with_columns(key=pl.col("venue") + "|" + pl.col("symbol")).sort("time")
    rebalance_hours = set(panel.hours[panel.rebalance].tolist())
    n = len(keys)
    spot_fee = [fees[v][0] for v in panel.venues]
    perp_fee = [fees[v][1] for v in panel.venues]
    qty, held = [0.0] * n, [False] * n
    entered, exited = [-1e18] * n, [-1e18] * n
    estimate, mark, spot, last_seen = [float("nan")] * n, [float("nan")] * n, [0.0] * n, [0.0] * n
    equity, funding, before = strategy.capital, 0.0, None
    current_hour = None
    times = (rows["time"].dt.epoch("s") / 3600.0).to_list()

    def rebalance(now):
        nonlocal equity, before
        eligible = []
        for s in range(n):
            cost = yields.round_trip_cost(spot_fee[s], perp_fee[s], 2 * strategy.spread_cost)
            e = estimate[s]
            net = float("nan") if e != e else yields.net_apr(
                yields.apr_from_hourly(e), yields.basis(mark[s], spot[s]), cost,
                strategy.horizon_days)
            live = now - last_seen[s] < 12
            if held[s]:
                stay = live and not (net < strategy.exit_apr
                                     and now - entered[s] >= strategy.min_hold_hours)
                eligible.append(stay)
            else:
                eligible.append(live and net > strategy.enter_apr
                                and now - exited[s] >= strategy.cooldown_hours)
        if eligible != before:
            before = eligible
            members = np.array([s for s in range(n) if eligible[s]], dtype=np.int64)
            net_all = np.zeros(n)
            for s in members:
                net_all[s] = yields.net_apr(
                    yields.apr_from_hourly(estimate[s]), yields.basis(mark[s], spot[s]),
                    yields.round_trip_cost(spot_fee[s], perp_fee[s], 2 * strategy.spread_cost),
                    strategy.horizon_days)
            target = allocate_fn(members, net_all, equity) if members.size else []
            targets = dict(zip(members.tolist(), list(target), strict=True))
            for s in range(n):
                new = targets.get(s, 0.0) / mark[s] if s in targets else 0.0
                change = abs(new - qty[s])
                if change:
                    equity -= change * (spot[s] * spot_fee[s] + mark[s] * perp_fee[s])
                    if new > 0 and not held[s]:
                        entered[s] = now
                    if new == 0 and held[s]:
                        exited[s] = now
                    held[s] = new > 0
                    qty[s] = new

    for hour, key, rate, price, spot_px, est in zip(
            times, rows["key"].to_list(), rows["rate"].to_list(),
            rows["mark_price"].to_list(), rows["spot_price"].fill_null(0.0).to_list(),
            rows["estimate"].to_list(), strict=True):
        if hour != current_hour:
            if current_hour is not None and current_hour in rebalance_hours:
                rebalance(current_hour)
            current_hour = hour
        s = column.get(key)
        if s is None:
            continue
        paid = qty[s] * price * rate
        funding += paid
        equity += paid
        mark[s], spot[s], last_seen[s] = price, spot_px or price, hour
        estimate[s] = float("nan") if est is None else est
    return funding


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop-share", type=float, default=0.1,
                        help="share of the series the per-event loop runs on (then scaled)")
    args = parser.parse_args()
    config = load_config(None)
    settings = BacktestConfig()
    history = workload()
    fees, _ = taker_fees(config, VENUES)
    strategy = strategy_from(settings)
    limits = Limits.from_config(config.settings.allocator, capital=settings.capital)

    import scipy.optimize  # noqa: F401  - a one-off import, not part of the workload

    started = time.perf_counter()
    panel = build_panel(history, estimator=settings.estimator,
                        window_hours=settings.window_days * 24,
                        halflife_hours=settings.ewma_halflife_days * 24)
    prepared = time.perf_counter()
    allocate = lp_allocator(limits, panel.venues, panel.bases)
    sim = simulate(panel, strategy, np.array([fees[v][0] for v in panel.venues]),
                   np.array([fees[v][1] for v in panel.venues]), allocate)
    vector_s = time.perf_counter() - started
    started_vector = started
    events = panel.events
    print(f"workload: {len(panel.symbols)} series, {events:,} funding events, "
          f"{panel.rebalance.size:,} rebalances ({panel.cadence_hours:g}h), "
          f"allocator solved {sim.allocator_runs} times")
    print(f"vectorised: {vector_s:.3f} s (panel {prepared - started:.3f} s, simulation "
          f"{vector_s - (prepared - started):.3f} s), {events / vector_s:,.0f} events/s")

    # The loop over a share of the series, with the same estimates and allocator.
    keep = sorted(history["symbol"].unique().to_list())
    keep = keep[: max(1, int(len(keep) * args.loop_share))]
    subset = history.filter(pl.col("symbol").is_in(keep))
    sub_panel = build_panel(subset, estimator=settings.estimator,
                            window_hours=settings.window_days * 24,
                            halflife_hours=settings.ewma_halflife_days * 24)
    rows = subset.with_columns(key=pl.col("venue") + "|" + pl.col("symbol") + "|"
                               + pl.col("source"))
    est = settlement_estimates(rows.select("key", "time", "rate"),
                               window_hours=settings.window_days * 24,
                               halflife_hours=settings.ewma_halflife_days * 24)
    rows = rows.join(est.select("key", "time", "hourly_mean", "hourly_ewma"),
                     on=["key", "time"], how="left").sort("key", "time")
    rows = rows.with_columns(estimate=pl.Series(expected_hourly(rows, settings.estimator)))
    sub_allocate = lp_allocator(limits, sub_panel.venues, sub_panel.bases)
    started = time.perf_counter()
    per_event_loop(rows, sub_panel, strategy, fees, sub_allocate)
    loop_s = time.perf_counter() - started
    loop_rate = sub_panel.events / loop_s
    print(f"per-event loop: {loop_s:.3f} s on {sub_panel.events:,} events "
          f"({len(sub_panel.symbols)} series, {args.loop_share:.0%}), {loop_rate:,.0f} events/s,"
          f" scaled to the full workload {events / loop_rate:.1f} s")
    ratio = (events / vector_s) / loop_rate
    sim_s = vector_s - (prepared - started_vector)
    print(f"speed-up: {ratio:.1f}x end to end, {(events / sim_s) / loop_rate:.1f}x for the "
          f"simulation stage alone (target >= 50x); vectorised within 2 s: "
          f"{'yes' if vector_s <= 2 else 'NO'}")


if __name__ == "__main__":
    main()
