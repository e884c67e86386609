"""Backtest validation: funding money against the raw data, settlement cadence, costs."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hypothesis
import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from perpcarry.backtest.history import load_bundled, load_path
from perpcarry.backtest.run import BacktestSettings, run_backtest
from perpcarry.config.loader import load_config
from perpcarry.config.settings import BacktestConfig, StrategyConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DORIAN = SHARED_DATA / "dorian-binance"


def equal_shares(members, net_apr, equity, pinned=None):
    """Hold every eligible pair with an equal share of half the equity (no LP)."""
    return np.full(members.size, 0.5 * equity / members.size)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_buy_and_hold_btc_funding_equals_raw_csv_sum():
    settings = BacktestSettings.of(estimator="current", exit_apr=-1e9, min_hold_hours=0,
                                   cooldown_hours=0, exit_funding_below=None)
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
    settings = BacktestSettings.of(estimator="current", enter_apr=-1e9, exit_apr=-1e9,
                                   min_hold_hours=0, cooldown_hours=0, exit_funding_below=None)
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
    # Exit above entry: a held pair always leaves, a flat one always enters. Validation
    # refuses that hysteresis to users; constructed unvalidated to force the churn.
    settings = BacktestSettings.model_construct(
        backtest=BacktestConfig(capital=10_000), strategy=StrategyConfig.model_construct(
            estimator="current", enter_apr=-1.0, exit_apr=1.0, min_hold_hours=0,
            cooldown_hours=0, spread_cost=spread))
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
    run = run_backtest(load_config(None), BacktestSettings(), venues=["bybit", "okx"],
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


def test_estimates_equal_an_independent_long_table_version_on_real_data():
    """The core estimators give the same numbers as an independent polars statement of the
    definitions on every bundled settlement (the EWMA bit for bit at the default half-life;
    the window mean to float rounding of a running sum: within 1e-9 relative, or 1e-17 an
    hour where it is ~0)."""
    from reference_estimators import reference_settlement_estimates

    from perpcarry.money.estimators import settlement_estimates

    history = load_bundled().with_columns(
        key=pl.col("venue") + "|" + pl.col("symbol") + "|" + pl.col("source"))
    for window, halflife in ((7 * 24, 48), (3 * 24 + 0.5, 11.3)):
        polars_version = reference_settlement_estimates(
            history.select("key", "time", "rate"), window_hours=window, halflife_hours=halflife)
        _, column = np.unique(polars_version["key"].to_numpy(), return_inverse=True)
        times, row = np.unique(polars_version["time"].to_numpy().view(np.int64),
                               return_inverse=True)
        dense = settlement_estimates(times, row, column, polars_version["rate"].to_numpy(),
                                     window_hours=window, halflife_hours=halflife)
        for name, polars_name in (("interval_h", "interval_h"),
                                  ("hourly_last", "hourly_last"),
                                  ("hourly_mean", "hourly_mean"),
                                  ("hourly_ewma", "hourly_ewma")):
            expected = polars_version[polars_name].fill_null(np.nan).to_numpy()
            got = dense[name]
            assert np.array_equal(np.isnan(got), np.isnan(expected)), name  # same nulls
            known = ~np.isnan(expected)
            assert known.sum() > 100_000
            if name in ("interval_h", "hourly_last") or (name == "hourly_ewma"
                                                          and halflife == 48):
                assert np.array_equal(got[known], expected[known]), name
            np.testing.assert_allclose(got[known], expected[known], rtol=1e-9, atol=1e-17)


@hypothesis.settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 29), unique=True, max_size=12), max_size=6))
def test_in_force_index_is_each_series_last_settlement_at_or_before_the_row(rows):
    """Cell (series, grid row) holds 1 + the position in the long arrays of the series' last
    settlement at or before that row, 0 before its first (series may start late or never
    settle)."""
    from perpcarry.money.estimators import in_force_index

    rows = [sorted(r) for r in rows]
    index = in_force_index(np.array([r for rs in rows for r in rs], dtype=np.intp),
                           np.repeat(np.arange(len(rows)), [len(rs) for rs in rows]),
                           30, len(rows))
    assert index.shape == (len(rows), 30)
    position = 0
    for series, settled in enumerate(rows):
        for row in range(30):
            done = [p for p, r in enumerate(settled) if r <= row]
            assert index[series, row] == (position + done[-1] + 1 if done else 0)
        position += len(settled)


def test_settlements_off_the_minute_keep_their_own_grid_times():
    """A venue stamping settlements 30 s after the hour gets grid times of its own (no
    rounding to the minute), and every settlement lands on its exact time."""
    from perpcarry.backtest.panel import build_panel

    start = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [(venue, "BTC/USDT:USDT", "BTC", start + timedelta(hours=8 * i, seconds=offset),
             1e-4, 8.0, 100.0, None, "fixture")
            for venue, offset in (("binance", 0), ("bybit", 30)) for i in range(30)]
    history = pl.DataFrame(rows, orient="row", schema=[
        "venue", "symbol", "base", "time", "rate", "interval_hours", "mark_price",
        "spot_price", "source"]).with_columns(pl.col("time").dt.cast_time_unit("us"))
    panel = build_panel(history, estimator="mean", window_hours=24, halflife_hours=24)
    times = history["time"].to_numpy()
    assert np.array_equal(panel.times, np.unique(times)) and panel.times.size == 60
    assert np.array_equal(panel.times[panel.event_row], times)
    assert panel.rebalance.size == 30                     # binance's, on the 8h cadence


def _two_pair_history(tmp_path, jump_at: int) -> Path:
    """BTC pays a steady 0.03 % per 8h; ETH pays nothing, then 0.1 % from ``jump_at``."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rows = []
    for base, rate_of in (("BTC", lambda i: 0.0003),
                          ("ETH", lambda i: 0.001 if i >= jump_at else 0.0)):
        for i in range(40):
            rows.append(("binance", f"{base}/USDT:USDT", base, start + timedelta(hours=8 * i),
                         rate_of(i), 8.0, 100.0, 100.0, "fixture"))
    frame = pl.DataFrame(rows, orient="row", schema=["venue", "symbol", "base", "time", "rate",
                                                     "interval_hours", "mark_price",
                                                     "spot_price", "source"])
    path = tmp_path / "two.parquet"
    frame.with_columns(pl.col("time").dt.cast_time_unit("us")).write_parquet(path)
    return path


@pytest.mark.parametrize("min_hold_hours", [0.0, 10_000.0])
def test_positions_inside_min_hold_are_pinned_when_the_lp_reruns(tmp_path, min_hold_hours):
    """max_positions = 1: when ETH starts paying more, the LP re-runs and prefers it. A BTC
    position still inside its minimum holding time keeps its quantity (pinned, using the
    only slot); without a minimum hold the LP may swap it for ETH."""
    from perpcarry.allocation.allocator import Limits
    from perpcarry.backtest.engine import lp_allocator, simulate
    from perpcarry.backtest.panel import build_panel
    from perpcarry.config.settings import AllocatorConfig
    from perpcarry.strategy.rules import Rules

    history = load_path(_two_pair_history(tmp_path, jump_at=20))
    settings = StrategyConfig(estimator="current", enter_apr=0.05, exit_apr=0.01,
                              min_hold_hours=min_hold_hours, cooldown_hours=0,
                              spread_cost=0.0, horizon_days=365)
    panel = build_panel(history, estimator="current", window_hours=24, halflife_hours=24)
    limits = Limits.from_config(AllocatorConfig(max_positions=1, max_asset_share=1.0,
                                                max_pair_share=1.0, max_venue_share=1.0),
                                capital=100_000)
    sim = simulate(panel, Rules.from_config(settings), 100_000, np.full(2, 0.001),
                   np.full(2, 0.0005),
                   lp_allocator(limits, panel.venues, panel.bases))
    btc, eth = panel.symbols.index("BTC/USDT:USDT"), panel.symbols.index("ETH/USDT:USDT")
    assert sim.allocator_runs >= 2                     # the LP ran again when ETH joined
    held_btc = sim.quantity[:, btc]
    entered = np.argmax(held_btc > 0)
    if min_hold_hours:
        # Held from entry to the end of the data at one quantity; ETH never got the slot.
        assert np.all(held_btc[entered:-1] == held_btc[entered]) and held_btc[entered] > 0
        assert not sim.quantity[:, eth].any()
    else:
        assert sim.exits[:, btc].any() and sim.quantity[:, eth].any()


def test_funding_history_cache_loads_with_intervals_from_spacing(tmp_path):
    """The venue plugins' SQLite cache (history_store) as --data: rates, marks and times of
    real bundled rows come back, intervals inferred from the settlement spacing."""
    from decimal import Decimal

    from perpcarry.ccxt.history_store import FundingHistoryStore
    from perpcarry.domain.types import FundingRecord

    real = load_bundled().filter(
        (pl.col("venue") == "bybit") & pl.col("symbol").is_in(["WIF/USDT:USDT",
                                                              "BTC/USDT:USDT"])
        & (pl.col("source") == "zushen-funding")
        & pl.col("time").is_between(datetime(2025, 9, 1, tzinfo=UTC),
                                    datetime(2025, 9, 15, tzinfo=UTC)))
    binance = load_bundled().filter(
        (pl.col("venue") == "binance") & (pl.col("symbol") == "ETH/USDT:USDT")
        & (pl.col("source") == "zushen-funding")
        & pl.col("time").is_between(datetime(2025, 9, 1, tzinfo=UTC),
                                    datetime(2025, 9, 15, tzinfo=UTC)))
    real = pl.concat([real, binance])
    store = FundingHistoryStore(tmp_path / "cache" / "funding_history.sqlite")
    for (venue, symbol), rows in real.group_by("venue", "symbol"):
        records = [FundingRecord(venue, symbol, t, Decimal(repr(rate)),
                                 None if mark is None else Decimal(repr(mark)))
                   for t, rate, mark in rows.select("time", "rate", "mark_price").iter_rows()]
        store.add(venue, symbol, records, 0, 2**42)
    store.close()

    loaded = load_path(tmp_path / "cache")               # the cache folder, as --data takes it
    assert loaded["source"].unique().to_list() == ["funding-history-cache"]
    joined = loaded.join(real, on=["venue", "symbol", "time"], suffix="_real")
    assert len(joined) == len(real) == len(loaded)
    assert (joined["rate"] - joined["rate_real"]).abs().max() == 0.0
    assert joined["interval_hours"].equals(joined["interval_hours_real"], check_names=False)
    assert set(joined["interval_hours"].unique()) == {4.0, 8.0}
    assert joined.filter(pl.col("venue") == "binance")["mark_price"].equals(
        joined.filter(pl.col("venue") == "binance")["mark_price_real"], check_names=False)
    run = run_backtest(load_config(None), BacktestSettings(), data=tmp_path / "cache")
    assert run.summary["settlements"] > 0 and run.summary["series"] == 3


def test_default_span_stays_where_the_selected_venues_have_data():
    """The bundled history has a gap (2025-01 to 2025-08): a run without --start/--end
    covers one stretch, where all its venues have data, and says which."""
    run = run_backtest(load_config(None), BacktestSettings.of(estimator="current"),
                       venues=["bybit", "okx"])
    s = run.summary
    assert s["start"] == "2023-01-01T00:00:00Z" and s["end"] == "2024-07-01T00:00:00Z"
    assert s["notes"][0].startswith("span 2023-01-01 00:00 → 2024-07-01 00:00 (default): "
                                    "where bybit, okx all have data")
    run = run_backtest(load_config(None), BacktestSettings.of(estimator="current"),
                       venues=["binance"], symbols=["BTC"])
    # Two stretches of one venue: the one with more settlements (2021-2024, not 2025-26).
    assert run.summary["start"].startswith("2021-01-01")
    assert run.summary["end"].startswith("2024-12-31")
    given = run_backtest(load_config(None), BacktestSettings.of(estimator="current"),
                         venues=["binance"], symbols=["BTC"],
                         start=datetime(2024, 6, 1, tzinfo=UTC))
    assert given.summary["start"].startswith("2024-06-01")
    assert given.summary["notes"][0].endswith("(as given)")
