"""The backtest's margin model (perpcarry.backtest.margin) on the bundled 2021 BTC carry:
top-ups when the short's loss eats its buffer, liquidation when nothing could be done."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from perpcarry.backtest.engine import LIQUIDATED, TOPUP_TRADE
from perpcarry.backtest.margin import LIQUIDATION, REBALANCE, TRANSFER
from perpcarry.backtest.run import BacktestSettings, margin_model, run_backtest, taker_fees
from perpcarry.config.loader import load_config
from perpcarry.config.settings import AllocatorConfig

BTC_2021 = ("backtest", "--venue", "binance", "--symbol", "BTC", "--start", "2021-01-01",
            "--end", "2021-12-31", "--no-plots", "--json")
# Leverage at its highest, every cap open (no free cash), a floor just above maintenance.
ALL_IN = ("--leverage", "5", "--max-asset-share", "1", "--max-pair-share", "1",
          "--max-venue-share", "1")


def identity_gap(s: dict) -> float:
    m = s["margin"]
    expected = (s["capital"] + s["funding_income"] + s["basis_pnl"] - s["fees_paid"]
                - s["spread_paid"] - m["rebalance_cost"] - m["liquidation_loss"])
    return abs(s["final_equity"] / expected - 1.0)


def test_btc_2021_is_topped_up_from_january_and_never_liquidated(run_cli):
    result = run_cli(*BTC_2021)
    assert result.exit_code == 0, result.stderr
    s = json.loads(result.stdout)
    m = s["margin"]
    # The default floor (1.25x the initial margin) is reached in January's rise; a floor of
    # 1.0 (the buffer used up) only in February, and fewer times.
    assert m["topups"] > 0 and m["first_topup"].startswith("2021-01")
    used_up = json.loads(run_cli(*BTC_2021, "--margin-floor", "1").stdout)["margin"]
    assert used_up["first_topup"].startswith("2021-02")
    assert 0 < used_up["topups"] < m["topups"]
    # Caps leave free cash: every top-up is a transfer, at no cost.
    assert m["transfers"] == m["topups"] and m["transferred"] > 0
    assert m["rebalances"] == 0 and m["rebalance_cost"] == 0
    assert m["liquidations"] == 0 and "liquidation" not in s["exits_by_rule"]
    assert identity_gap(s) < 1e-9


def test_high_leverage_without_free_cash_is_liquidated_with_a_low_floor(run_cli):
    safe = json.loads(run_cli(*BTC_2021, *ALL_IN).stdout)
    assert safe["margin"]["liquidations"] == 0
    assert safe["margin"]["rebalances"] > 0 and safe["margin"]["transferred"] == 0
    assert safe["margin"]["rebalance_cost"] > 0 and safe["margin"]["rebalanced_quantity"]["BTC"] > 0
    assert identity_gap(safe) < 1e-9
    low = run_cli(*BTC_2021, *ALL_IN, "--margin-floor", "0.05")
    assert low.exit_code == 0, low.stderr
    s = json.loads(low.stdout)
    assert s["margin"]["liquidations"] > 0 and s["margin"]["liquidation_loss"] > 0
    assert s["exits_by_rule"]["liquidation"] == s["margin"]["liquidations"]
    assert identity_gap(s) < 1e-9


@pytest.mark.parametrize("floor", [1.0, 0.05])
def test_each_event_finds_the_margin_an_independent_replay_of_the_short_gives(floor):
    """Replay each held stretch of the short here, from the margin posted at entry, the
    funding and the mark, and the events' own transfers and spot sales: every event finds
    the margin this replay gives, below the floor, and the margin stays above the floor
    between events; a liquidation finds it below maintenance."""
    config = load_config(None)
    allocator = AllocatorConfig(leverage=5, max_asset_share=1, max_pair_share=1,
                                max_venue_share=1)
    settings = BacktestSettings.of(margin_floor=floor)
    run = run_backtest(config, settings, venues=["binance"], symbols=["BTC"],
                       start=datetime(2021, 1, 1, tzinfo=UTC),
                       end=datetime(2021, 12, 31, tzinfo=UTC), allocator=allocator)
    sim, panel = run.simulation, run.simulation.panel
    model = margin_model(allocator, settings.strategy)
    spot_taker, perp_taker = taker_fees(config, ["binance"])[0]["binance"]
    assert sim.margin_events
    rate, mark, spot = panel.event_rate, panel.event_mark, panel.event_spot
    events = {e.settlement: e for e in sim.margin_events}
    checked = 0
    for k_trade, row in enumerate(sim.trade_row.tolist()):
        if not sim.trade_entry[k_trade]:
            continue
        k = int(panel.index[0, row]) - 1               # the settlement in force at entry
        quantity = sim.trade_notional[k_trade] / mark[k]
        margin = model.target(quantity * mark[k])
        while quantity > 0 and k + 1 < panel.events:
            k += 1
            margin += quantity * (rate[k] * mark[k] - (mark[k] - mark[k - 1]))
            floor_k = model.floor * quantity * mark[k] / model.leverage
            leaves = [j for j in range(len(sim.trade_row)) if sim.trade_row[j] ==
                      panel.event_row[k] and sim.trade_exit[j]
                      and sim.trade_kind[j] not in (TOPUP_TRADE, LIQUIDATED)]
            event = events.get(k)
            if event is None:
                assert margin >= floor_k * (1 - 1e-9)
                if leaves:
                    break
                continue
            checked += 1
            assert event.margin == pytest.approx(margin, rel=1e-9, abs=1e-6)
            assert margin < floor_k
            if event.kind == LIQUIDATION:
                assert margin < model.maintenance_rate * quantity * mark[k]
                break
            assert event.kind in (TRANSFER, REBALANCE)
            margin += event.transferred
            unit_cost = (spot[k] * spot_taker + mark[k] * perp_taker
                         + settings.strategy.spread_cost * (spot[k] + mark[k]) / 2)
            margin += event.sold * (spot[k] - unit_cost)
            quantity -= event.sold
            # Topped up to the target of what is left.
            assert margin == pytest.approx(model.target(quantity * mark[k]), rel=1e-9)
            if leaves:
                break
    assert checked == len(sim.margin_events)
    kinds = {e.kind for e in sim.margin_events}
    assert (LIQUIDATION in kinds) == (floor < 1.0)


def test_quantity_falls_by_what_each_rebalance_sold():
    run = run_backtest(load_config(None), BacktestSettings(), venues=["binance"],
                       symbols=["BTC"], start=datetime(2021, 1, 1, tzinfo=UTC),
                       end=datetime(2021, 12, 31, tzinfo=UTC),
                       allocator=AllocatorConfig(leverage=5, max_asset_share=1,
                                                 max_pair_share=1, max_venue_share=1))
    sim = run.simulation
    rebalances = [e for e in sim.margin_events if e.kind == REBALANCE]
    assert rebalances
    for e in rebalances:
        before, after = sim.quantity[e.row, e.series], sim.quantity[e.row + 1, e.series]
        rule_trade = [j for j in range(len(sim.trade_row)) if sim.trade_row[j] == e.row
                      and sim.trade_kind[j] == 0]
        if not rule_trade:
            assert before - after == pytest.approx(e.sold, rel=1e-12)
    topup = sim.trade_kind == TOPUP_TRADE
    assert all(why.startswith("top-up: sold") for why, t in
               zip(sim.trade_reason, topup, strict=True) if t)
    assert np.isclose(sim.trade_fee[topup].sum() + sim.trade_spread[topup].sum(),
                      run.summary["margin"]["rebalance_cost"], rtol=1e-12)


def test_a_floor_above_the_target_is_one_line_naming_the_flag_or_the_key(run_cli, tmp_path):
    result = run_cli("backtest", "--no-plots", "--margin-floor", "3")
    assert result.exit_code == 2
    assert result.stderr == ("error: --margin-floor: must not exceed 1 + [allocator] "
                             "margin_buffer (1.5): a top-up restores 1 + margin_buffer, "
                             "got 3\n")
    config = tmp_path / "perpcarry.toml"
    config.write_text("[strategy]\nmargin_floor = 2\n")
    result = run_cli("--config", str(config), "backtest", "--no-plots")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {config}: [strategy] margin_floor: must not")
