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
from functools import cached_property

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
    """What happened: the equity curve, per-row money flows, and every trade. The (T, S)
    views (quantity, funding, marking, fees, ...) are built from these on first use."""

    panel: Panel
    strategy: Strategy
    equity: np.ndarray           # (T,) after the rebalance at each grid time
    allocator_runs: int
    changes: tuple[tuple[int, np.ndarray], ...]  # (grid row, quantity held after it)
    event_funding: np.ndarray    # (N,) funding received at each settlement
    event_marking: np.ndarray    # (N,) mark-to-market of the hedged legs at each settlement
    trade_row: np.ndarray        # (K,) one entry per trade of one series
    trade_series: np.ndarray
    trade_fee: np.ndarray
    trade_spread: np.ndarray
    trade_notional: np.ndarray   # per leg, at the perp price
    trade_entry: np.ndarray      # bool: the series had no position before
    trade_exit: np.ndarray       # bool: the series has none after

    @property
    def final_quantity(self) -> np.ndarray:
        return self.quantity[-1]

    def _trades(self, values, dtype=float) -> np.ndarray:
        out = np.zeros(self.panel.index.shape, dtype=dtype)
        out[self.trade_row, self.trade_series] = values
        return out

    @cached_property
    def quantity(self) -> np.ndarray:
        """(T, S) base quantity held coming into each grid time."""
        out = np.zeros(self.panel.index.shape)
        bounds = [*[row for row, _ in self.changes][1:], out.shape[0] - 1]
        for (row, held), until in zip(self.changes, bounds, strict=True):
            out[row + 1:until + 1] = held
        return out

    @cached_property
    def funding(self) -> np.ndarray:
        out = np.zeros(self.panel.index.shape)
        out.ravel()[self.panel.event_flat] = self.event_funding
        return out

    @cached_property
    def marking(self) -> np.ndarray:
        out = np.zeros(self.panel.index.shape)
        out.ravel()[self.panel.event_flat] = self.event_marking
        return out

    @cached_property
    def fees(self) -> np.ndarray:
        return self._trades(self.trade_fee)

    @cached_property
    def spread(self) -> np.ndarray:
        return self._trades(self.trade_spread)

    @cached_property
    def traded(self) -> np.ndarray:
        return self._trades(self.trade_notional)

    @cached_property
    def entries(self) -> np.ndarray:
        return self._trades(self.trade_entry, bool)

    @cached_property
    def exits(self) -> np.ndarray:
        return self._trades(self.trade_exit, bool)


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
    """Run the strategy over the panel. ``allocate(members, net_apr, equity, pinned=...)``
    returns the hedged notional of each member (indices of the eligible series)."""
    T, S = panel.index.shape
    reb = panel.rebalance
    series, mark, spot = panel.event_series, panel.event_mark, panel.event_spot
    # Per settlement: net APR through the yields module, and the entry/exit tests.
    round_trip = yields.round_trip_cost(spot_taker, perp_taker, 2.0 * strategy.spread_cost)
    hedged = bool(panel.hedged.any())
    with np.errstate(invalid="ignore"):
        net = yields.net_apr(yields.apr_from_hourly(panel.event_expected),
                             yields.basis(mark, spot) if hedged else 0.0, round_trip[series],
                             strategy.horizon_days)
        below = net < strategy.exit_apr
        may_join = panel.event_live & np.isfinite(mark) & (net > strategy.enter_apr)
    # ... in force at each rebalance (index 0: no settlement yet).
    rows = None if reb.size == T else reb
    gone_r = panel.in_force(~panel.event_live, True, rows)
    below_r = panel.in_force(below, False, rows)
    may_join_r = panel.in_force(may_join, False, rows)
    now_r = panel.hours[reb]
    # Settlements in time order: money between two grid times is one slice.
    order, bounds = panel.by_time
    carry = np.nan_to_num(panel.event_rate * mark)   # funding per unit held
    carry_t, series_t = carry[order], series[order]
    if hedged:   # long spot + short perp, per unit: basis moves reach the equity
        hedge = spot - mark
        moved = np.diff(hedge, prepend=np.nan)
        moved[np.flatnonzero(np.diff(series, prepend=-1))] = 0.0   # first of its series
        moved_t = np.nan_to_num(moved)[order]

    def ext(values, fill):
        return np.concatenate([[fill], values])

    net_x, mark_x, spot_x = ext(net, np.nan), ext(mark, np.nan), ext(spot, np.nan)
    qty = np.zeros(S)
    held = np.zeros(S, dtype=bool)
    not_held = np.ones(S, dtype=bool)
    release_at = np.full(S, -np.inf)     # min hold over: may leave below exit_apr
    rejoin_at = np.full(S, -np.inf)      # cooldown over: may enter again
    before = np.zeros(S, dtype=bool).tobytes()
    equity, checkpoint = strategy.capital, 0
    trades: list[tuple] = []
    changes: list[tuple[int, np.ndarray]] = [(0, qty)]
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
        if eligible.tobytes() == before:
            continue    # same eligible set: the same targets, nothing trades
        before = eligible.tobytes()
        i = int(reb[step])
        at = panel.index[i]
        mark_i, spot_i = mark_x[at], spot_x[at]
        if held.any():   # equity for sizing: funding and basis since the last trade
            part = slice(bounds[checkpoint + 1], bounds[i + 1])
            equity += qty[series_t[part]] @ carry_t[part]
            if hedged:
                equity += qty[series_t[part]] @ moved_t[part]
        checkpoint = i
        pinned = held & eligible & (now < release_at)
        free = np.flatnonzero(eligible & ~pinned)
        target = np.where(pinned, qty, 0.0)
        if free.size:
            runs += 1
            kept = np.where(pinned, qty * mark_i, 0.0)
            target[free] = allocate(free, net_x[at], equity, pinned=kept) / mark_i[free]
            # Small drifts of a held position's target are not worth two taker fees.
            steady = held & eligible & (np.abs(target - qty) <= strategy.resize_band * qty)
            target[steady] = qty[steady]
        moved_series = np.flatnonzero(target != qty)
        if moved_series.size:
            m = moved_series
            d, s_px, m_px = np.abs(target[m] - qty[m]), spot_i[m], mark_i[m]
            fee = d * (s_px * spot_taker[m] + m_px * perp_taker[m])
            spread = d * strategy.spread_cost * (s_px + m_px) / 2.0
            equity -= fee.sum() + spread.sum()
            now_held = target > 0
            entry, leaving = now_held[m] & not_held[m], held[m] & ~now_held[m]
            trades.append((np.full(m.size, i), m, fee, spread, d * m_px, entry, leaving))
            release_at[m[entry]] = now + strategy.min_hold_hours
            rejoin_at[m[leaving]] = now + strategy.cooldown_hours
            held, not_held, qty = now_held, ~now_held, target
            changes.append((i, qty))

    # Money per settlement: the quantity held coming into its grid time (the one set at the
    # last trade before it) x its funding (and basis move).
    funding_t = np.empty(carry_t.size)
    marking_t = np.zeros(carry_t.size)
    spans = [*[row for row, _ in changes][1:], T - 1]
    for (row, held_q), until in zip(changes, spans, strict=True):
        part = slice(bounds[row + 1] if row or held_q.any() else 0, bounds[until + 1])
        funding_t[part] = held_q[series_t[part]] * carry_t[part]
        if hedged:
            marking_t[part] = held_q[series_t[part]] * moved_t[part]
    event_funding = np.empty_like(funding_t)
    event_funding[order] = funding_t
    event_marking = np.zeros_like(marking_t)
    if hedged:
        event_marking[order] = marking_t
    rows_t = np.repeat(np.arange(T), np.diff(bounds))
    flows = np.bincount(rows_t, weights=funding_t + marking_t, minlength=T)
    if trades:
        trade = [np.concatenate(part) for part in zip(*trades, strict=True)]
    else:
        trade = [np.zeros(0, dtype=np.int64)] * 2 + [np.zeros(0)] * 3 + \
            [np.zeros(0, dtype=bool)] * 2
    flows -= np.bincount(trade[0], weights=trade[2] + trade[3], minlength=T)
    return Simulation(panel=panel, strategy=strategy,
                      equity=strategy.capital + np.cumsum(flows), allocator_runs=runs,
                      changes=tuple(changes), event_funding=event_funding,
                      event_marking=event_marking, trade_row=trade[0], trade_series=trade[1],
                      trade_fee=trade[2], trade_spread=trade[3], trade_notional=trade[4],
                      trade_entry=trade[5], trade_exit=trade[6])
