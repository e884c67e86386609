"""``perpcarry run --paper --replay``: the run loop over real history agrees with
``perpcarry backtest`` on the same rules and data (the parity docs/run.md explains), through
the 2024 rally too, where both top the shorts' margin up by the same rule; and ``perpcarry
pnl --replay`` shows what it earned."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import numpy as np
import pytest

from perpcarry.backtest.engine import LIQUIDATED, RULE_TRADE
from perpcarry.backtest.history import load_bundled
from perpcarry.backtest.panel import select
from perpcarry.backtest.run import BacktestSettings, taker_fees
from perpcarry.backtest.run import replay as backtest_replay
from perpcarry.config.loader import load_config
from perpcarry.run.replay import open_replay_journal, replay, replay_history

VENUES = ["binance", "bybit", "okx"]
START, END = datetime(2023, 10, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)
# The bundled 8h bars' whole span: BTC from 16.5k to 73k, the shorts' margin topped up.
RALLY = datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC)
# Three paper accounts of 100,000 USDT each ([paper] balances): the backtest's capital, with
# each venue capped at a quarter of it on both sides, so that each account keeps spare quote
# for its shorts' top-ups, as the backtest's free cash is (one pot there, one per account in
# the replay: docs/run.md, parity).
CAPITAL, VENUE_SHARE = 300_000.0, 0.25
# A trade the backtest makes of less than this share of the capital may be absent from the
# replay, and the other way round: the allocator's LP puts a few dollars at the edge of a
# cap one way or the other as the last dollars of equity differ (docs/run.md, parity).
DUST = 0.001


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "perpcarry.toml"
    path.write_text(f"[allocator]\nmax_venue_share = {VENUE_SHARE}\n")
    return load_config(path)


pytestmark = pytest.mark.usefixtures("data_dir")


def backtest_trades(config, start=START, end=END):
    """(trades, dust trades, funding, simulation) of the backtest: the rules' trades as
    (time, venue, base, kind) with kind open | add | reduce | close (the margin model's
    top-ups are the simulation's ``margin_events``)."""
    history = select(replay_history(load_bundled(), end), VENUES)
    fees, sources = taker_fees(config, VENUES)
    settings = BacktestSettings(
        backtest=config.settings.backtest.model_copy(update={"capital": CAPITAL}),
        strategy=config.settings.strategy)
    allocator = config.settings.allocator
    sim = backtest_replay(history, settings, allocator, fees, sources, start=start,
                          end=end).simulation
    panel, held = sim.panel, sim.quantity
    trades, dust = set(), set()
    for row, s, entry, leaving, notional, kind in zip(
            sim.trade_row, sim.trade_series, sim.trade_entry, sim.trade_exit,
            sim.trade_notional, sim.trade_kind, strict=True):
        assert kind != LIQUIDATED
        if kind != RULE_TRADE:
            continue
        before, after = held[row, s], held[min(row + 1, held.shape[0] - 1), s]
        kind = ("open" if entry else "close" if leaving
                else "add" if after > before else "reduce")
        when = datetime.fromtimestamp(panel.hours[row] * 3600, UTC)
        trade = (when, panel.venues[s], panel.bases[s], kind)
        (dust if notional < DUST * CAPITAL else trades).add(trade)
    return trades, dust, float(sim.event_funding.sum()), sim


@pytest.mark.parametrize("start, end", [(START, END), RALLY], ids=["2023q4", "rally"])
def test_replay_and_backtest_agree_on_trades_and_funding(config, data_dir, start, end):
    cycles = []
    report = asyncio.run(replay(config, start, end, venues=VENUES,
                                on_cycle=cycles.append))
    assert report.cycles == len(cycles) > 200
    replayed = {(c.at, a.venue, a.base, a.kind) for c in cycles for a in c.actions
                if a.kind in {"open", "add", "reduce", "close"}}
    assert all(a.kind != "failed" for c in cycles for a in c.actions)
    trades, dust, funding, sim = backtest_trades(config, start, end)
    assert len(trades) >= 10
    assert trades - replayed == set()
    assert replayed - trades - dust == set()
    with open_replay_journal(data_dir) as (journal, record):
        received = sum(float(r.payment.amount) for r in journal.funding())
        assert record.end == max(c.at for c in cycles)
    assert received == pytest.approx(funding, rel=0.005)
    # The margin: the same rule on both sides, nothing liquidated or closed by the ceiling.
    margin = report.margin
    assert margin.reduced == margin.liquidatable == 0
    assert margin.max_utilisation[0] <= config.settings.risk.utilisation_ceiling
    assert margin.min_distance[0] > config.settings.risk.floor_distance
    if (start, end) == RALLY:
        # Both top up through the rally (pool vs short: the counts need not match).
        assert margin.topups > 0 and sim.margin_events
        assert margin.transfers > 0 and margin.transferred > 0


def test_pnl_replay_shows_funding_per_venue(run_cli, data_dir):
    result = run_cli("run", "--paper", "--replay", "2023-11-01..2023-12-15", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["cycles"] > 100 and report["actions"]
    document = json.loads(run_cli("pnl", "--replay", "--json").stdout)
    assert document["replay"]["end"].startswith("2023-12-15")
    venues = {v["venue"]: v for v in document["venues"]}
    traded = {a["venue"] for a in report["actions"] if a["kind"] == "open"}
    assert traded and traded <= set(venues)
    assert all(float(venues[v]["funding"]) != 0 for v in traded)
    total = sum(float(v["funding"]) for v in document["venues"])
    assert np.isclose(total, float(document["totals"][0]["funding"]))


def test_pnl_replay_without_a_replay_is_one_line(run_cli):
    result = run_cli("pnl", "--replay")
    assert result.exit_code == 2
    assert "no replay" in result.stderr and "perpcarry run --paper --replay" in result.stderr
