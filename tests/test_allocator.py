"""Allocator: worked examples checked by hand, lot rounding, reasons and errors.

The builders here (``market``, ``candidate``, ``dual_optimum``) are shared with the other
``test_allocator_*`` modules.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from scipy.optimize import linprog

from perpcarry.allocation.allocator import (
    AllocationCandidate,
    Limits,
    allocate,
    candidates_from_scan,
    greedy_baseline,
    solve_lp,
)
from perpcarry.config.settings import AllocatorConfig
from perpcarry.domain.errors import InvalidValue, UsageError
from perpcarry.domain.types import Market, MarketKind


def market(venue: str, base: str, kind: str, *, step: str, min_qty: str | None = None,
           min_notional: str | None = None, contract_size: str = "1",
           quote: str = "USDT") -> Market:
    perp = kind == "perp"
    return Market(
        venue=venue, symbol=f"{base}/{quote}" + (f":{quote}" if perp else ""),
        venue_symbol=f"{base}{quote}", base=base, quote=quote, settle=quote if perp else None,
        kind=MarketKind.PERP if perp else MarketKind.SPOT,
        contract_size=Decimal(contract_size), quantity_step=Decimal(step),
        min_quantity=Decimal(min_qty or step),
        min_notional=None if min_notional is None else Decimal(min_notional),
        price_tick=Decimal("0.01"),
    )


def candidate(venue: str, base: str, net_apr: float, price: str = "100", *,
              spot_step: str = "0.001", perp_step: str = "0.001", contract_size: str = "1",
              spot_min_qty: str | None = None, perp_min_qty: str | None = None,
              spot_min_notional: str | None = None, perp_min_notional: str | None = None,
              entry_score: float | None = None, expected_apr: float | None = None,
              ) -> AllocationCandidate:
    return AllocationCandidate(
        venue=venue, base=base, pair_label=f"{base}/USDT",
        spot=market(venue, base, "spot", step=spot_step, min_qty=spot_min_qty,
                    min_notional=spot_min_notional),
        perp=market(venue, base, "perp", step=perp_step, min_qty=perp_min_qty,
                    min_notional=perp_min_notional, contract_size=contract_size),
        net_apr=net_apr, price=Decimal(price),
        entry_score=net_apr if entry_score is None else entry_score,
        expected_apr=expected_apr,
    )


def dual_optimum(net_apr, k, venue_index, asset_index, *, budget, venue_cap, asset_cap,
                 pair_cap) -> float:
    """The optimum of the allocation LP computed from its DUAL, dense, every row kept.

    Primal: max apr.x  s.t.  k.x <= budget, per venue / asset sums of k.x <= cap,
    k_i x_i <= pair_cap, x >= 0. Dual: min budget.y0 + venue_cap.yv + asset_cap.ya + pair.z
    s.t. k_i (y0 + yv[v(i)] + ya[a(i)] + z_i) >= apr_i, all >= 0. Strong duality makes the
    two optima equal; this shares no code with perpcarry's solver.
    """
    apr = np.asarray(net_apr, dtype=float)
    n = apr.size
    k = np.broadcast_to(np.asarray(k, dtype=float), (n,))
    n_v = int(np.max(venue_index)) + 1
    n_a = int(np.max(asset_index)) + 1
    n_y = 1 + n_v + n_a + n
    cost = np.concatenate([[budget], np.full(n_v, venue_cap), np.full(n_a, asset_cap),
                           np.full(n, pair_cap)])
    a = np.zeros((n, n_y))
    for i in range(n):
        a[i, 0] = k[i]
        a[i, 1 + venue_index[i]] = k[i]
        a[i, 1 + n_v + asset_index[i]] = k[i]
        a[i, 1 + n_v + n_a + i] = k[i]
    result = linprog(cost, A_ub=-a, b_ub=-apr, bounds=(0, None), method="highs-ipm")
    assert result.status == 0, result.message
    return float(result.fun)


def limits(capital: float = 100_000, **overrides) -> Limits:
    return Limits.from_config(AllocatorConfig(), capital, **overrides)


# ---------------------------------------------------------------- worked examples


def test_non_nested_caps_lp_beats_greedy_by_hand():
    # Venues A, B and assets X, Y, every cap 50 % of 100,000: greedy takes A-X (best APR),
    # which fills venue A AND asset X, leaving only B-Y at 1 %. The LP takes A-Y and B-X:
    # 50,000 x 25 % + 50,000 x 20 % = 22,500 a year per unit of capital used; with leverage
    # 2 and a 50 % buffer one unit of notional uses 1.75 of capital, so 22,500 / 1.75.
    cands = [candidate("A", "X", 0.30), candidate("A", "Y", 0.25),
             candidate("B", "X", 0.20), candidate("B", "Y", 0.01)]
    lim = limits(max_venue_share=0.5, max_asset_share=0.5, max_pair_share=1.0)
    plan = allocate(cands, lim)

    assert plan.capital_per_notional == 1.75
    assert plan.lp_objective == pytest.approx(22_500 / 1.75, rel=1e-9)
    held = {(p.venue, p.base): p for p in plan.positions}
    assert set(held) == {("A", "Y"), ("B", "X")}
    # 50,000 of capital / 1.75 = 28,571.43 notional per leg at price 100 -> 285.714 base,
    # exactly on the 0.001 lot, so rounding costs 0.0005 x 100 x 1.75 per position at most.
    assert held[("A", "Y")].base_quantity == Decimal("285.714")
    assert held[("A", "Y")].notional == Decimal("28571.400")
    assert held[("A", "Y")].margin == Decimal("21428.550")   # 0.75 x notional
    assert plan.unused.rounding == pytest.approx(2 * (50_000 - 28_571.4 * 1.75), abs=1e-6)
    assert {u.name for u in plan.binding if u.kind == "venue"} == {"A", "B"}
    assert {u.name for u in plan.binding if u.kind == "asset"} == {"X", "Y"}

    apr = np.array([c.net_apr for c in cands])
    greedy = greedy_baseline(apr, 1.75, [0, 0, 1, 1], [0, 1, 0, 1], budget=100_000,
                             venue_cap=50_000, asset_cap=50_000, pair_cap=100_000)
    assert apr @ greedy == pytest.approx((50_000 * 0.30 + 50_000 * 0.01) / 1.75)


def test_caps_are_shares_of_whole_capital_reserve_included():
    # 10 % reserve: 90,000 investable, but the asset cap stays 20 % of 100,000 = 20,000.
    cands = [candidate("A", f"C{i}", 0.1 + i / 100) for i in range(6)]
    plan = allocate(cands, limits(cash_reserve=0.1, max_venue_share=1.0))
    assert plan.investable == pytest.approx(90_000)
    assert plan.unused.reserve == pytest.approx(10_000)
    assert all(u.cap == pytest.approx(20_000) for u in plan.assets)
    # The four best assets take 20,000 each and the fifth the last 10,000.
    used = sorted((round(u.lp_used) for u in plan.assets), reverse=True)
    assert used == [20_000, 20_000, 20_000, 20_000, 10_000]
    total = sum(float(p.capital) for p in plan.positions)
    assert total + plan.unused.total == pytest.approx(100_000)


def test_okx_contracts_and_common_lot():
    # Real OKX DOGE-USDT-SWAP: 1 contract = 1000 DOGE, step 0.1 contract -> 100 DOGE;
    # OKX DOGE/USDT spot step 0.000001. Same base quantity on both legs: multiples of 100.
    doge = candidate("okx", "DOGE", 0.2, "0.16", spot_step="0.000001", perp_step="0.1",
                     contract_size="1000", spot_min_qty="10", perp_min_qty="0.1")
    assert doge.lot == Decimal("100")
    plan = allocate([doge], limits(capital=10_000, max_pair_share=0.5, max_asset_share=0.5))
    (pos,) = plan.positions
    # 5,000 capital / 1.75 = 2,857.14 notional / 0.16 = 17,857.1 DOGE -> 17,800 DOGE.
    assert pos.base_quantity == Decimal("17800")
    assert pos.perp_contracts == Decimal("17.8")
    assert pos.notional == Decimal("2848.00")


def test_lot_is_the_least_common_multiple():
    assert candidate("x", "B", 0.1, spot_step="0.00001", perp_step="0.001").lot == Decimal(
        "0.001")
    assert candidate("x", "B", 0.1, spot_step="0.0004", perp_step="0.0006").lot == Decimal(
        "0.0012")
    assert candidate("x", "B", 0.1, spot_step="0.01", perp_step="0.1",
                     contract_size="0.01").lot == Decimal("0.01")


def test_minimums_round_up_to_the_lot():
    # Bybit-like: spot min notional 5 USDT at price 3 -> 1.67 base -> 2 on a lot of 1.
    c = candidate("bybit", "ARB", 0.1, "3", spot_step="0.01", perp_step="1",
                  spot_min_notional="5")
    assert c.min_base_quantity == Decimal("2")


def test_max_positions_keeps_the_largest_and_resolves():
    cands = [candidate("A", f"C{i}", 0.05 + i / 100) for i in range(6)]
    plan = allocate(cands, limits(max_positions=2, max_venue_share=1.0))
    assert len(plan.positions) == 2
    assert {p.base for p in plan.positions} == {"C5", "C4"}
    assert any("max_positions" in note for note in plan.notes)


def test_min_positions_spreads_capital():
    cands = [candidate("A", f"C{i}", 0.05 + i / 100) for i in range(5)]
    plan = allocate(cands, limits(min_positions=4, max_venue_share=1.0, max_asset_share=1.0,
                                  max_pair_share=1.0))
    # Each pair is capped at 1/4 of the capital, so four positions take 25,000 each.
    assert len(plan.positions) == 4
    assert all(float(p.capital) <= 25_000 for p in plan.positions)


def test_min_positions_impossible_is_explained():
    cands = [candidate("A", "X", 0.1), candidate("A", "Y", 0.2)]
    plan = allocate(cands, limits(min_positions=3))
    assert plan.positions == ()
    assert plan.reason == ("min_positions = 3 but only 2 positions fit under the caps and "
                           "minimum orders")


def test_entry_order_is_by_entry_score_not_net_apr():
    cands = [candidate("A", "X", 0.30, entry_score=0.10), candidate("B", "Y", 0.10,
                                                                     entry_score=0.50)]
    plan = allocate(cands, limits())
    ranks = {p.base: p.entry_rank for p in plan.positions}
    assert ranks == {"Y": 1, "X": 2}


# ---------------------------------------------------------------- nothing to allocate


def test_minimum_notional_above_pair_cap_names_the_constraint():
    # 100 capital, pair cap 3 %: 3 USDT of capital. One 5 USDT leg needs 8.75 with margin.
    c = candidate("binance", "BTC", 0.2, "50000", spot_step="0.00001", perp_step="0.00001",
                  spot_min_notional="5", perp_min_notional="5")
    plan = allocate([c], limits(capital=100, max_pair_share=0.03))
    assert plan.positions == ()
    assert plan.reason == ("binance BTC/USDT: minimum order 5 USDT per leg (needs 8.75 USDT "
                           "of capital with margin) exceeds the per-pair cap of 3 USDT")


def test_everything_below_min_net_apr():
    plan = allocate([candidate("A", "X", 0.02), candidate("B", "X", 0.03)],
                    limits(min_net_apr=0.05))
    assert plan.reason == ("no candidate reaches the minimum net APR of 5.00% "
                           "(best: X/USDT on B at 3.00%)")


def test_no_candidates():
    assert allocate([], limits()).reason.startswith("no carry candidate")


# ---------------------------------------------------------------- invalid settings


@pytest.mark.parametrize(("override", "name"), [
    ({"max_venue_share": 1.5}, "max_venue_share"),
    ({"max_asset_share": 0.0}, "max_asset_share"),
    ({"leverage": 0.0}, "leverage"),
    ({"cash_reserve": 1.0}, "cash_reserve"),
    ({"capital": -5.0}, "capital"),
])
def test_invalid_settings_name_the_setting(override, name):
    capital = override.pop("capital", 1000.0)
    with pytest.raises(InvalidValue, match=rf"^{name}: must be a number") as raised:
        Limits.from_config(AllocatorConfig(), capital, **override)
    assert raised.value.field == name


def test_min_above_max_positions():
    with pytest.raises(InvalidValue, match=r"min_positions: must not exceed max_positions \(3\)"):
        Limits.from_config(AllocatorConfig(), 1000, min_positions=5, max_positions=3)


def test_missing_capital():
    with pytest.raises(UsageError, match="capital is not set"):
        Limits.from_config(AllocatorConfig(), None)


# ---------------------------------------------------------------- fast LP


def test_solve_lp_matches_the_dual_on_the_worked_example():
    apr = [0.30, 0.25, 0.20, 0.01]
    venues, assets = [0, 0, 1, 1], [0, 1, 0, 1]
    x = solve_lp(apr, 1.75, venues, assets, venue_cap=0.5, asset_cap=0.5, pair_cap=1.0)
    assert x == pytest.approx([0, 0.5 / 1.75, 0.5 / 1.75, 0], abs=1e-9)
    assert float(np.dot(apr, x)) == pytest.approx(dual_optimum(
        apr, 1.75, venues, assets, budget=1.0, venue_cap=0.5, asset_cap=0.5, pair_cap=1.0))


def test_solve_lp_ignores_negative_yields():
    x = solve_lp([-0.1, 0.0, 0.1], 2.0, [0, 0, 0], [0, 1, 2], asset_cap=0.3)
    assert x == pytest.approx([0, 0, 0.15])


def test_candidates_from_scan_skip_rows_without_net_apr_or_price():
    from types import SimpleNamespace

    from perpcarry.domain.types import CarryPair

    c = candidate("okx", "BTC", 0.1)
    pair = CarryPair("okx", c.spot, c.perp)
    quote = SimpleNamespace(rate=Decimal("0.0001"), interval_hours=8)

    def row(net_apr, price, premium):
        return SimpleNamespace(venue="okx", pair=pair, quote=quote, estimator="mean",
                               net_apr=net_apr, reference_price=price, entry_premium=premium,
                               current_apr=0.1095, expected_apr=0.08, horizon_days=30.0)

    cands, skipped = candidates_from_scan([row(None, Decimal(1), None),
                                           row(0.05, None, None),
                                           row(0.05, Decimal("60000"), 0.001)])
    assert [s.reason for s in skipped] == [
        "no net APR: the mean estimator has too little funding history",
        "no reference price (no book, no mark)"]
    (only,) = cands
    # Entry score: current APR plus the 10 bps premium amortised over 30 days.
    assert only.entry_score == pytest.approx(0.1095 + 0.001 * 365 / 30)
    assert only.price == Decimal("60000") and only.interval_hours == 8
