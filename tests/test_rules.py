"""The carry rules (perpcarry.strategy.rules): ``decide`` is the code the backtest runs at a
rebalance, and each rule changes the trades on real bundled data as documented."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import hypothesis
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from perpcarry.allocation.allocator import Limits
from perpcarry.backtest.engine import RULE_TRADE, lp_allocator, simulate
from perpcarry.backtest.facts import pair_state, settlement_facts
from perpcarry.backtest.history import load_bundled
from perpcarry.backtest.margin import LIQUIDATION, REBALANCE
from perpcarry.backtest.panel import build_panel, select
from perpcarry.backtest.run import margin_model, taker_fees
from perpcarry.config.loader import load_config
from perpcarry.config.settings import AllocatorConfig, StrategyConfig
from perpcarry.strategy.rules import Book, Rules, decide

CAPITAL = 100_000.0
# Rules off: what the backtest did before the new rules existed.
OFF = {"exit_funding_below": None, "entry_blackout_minutes": 0.0}


class Case:
    """A real selection of the bundled history as a panel, with its fees and allocator."""

    def __init__(self, venues, symbols=None, start=None, end=None,
                 allocator: AllocatorConfig | None = None, **strategy):
        history = select(load_bundled(), venues, symbols)
        fees, _ = taker_fees(load_config(None), history["venue"].unique())
        self.settings = StrategyConfig(**strategy)
        self.panel = build_panel(history, estimator=self.settings.estimator,
                                 window_hours=self.settings.window_days * 24,
                                 halflife_hours=self.settings.ewma_halflife_days * 24,
                                 start=start, end=end)
        self.spot_taker = np.array([fees[v][0] for v in self.panel.venues])
        self.perp_taker = np.array([fees[v][1] for v in self.panel.venues])
        self.allocator = allocator or AllocatorConfig()
        limits = Limits.from_config(self.allocator, capital=CAPITAL)
        self.allocate = lp_allocator(limits, self.panel.venues, self.panel.bases)
        self.margin = None          # the margin model, where a case turns it on

    def rules(self, **changes) -> Rules:
        return Rules.from_config(self.settings.model_copy(update=changes))

    def simulate(self, rules: Rules):
        margin = None if self.margin is None else margin_model(
            self.allocator, self.settings.model_copy(update={"margin_floor": self.margin}))
        return simulate(self.panel, rules, CAPITAL, self.spot_taker, self.perp_taker,
                        self.allocate, margin=margin)


_cases: dict[str, Case] = {}


def case(name: str) -> Case:
    """Panels are built once per module (each takes a moment)."""
    if name not in _cases:
        _cases[name] = {
            # Binance, 36 perps with mark prices, 4h and 8h funding (cadence 4h); its net
            # APRs stay under 8 %, so the thresholds are lower than the defaults.
            "binance-2025": lambda: Case(["binance"], start=datetime(2025, 9, 1, tzinfo=UTC),
                                         end=datetime(2026, 3, 1, tzinfo=UTC),
                                         enter_apr=0.03, exit_apr=0.0),
            # Bybit and OKX BTC/ETH with real spot prices (the premium is real).
            "spot-2023": lambda: Case(["bybit", "okx"], start=datetime(2023, 1, 1, tzinfo=UTC),
                                      end=datetime(2024, 7, 1, tzinfo=UTC)),
            # Binance BTC/ETH 2021-2022 with spot: prices moved far from any entry.
            "binance-2021": lambda: Case(["binance"], ["BTC", "ETH"],
                                         start=datetime(2021, 1, 1, tzinfo=UTC),
                                         end=datetime(2022, 12, 31, tzinfo=UTC)),
            # The same at leverage 5 with every cap open (no free cash), margin model on:
            # top-ups are rebalances, and with a low floor shorts are liquidated.
            "all-in-2021": lambda: Case(["binance"], ["BTC", "ETH"],
                                        start=datetime(2021, 1, 1, tzinfo=UTC),
                                        end=datetime(2022, 12, 31, tzinfo=UTC),
                                        allocator=AllocatorConfig(
                                            leverage=5, max_asset_share=1, max_pair_share=1,
                                            max_venue_share=1)),
        }[name]()
    return _cases[name]


def trades(sim) -> list[tuple]:
    return list(zip(sim.trade_row.tolist(), sim.trade_series.tolist(), sim.trade_entry.tolist(),
                    sim.trade_exit.tolist(), strict=True))


def walk(c: Case, rules: Rules, margin_events=()):
    """The run loop's way: ``decide`` at every rebalance, with the equity kept here from the
    panel's settlements (funding, basis) and the trades' costs, and the quantities the
    margin model's ``margin_events`` (taken from the backtest) changed between rebalances.
    Returns the rules' trades as the engine lists them, their per-leg notionals and
    reasons."""
    panel = c.panel
    facts = settlement_facts(panel, rules, c.spot_taker, c.perp_taker)
    hedge = panel.spot - panel.mark
    book, equity, last = Book.empty(panel.shape[1]), CAPITAL, None
    out, notional, reasons = [], [], []
    pending = list(margin_events)

    def accrue(row: int) -> None:
        nonlocal equity, last
        if last is not None:
            qty = book.quantity
            equity += float((qty * panel.carry[last + 1:row + 1]).sum())
            if panel.hedged.any():
                equity += float(np.nansum(qty * (hedge[row] - hedge[last])))
        last = row

    for i in panel.rebalance.tolist():
        while pending and pending[0].row <= i:     # a margin event settles before deciding
            event = pending.pop(0)
            accrue(event.row)
            if event.sold:
                liquidated = event.kind == LIQUIDATION
                equity -= event.fee + event.spread + (event.margin if liquidated else 0.0)
                held = book.quantity.copy()
                mine = np.arange(held.size) == event.series
                held[event.series] -= event.sold
                # Closed when the slice was the whole position (equal up to the sizing
                # equity's rounding, which is this walk's own).
                closed = held[event.series] <= 1e-9 * event.sold
                held[mine & closed] = 0.0
                book = dataclasses.replace(
                    book, quantity=held,
                    rejoin_at=np.where(mine & closed,
                                       panel.hours[event.row] + rules.cooldown_hours,
                                       book.rejoin_at),
                    entry_mark=np.where(mine & closed, np.nan, book.entry_mark))
        accrue(i)
        qty = book.quantity
        pairs = pair_state(panel, facts, i)
        decision = decide(rules, pairs, book, float(panel.hours[i]), equity, c.allocate)
        for s in np.flatnonzero(decision.target != qty).tolist():
            d = abs(decision.target[s] - qty[s])
            equity -= d * (pairs.spot[s] * c.spot_taker[s] + pairs.mark[s] * c.perp_taker[s])
            equity -= d * rules.spread_cost * (pairs.spot[s] + pairs.mark[s]) / 2.0
            out.append((i, s, bool(qty[s] == 0), bool(decision.target[s] == 0)))
            notional.append(d * pairs.mark[s])
            reasons.append(decision.reasons[s])
        book = book.after(rules, decision, float(panel.hours[i]), pairs.mark)
    return out, np.array(notional), reasons


@pytest.mark.parametrize("name, changes", [
    ("binance-2025", OFF),
    ("binance-2025", {}),                                    # the defaults
    ("binance-2025", {"exit_funding_below": -0.0003}),
    ("binance-2025", {"entry_blackout_minutes": 300.0}),
    ("binance-2021", {"spike_exit": 0.25}),
    ("spot-2023", {"enter_premium": 0.0003, "exit_premium": -0.0002}),
], ids=["rules-off", "defaults", "funding-floor", "blackout", "spike", "premium"])
def test_decide_at_every_rebalance_gives_exactly_the_backtest_trade_list(name, changes):
    """The engine skips the rebalances whose eligible set is unchanged and calls ``decide``
    at the others; walking every rebalance through ``decide`` as the run loop does gives
    the same trades (row, series, entry, exit), quantities and reasons."""
    c = case(name)
    rules = c.rules(**changes)
    sim = c.simulate(rules)
    walked, notional, reasons = walk(c, rules)
    assert len(walked) > 4
    assert walked == trades(sim)
    np.testing.assert_allclose(notional, sim.trade_notional, rtol=1e-9)
    assert reasons == list(sim.trade_reason)


@pytest.mark.parametrize("floor", [1.0, 0.05], ids=["topped-up", "liquidated"])
def test_decide_gives_the_rule_trades_of_a_backtest_whose_margins_were_topped_up(floor):
    """With the margin model on, quantities also change between rebalances (rebalance
    slices, liquidations): given those, ``decide`` at every rebalance still makes exactly
    the backtest's rule trades."""
    c = case("all-in-2021")
    c.margin = floor
    try:
        rules = c.rules()
        sim = c.simulate(rules)
    finally:
        c.margin = None
    kinds = {e.kind for e in sim.margin_events}
    assert (REBALANCE if floor == 1 else LIQUIDATION) in kinds
    walked, notional, reasons = walk(c, rules, sim.margin_events)
    ruled = sim.trade_kind == RULE_TRADE
    assert walked == [t for t, r in zip(trades(sim), ruled, strict=True) if r]
    np.testing.assert_allclose(notional, sim.trade_notional[ruled], rtol=1e-9)
    assert reasons == [why for why, r in zip(sim.trade_reason, ruled, strict=True) if r]


def _exits_by(sim, prefix: str) -> np.ndarray:
    return np.array([k for k, why in enumerate(sim.trade_reason) if why.startswith(prefix)],
                    dtype=np.int64)


def test_funding_floor_exits_only_where_the_last_rate_was_below_it():
    c = case("binance-2025")
    floor = -0.0003
    off, on = c.simulate(c.rules(exit_funding_below=None)), c.simulate(
        c.rules(exit_funding_below=floor))
    assert trades(off) != trades(on)
    caused = _exits_by(on, "exit: funding")
    assert caused.size > 0
    rate = c.panel.in_force(c.panel.event_rate, np.nan)
    for k in caused.tolist():
        row, s = int(on.trade_row[k]), int(on.trade_series[k])
        assert on.trade_exit[k] and rate[row, s] < floor
        assert c.panel.settled[row, s]      # the exit comes at the settlement that printed it
    # Every exit inside the minimum hold is one of these risk exits.
    assert "exit: funding -" in on.trade_reason[int(caused[0])]


def test_blackout_moves_only_entries_close_to_a_settlement():
    c = case("binance-2025")
    minutes = 300.0
    off, on = c.simulate(c.rules(entry_blackout_minutes=0.0)), c.simulate(
        c.rules(entry_blackout_minutes=minutes))
    entries_off = {t[:2] for t in trades(off) if t[2]}
    entries_on = {t[:2] for t in trades(on) if t[2]}
    assert entries_off != entries_on
    # The first entry that moved: the run without the blackout made it within N minutes of
    # the pair's next settlement.
    row, s = min(entries_off ^ entries_on)
    assert (row, s) in entries_off
    assert _hours_to_next_settlement(c.panel, row, s) < minutes / 60
    for row, s in entries_on:
        assert _hours_to_next_settlement(c.panel, row, s) >= minutes / 60


def _hours_to_next_settlement(panel, row: int, s: int) -> float:
    later = panel.settled[row + 1:, s]
    return float(panel.hours[row + 1 + np.argmax(later)] - panel.hours[row]) \
        if later.any() else np.inf


def test_spike_exit_leaves_when_the_mark_moved_more_than_the_limit_since_entry():
    c = case("binance-2021")
    limit = 0.25
    on = c.simulate(c.rules(spike_exit=limit))
    assert trades(on) != trades(c.simulate(c.rules(spike_exit=None)))
    caused = _exits_by(on, "exit: price moved")
    assert caused.size > 0
    for k in caused.tolist():
        row, s = int(on.trade_row[k]), int(on.trade_series[k])
        entered = max(int(on.trade_row[j]) for j in range(k)
                      if on.trade_series[j] == s and on.trade_entry[j])
        moved = c.panel.mark[row, s] / c.panel.mark[entered, s] - 1.0
        assert abs(moved) > limit


def test_premium_rules_gate_entries_and_exits_on_perp_over_spot():
    c = case("spot-2023")
    enter, leave = 0.0003, -0.0002
    on = c.simulate(c.rules(enter_premium=enter, exit_premium=leave))
    assert trades(on) != trades(c.simulate(c.rules()))
    premium = c.panel.mark / c.panel.spot - 1.0
    for row, s, entry, _ in trades(on):
        if entry:
            assert premium[row, s] >= enter
    caused = _exits_by(on, "exit: premium")
    assert caused.size > 0
    for k in caused.tolist():
        assert premium[int(on.trade_row[k]), int(on.trade_series[k])] < leave


@hypothesis.settings(max_examples=15, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@given(floor=st.one_of(st.none(), st.floats(-0.002, 0.0002)),
       blackout=st.sampled_from([0.0, 15.0, 240.0, 300.0]),
       enter_premium=st.one_of(st.none(), st.floats(-0.0005, 0.0005)),
       enter_apr=st.floats(0.01, 0.06))
def test_no_entry_where_a_rule_forbids_it(floor, blackout, enter_premium, enter_apr):
    c = case("binance-2025")
    rules = c.rules(exit_funding_below=floor, entry_blackout_minutes=blackout,
                    enter_premium=enter_premium, exit_premium=None, enter_apr=enter_apr,
                    exit_apr=0.0)
    sim = c.simulate(rules)
    panel = c.panel
    facts = settlement_facts(panel, rules, c.spot_taker, c.perp_taker)
    rate = panel.in_force(panel.event_rate, np.nan)
    premium = panel.mark / panel.spot - 1.0
    net = panel.in_force(facts.net_apr, np.nan)
    last_exit: dict[int, float] = {}
    for k, (row, s, entry, leaving) in enumerate(trades(sim)):
        if leaving:
            last_exit[s] = panel.hours[row]
        if not entry:
            continue
        assert net[row, s] > enter_apr
        assert floor is None or rate[row, s] >= floor
        assert enter_premium is None or premium[row, s] >= enter_premium
        assert _hours_to_next_settlement(panel, row, s) >= blackout / 60
        assert panel.hours[row] >= last_exit.get(s, -np.inf) + rules.cooldown_hours
        assert sim.trade_reason[k].startswith("enter: net APR")
