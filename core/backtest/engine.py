"""The carry simulation: hysteresis and holding rules per rebalance, money per settlement.

Order of events at a grid time t:

1. funding settles on the position held coming into t: short perp notional at t's mark
   price x the rate (received when positive, paid when negative); the hedged legs are
   marked to market (long spot minus short perp: only basis moves reach the equity);
2. at a rebalance, the estimator's funding (known at t) gives each pair a net APR through
   :mod:`perpcarry.yields`; held pairs leave below ``exit_apr`` once held ``min_hold_hours``
   (or at once when their data ends), others join above ``enter_apr`` outside their
   cooldown; when that eligible set changes, :func:`perpcarry.allocator.solve_lp` splits
   the current equity over it and positions trade to their targets;
3. every trade pays the venue's taker fee on both legs plus ``spread_cost``.

Speed: the sequential part is one pass over rebalance times with length-S vector steps;
funding and marking between rebalances are cumulative sums precomputed over the whole
panel, so a rebalance costs O(S) whatever the number of settlements in between, and the
LP runs only when the eligible set changes (the positions' targets are otherwise
unchanged, so re-solving would return the same weights). Quantities are continuous: lot
rounding, which ``plan`` applies, would only add noise of a lot per position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from perpcarry import yields
from perpcarry.backtest.panel import Panel

Allocate = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Strategy:
    capital: float
    enter_apr: float
    exit_apr: float
    min_hold_hours: float
    cooldown_hours: float
    horizon_days: float
    spread_cost: float
    resize_band: float


@dataclass(frozen=True)
class Simulation:
    panel: Panel
    strategy: Strategy
    quantity: np.ndarray         # (T, S) base quantity held coming into each grid time
    funding: np.ndarray          # (T, S) funding received at each settlement
    marking: np.ndarray          # (T, S) mark-to-market of the hedged legs
    fees: np.ndarray             # (T, S) taker fees paid
    spread: np.ndarray           # (T, S) spread paid
    traded: np.ndarray           # (T, S) notional traded (per leg, at the perp price)
    entries: np.ndarray          # (T, S) bool
    exits: np.ndarray            # (T, S) bool
    equity: np.ndarray           # (T,) after the rebalance at each grid time
    allocator_runs: int

    @property
    def final_quantity(self) -> np.ndarray:
        return self.quantity[-1]


def lp_allocator(limits, venues, bases) -> Allocate:
    """``solve_lp`` over the eligible pairs, caps as shares of the equity at the rebalance.

    ``max_positions`` is applied as ``allocate`` applies it: keep the largest LP positions
    and solve again on them."""
    from perpcarry.allocator import solve_lp

    venue_ids = np.unique(np.array(venues), return_inverse=True)[1]
    asset_ids = np.unique(np.array(bases), return_inverse=True)[1]
    share = {"budget": 1.0 - limits.cash_reserve, "venue_cap": limits.max_venue_share,
             "asset_cap": limits.max_asset_share,
             "pair_cap": limits.pair_cap / limits.capital}
    k = limits.capital_per_notional

    def allocate(members: np.ndarray, net_apr: np.ndarray, equity: float) -> np.ndarray:
        apr = np.nan_to_num(net_apr[members], nan=0.0)
        apr = np.where(apr >= limits.min_net_apr, apr, 0.0)
        notional = solve_lp(apr, k, venue_ids[members], asset_ids[members], **share)
        held = np.flatnonzero(notional > 0)
        if held.size > limits.max_positions:
            keep = np.sort(held[np.argsort(-notional[held], kind="stable")]
                           [: limits.max_positions])
            notional = np.zeros_like(notional)
            notional[keep] = solve_lp(apr[keep], k, venue_ids[members][keep],
                                      asset_ids[members][keep], **share)
        return notional * equity

    return allocate


def simulate(panel: Panel, strategy: Strategy, spot_taker: np.ndarray, perp_taker: np.ndarray,
             allocate: Allocate, progress: Callable[[int, int], None] | None = None
             ) -> Simulation:
    """Run the strategy over the panel. ``allocate(members, net_apr, equity)`` returns the
    hedged notional of each member (indices of the eligible series)."""
    T, S = panel.rate.shape
    mark, spot = panel.mark, panel.spot
    leg_value = np.nan_to_num(mark * panel.rate)          # funding per unit held, per event
    cum_funding = np.cumsum(leg_value, axis=0)
    hedge_value = np.nan_to_num(spot - mark)              # long spot + short perp, per unit
    round_trip = yields.round_trip_cost(spot_taker, perp_taker, 2.0 * strategy.spread_cost)

    qty = np.zeros(S)
    held = np.zeros(S, dtype=bool)
    entered_at = np.full(S, -np.inf)
    exited_at = np.full(S, -np.inf)
    members_before: np.ndarray | None = None
    equity = strategy.capital
    fees = np.zeros((T, S))
    spread = np.zeros((T, S))
    traded = np.zeros((T, S))
    entries = np.zeros((T, S), dtype=bool)
    exits = np.zeros((T, S), dtype=bool)
    after = np.zeros((panel.rebalance.size, S))
    runs = 0
    previous = None
    for step, i in enumerate(panel.rebalance):
        if previous is not None:
            equity += qty @ (cum_funding[i] - cum_funding[previous])
            equity += qty @ (hedge_value[i] - hedge_value[previous])
        previous = i
        now = panel.hours[i]
        with np.errstate(invalid="ignore"):
            net = yields.net_apr(yields.apr_from_hourly(panel.expected_hourly[i]),
                                 yields.basis(mark[i], spot[i]), round_trip,
                                 strategy.horizon_days)
            leave = held & (~panel.live[i] | ((net < strategy.exit_apr)
                                              & (now - entered_at >= strategy.min_hold_hours)))
            join = (~held & panel.live[i] & np.isfinite(mark[i]) & (net > strategy.enter_apr)
                    & (now - exited_at >= strategy.cooldown_hours))
        eligible = (held & ~leave) | join
        target = qty.copy()
        if members_before is None or not np.array_equal(eligible, members_before):
            members_before = eligible
            members = np.flatnonzero(eligible)
            target = np.zeros(S)
            if members.size:
                runs += 1
                target[members] = allocate(members, net, equity) / mark[i, members]
            # Small drifts of a held position's target are not worth two taker fees.
            steady = held & eligible & (np.abs(target - qty) <= strategy.resize_band * qty)
            target[steady] = qty[steady]
        target[leave] = 0.0
        delta = np.abs(target - qty)
        moved = np.flatnonzero(delta)
        if moved.size:
            d, s_px, m_px = delta[moved], spot[i, moved], mark[i, moved]
            fees[i, moved] = d * (s_px * spot_taker[moved] + m_px * perp_taker[moved])
            spread[i, moved] = d * strategy.spread_cost * (s_px + m_px) / 2.0
            traded[i, moved] = d * m_px
            equity -= fees[i, moved].sum() + spread[i, moved].sum()
            now_held = target > 0
            entries[i] = now_held & ~held
            exits[i] = held & ~now_held
            entered_at[entries[i]] = now
            exited_at[exits[i]] = now
            held = now_held
            qty = target
        after[step] = qty
        if progress is not None and (step % 64 == 0 or step == panel.rebalance.size - 1):
            progress(step + 1, panel.rebalance.size)

    # Quantity coming into each grid time: the one set at the last rebalance before it.
    last_rebalance = np.searchsorted(panel.rebalance, np.arange(T), side="left") - 1
    quantity = np.where((last_rebalance >= 0)[:, None], after[np.clip(last_rebalance, 0, None)],
                        0.0)
    funding = quantity * leg_value
    marking = np.zeros((T, S))
    marking[1:] = quantity[1:] * np.diff(hedge_value, axis=0)
    flows = funding.sum(axis=1) + marking.sum(axis=1) - fees.sum(axis=1) - spread.sum(axis=1)
    return Simulation(panel=panel, strategy=strategy, quantity=quantity, funding=funding,
                      marking=marking, fees=fees, spread=spread, traded=traded,
                      entries=entries, exits=exits,
                      equity=strategy.capital + np.cumsum(flows), allocator_runs=runs)
