"""Backtest validation: funding money against the raw data, settlement cadence, costs."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from perpcarry.backtest.history import load_bundled, load_path
from perpcarry.backtest.run import run_backtest
from perpcarry.config import load_config
from perpcarry.settings import BacktestConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DORIAN = SHARED_DATA / "dorian-binance"


def equal_shares(members, net_apr, equity, pinned=None):
    """Hold every eligible pair with an equal share of half the equity (no LP)."""
    return np.full(members.size, 0.5 * equity / members.size)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_buy_and_hold_btc_funding_equals_raw_csv_sum():
    settings = BacktestConfig(estimator="current", exit_apr=-1e9, min_hold_hours=0,
                              cooldown_hours=0)
    run = run_backtest(load_config(None), settings, venues=["binance"], symbols=["BTC"],
                       start=datetime(2021, 1, 1, tzinfo=UTC),
                       end=datetime(2024, 12, 31, 23, 59, tzinfo=UTC))
    sim = run.simulation
    assert run.summary["entries"] == 1 and run.summary["exits"] == 1
    held = sim.quantity[:, 0]
    quantity = held.max()
    assert set(np.unique(held)) == {0.0, quantity}       # bought once, never resized
    first_held = sim.panel.times[np.argmax(held > 0)].astype("datetime64[us]").item()
    first_held = first_held.replace(tzinfo=UTC)

    # Independent: the raw CSV's rates x the raw mark price (or, where Binance left it
    # blank, the perp daily kline's open of that UTC day) x the quantity held.
    with (DORIAN / "perp_BTCUSDT_1d_20210101_20241231.csv").open() as fh:
        day_open = {_utc(r["open_time"]).date(): float(r["open"]) for r in csv.DictReader(fh)}
    expected, settlements = 0.0, 0
    with (DORIAN / "funding_BTCUSDT_20210101_20241231.csv").open() as fh:
        for row in csv.DictReader(fh):
            at = _utc(row["funding_time"])
            if at.replace(second=0, microsecond=0) < first_held:
                continue
            mark = float(row["mark_price"]) if row["mark_price"] else day_open[at.date()]
            expected += quantity * mark * float(row["funding_rate"])
            settlements += 1
    assert settlements > 4000
    assert run.summary["funding_income"] == pytest.approx(expected, rel=1e-9)
    # The allocator's caps: one asset gets at most max_asset_share of capital, and one unit
    # of notional uses 1 + 1.5 / 2 of capital (spot paid, perp margin with its buffer).
    entry_notional = quantity * sim.panel.mark[np.argmax(held > 0) - 1, 0]
    assert entry_notional == pytest.approx(0.2 * 100_000 / 1.75, rel=1e-9)


def test_4h_series_accrues_six_settlements_a_day_and_8h_three():
    settings = BacktestConfig(estimator="current", enter_apr=-1e9, exit_apr=-1e9,
                              min_hold_hours=0, cooldown_hours=0)
    run = run_backtest(load_config(None), settings, venues=["bybit"],
                       symbols=["WIF/USDT:USDT", "BTC/USDT:USDT"],
                       start=datetime(2025, 9, 1, tzinfo=UTC),
                       end=datetime(2025, 10, 1, tzinfo=UTC), allocate=equal_shares)
    sim = run.simulation
    assert sim.panel.cadence_hours == 4
    accrued = (sim.quantity > 0) & sim.panel.settled & (sim.funding != 0)
    days = sim.panel.times.astype("datetime64[D]")
    per_day = {symbol: [] for symbol in sim.panel.symbols}
    for day in np.unique(days)[1:-1]:                       # whole days only
        rows = days == day
        for column, symbol in enumerate(sim.panel.symbols):
            per_day[symbol].append(int(accrued[rows, column].sum()))
    assert set(per_day["WIF/USDT:USDT"]) == {6}
    assert set(per_day["BTC/USDT:USDT"]) == {3}


def test_enter_and_exit_every_rebalance_loses_exactly_fees_and_spread(tmp_path):
    start = datetime(2024, 1, 1, tzinfo=UTC)
    times = [start + timedelta(hours=8 * i) for i in range(30)]
    flat = pl.DataFrame({
        "venue": "binance", "symbol": "BTC/USDT:USDT", "base": "BTC", "time": times,
        "rate": 0.0, "interval_hours": 8.0, "mark_price": 50_000.0, "spot_price": 50_000.0,
        "source": "fixture",
    }).with_columns(pl.col("time").dt.cast_time_unit("us"))
    data = tmp_path / "flat.parquet"
    flat.write_parquet(data)
    spread = 0.0005
    # Exit above entry: a held pair always leaves, a flat one always enters.
    settings = BacktestConfig(estimator="current", enter_apr=-1.0, exit_apr=1.0,
                              min_hold_hours=0, cooldown_hours=0, spread_cost=spread,
                              capital=10_000)
    run = run_backtest(load_config(None), settings, data=data, allocate=equal_shares)
    s = run.summary

    # Binance VIP0 taker: 0.10 % spot + 0.05 % perp, paid on both legs of every trade.
    per_trade = 0.0010 + 0.0005 + spread
    equity, trades = 10_000.0, 0
    for step in range(30):
        if step % 2 == 0 and step < 29:               # enter; the last settlement ends data
            notional = 0.5 * equity
            equity -= notional * per_trade
            trades += 1
        elif step % 2 == 1:                           # leave the position entered before
            equity -= notional * per_trade
            trades += 1
    assert s["entries"] == 15 and s["exits"] == 15 and trades == 30
    assert s["funding_income"] == 0.0 and s["basis_pnl"] == 0.0
    assert round(s["final_equity"], 2) == round(equity, 2)
    assert round(s["capital"] - s["final_equity"], 2) == round(s["fees_paid"] + s["spread_paid"], 2)


def test_engine_equity_matches_its_vectorised_ledger():
    """The sizing equity of the loop and the reported equity curve agree."""
    run = run_backtest(load_config(None), BacktestConfig(), venues=["bybit", "okx"],
                       start=datetime(2023, 1, 1, tzinfo=UTC),
                       end=datetime(2024, 7, 1, tzinfo=UTC))
    s = run.summary
    assert s["entries"] > 0
    assert s["final_equity"] == pytest.approx(
        s["capital"] + s["funding_income"] + s["basis_pnl"] - s["fees_paid"] - s["spread_paid"],
        rel=1e-12)
    # Per-venue contributions add up to the total.
    assert sum(v["net_pnl"] for v in s["per_venue"].values()) == pytest.approx(
        s["final_equity"] - s["capital"], rel=1e-9)


def test_bundled_history_covers_the_promised_sets():
    history = load_bundled()
    spans = {(v, src): (n, first, last) for v, src, n, first, last in history.group_by(
        "venue", "source").agg(pl.col("symbol").n_unique(), pl.col("time").min().alias("a"),
                               pl.col("time").max().alias("b")).iter_rows()}
    n, first, last = spans[("binance", "dorian-binance")]
    assert n == 2 and first.year == 2021 and last.year == 2024
    assert spans[("binance", "zushen-funding")][0] == 36
    assert spans[("bybit", "zushen-funding")][0] == 51
    assert spans[("okx", "aha-3exch")][0] == 2
    aha = history.filter(pl.col("source") == "aha-3exch")
    assert aha["spot_price"].null_count() == 0 and aha["mark_price"].null_count() == 0


def test_supervik_local_time_and_aha_uk_time_land_on_dorian_settlements():
    dorian = load_path(DORIAN).select("symbol", "time", "rate")
    supervik = load_path(SHARED_DATA / "supervik" /
                         "BTC-USDT_binance_2020-01-01_2024-01-01_funding_history.csv")
    aha = load_path(SHARED_DATA / "aha-3exch").filter(pl.col("venue") == "binance")
    for other, expected_rows in ((supervik, 3 * 365 * 3), (aha, 1642 * 2)):
        joined = other.join(dorian, on=["symbol", "time"])
        assert len(joined) >= expected_rows
        assert (joined["rate"] - joined["rate_right"]).abs().max() == 0.0
