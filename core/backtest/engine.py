"""The carry simulation: hysteresis and holding rules per rebalance, money per settlement.

Order of events at a grid time t:

1. funding settles on the position held coming into t: short perp notional at t's mark
   price x the rate (received when positive, paid when negative); the hedged legs are
   marked to market (long spot minus short perp: only basis moves reach the equity);
2. at a rebalance, the estimator's funding (known at t) gives each pair a net APR through
   :mod:`perpcarry.yields`; held pairs leave below ``exit_apr`` once held ``min_hold_hours``
   (or at once when their data ends), others join above ``enter_apr`` outside their
   cooldown; when that eligible set changes, :func:`perpcarry.allocator_lp.solve_detailed`
   splits the current equity over it and positions trade to their targets. Positions still
   inside their minimum holding time are pinned: they keep their quantity, and the LP
   shares out what is left of the budget and of each cap around them;
3. every trade pays the venue's taker fee on both legs plus ``spread_cost``.

Speed: the net APRs and the entry/exit tests of every (rebalance, series) cell are
computed once as (R, S) arrays; the sequential part is one pass over rebalance times with a
handful of length-S vector operations, and everything else (equity for sizing, funding,
marking) happens only when the eligible set changes, which is also the only time the LP
runs (otherwise the positions' targets are unchanged, so re-solving would return the same
weights). Quantities are continuous: lot rounding, which ``plan`` applies, would only add
noise of a lot per position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from perpcarry import yields
from perpcarry.backtest.panel import Panel

# allocate(members, net_apr, equity, pinned) -> hedged notional of each member; ``pinned``
# (S,) is the notional of positions that must stay as they are (not among the members).
Allocate = Callable[..., np.ndarray]


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


def keep_largest(notional: np.ndarray, net_apr: np.ndarray, max_positions: int) -> np.ndarray:
    """Indices of the positions ``allocate`` keeps under ``max_positions``: the largest
    expected yield contribution (notional x net APR) first, ties in order.

    The same rule as in :func:`perpcarry.allocator.allocate`, which has it inline (no
    public function to call yet)."""
    held = np.flatnonzero(notional > 0)
    if held.size <= max_positions:
        return held
    contribution = notional[held] * net_apr[held]
    return np.sort(held[np.argsort(-contribution, kind="stable")][:max(max_positions, 0)])


def lp_allocator(limits, venues, bases) -> Allocate:
    """The allocator's LP over the eligible pairs, caps as shares of the equity at the
    rebalance, ``max_positions`` applied as :func:`perpcarry.allocator.allocate` applies it
    (keep the largest and solve again on them). Pinned positions use their share of the
    budget, of their venue's and asset's caps and of ``max_positions`` first."""
    from perpcarry.allocator_lp import solve_detailed

    venue_ids = np.unique(np.array(venues), return_inverse=True)[1]
    asset_ids = np.unique(np.array(bases), return_inverse=True)[1]
    n_venues, n_assets = int(venue_ids.max()) + 1, int(asset_ids.max()) + 1
    k = limits.capital_per_notional
    budget = 1.0 - limits.cash_reserve
    pair_cap = limits.pair_cap / limits.capital

    def allocate(members: np.ndarray, net_apr: np.ndarray, equity: float,
                 pinned: np.ndarray | None = None) -> np.ndarray:
        apr = np.nan_to_num(net_apr[members], nan=0.0)
        apr = np.where(apr >= limits.min_net_apr, apr, 0.0)
        venue_cap = np.full(n_venues, limits.max_venue_share)
        asset_cap = np.full(n_assets, limits.max_asset_share)
        room, slots = budget, limits.max_positions
        if pinned is not None and pinned.any():
            used = k * pinned / equity                  # shares of the equity
            room -= used.sum()
            venue_cap -= np.bincount(venue_ids, weights=used, minlength=n_venues)
            asset_cap -= np.bincount(asset_ids, weights=used, minlength=n_assets)
            slots -= int(np.count_nonzero(pinned))
        if room <= 1e-12 or slots <= 0 or members.size == 0:
            return np.zeros(members.size)
        venue_cap, asset_cap = np.clip(venue_cap, 0.0, None), np.clip(asset_cap, 0.0, None)

        def solve(part: np.ndarray) -> np.ndarray:
            notional = np.zeros(members.size)
            notional[part] = solve_detailed(
                apr[part], k, venue_ids[members[part]], asset_ids[members[part]], budget=room,
                venue_cap=venue_cap, asset_cap=asset_cap, pair_cap=pair_cap,
                n_venues=n_venues, n_assets=n_assets).notional
            return notional

        notional = solve(np.arange(members.size))
        keep = keep_largest(notional, apr, slots)
        if keep.size < np.count_nonzero(notional):
            notional = solve(keep)
        return notional * equity

    return allocate


def simulate(panel: Panel, strategy: Strategy, spot_taker: np.ndarray, perp_taker: np.ndarray,
             allocate: Allocate, progress: Callable[[int, int], None] | None = None
             ) -> Simulation:
    """Run the strategy over the panel. ``allocate(members, net_apr, equity, pinned)``
    returns the hedged notional of each member (indices of the eligible series)."""
    T, S = panel.settled.shape
    reb = panel.rebalance
    mark_r, spot_r = panel.mark[reb], panel.spot[reb]
    round_trip = yields.round_trip_cost(spot_taker, perp_taker, 2.0 * strategy.spread_cost)
    with np.errstate(invalid="ignore"):
        net_r = yields.net_apr(yields.apr_from_hourly(panel.expected_hourly[reb]),
                               yields.basis(mark_r, spot_r), round_trip, strategy.horizon_days)
        live_r = panel.live[reb]
        gone_r = ~live_r
        below_r = net_r < strategy.exit_apr
        may_join_r = live_r & np.isfinite(mark_r) & (net_r > strategy.enter_apr)
    now_r = panel.hours[reb]
    hedged = np.flatnonzero(panel.hedged)
    hedge = np.nan_to_num(panel.spot[:, hedged] - panel.mark[:, hedged])  # per unit held

    qty = np.zeros(S)
    held = np.zeros(S, dtype=bool)
    not_held = np.ones(S, dtype=bool)
    release_at = np.full(S, -np.inf)     # min hold over: may leave below exit_apr
    rejoin_at = np.full(S, -np.inf)      # cooldown over: may enter again
    members_before = np.zeros(S, dtype=bool)
    equity, checkpoint = strategy.capital, 0
    fees = np.zeros((T, S))
    spread = np.zeros((T, S))
    traded = np.zeros((T, S))
    entries = np.zeros((T, S), dtype=bool)
    exits = np.zeros((T, S), dtype=bool)
    changes: list[tuple[int, np.ndarray]] = []   # (grid row, quantity from the next row on)
    runs = 0
    n_steps = reb.size
    leave = np.empty(S, dtype=bool)
    join = np.empty(S, dtype=bool)
    eligible = np.empty(S, dtype=bool)
    for step in range(n_steps):
        now = now_r[step]
        # leave = held & (gone | (below & min hold over)); join = free & may join & cooled.
        np.greater_equal(now, release_at, out=leave)
        leave &= below_r[step]
        leave |= gone_r[step]
        leave &= held
        np.greater_equal(now, rejoin_at, out=join)
        join &= may_join_r[step]
        join &= not_held
        np.greater(held, leave, out=eligible)   # held and not leaving
        eligible |= join
        if progress is not None and (step % 256 == 0 or step == n_steps - 1):
            progress(step + 1, n_steps)
        if np.array_equal(eligible, members_before):
            continue    # same eligible set: the same targets, nothing trades
        i = int(reb[step])
        members_before = eligible.copy()
        if held.any():   # equity for sizing: funding and basis since the last trade
            equity += qty @ panel.carry[checkpoint + 1:i + 1].sum(axis=0)
            equity += qty[hedged] @ (hedge[i] - hedge[checkpoint])
        checkpoint = i
        pinned = held & eligible & (now < release_at)
        free = np.flatnonzero(eligible & ~pinned)
        target = np.zeros(S)
        target[pinned] = qty[pinned]
        if free.size:
            runs += 1
            kept = np.where(pinned, qty * mark_r[step], 0.0)
            target[free] = allocate(free, net_r[step], equity, pinned=kept) / mark_r[step, free]
            # Small drifts of a held position's target are not worth two taker fees.
            steady = held & eligible & (np.abs(target - qty) <= strategy.resize_band * qty)
            target[steady] = qty[steady]
        moved = np.flatnonzero(target != qty)
        if moved.size:
            d, s_px, m_px = np.abs(target[moved] - qty[moved]), spot_r[step, moved], \
                mark_r[step, moved]
            fees[i, moved] = d * (s_px * spot_taker[moved] + m_px * perp_taker[moved])
            spread[i, moved] = d * strategy.spread_cost * (s_px + m_px) / 2.0
            traded[i, moved] = d * m_px
            equity -= fees[i, moved].sum() + spread[i, moved].sum()
            now_held = target > 0
            entries[i] = now_held & not_held
            exits[i] = held & ~now_held
            release_at[entries[i]] = now + strategy.min_hold_hours
            rejoin_at[exits[i]] = now + strategy.cooldown_hours
            held, not_held, qty = now_held, ~now_held, target
            changes.append((i, qty))

    # Quantity coming into each grid time: the one set at the last trade before it.
    quantity = np.zeros((T, S))
    for (row, q), (until, _) in zip(changes, [*changes[1:], (T - 1, None)], strict=True):
        quantity[row + 1:until + 1] = q
    funding = quantity * panel.carry
    marking = np.zeros((T, S))
    if hedged.size:
        marking[1:, hedged] = quantity[1:, hedged] * np.diff(hedge, axis=0)
    flows = funding.sum(axis=1) - fees.sum(axis=1) - spread.sum(axis=1)
    if hedged.size:
        flows += marking.sum(axis=1)
    return Simulation(panel=panel, strategy=strategy, quantity=quantity, funding=funding,
                      marking=marking, fees=fees, spread=spread, traded=traded,
                      entries=entries, exits=exits,
                      equity=strategy.capital + np.cumsum(flows), allocator_runs=runs)
