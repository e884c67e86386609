"""The carry simulation: hysteresis and holding rules per rebalance, money per settlement.

Order of events at a grid time t:

1. funding settles on the position held coming into t: short perp notional at t's mark
   price x the rate (received when positive, paid when negative); the hedged legs are
   marked to market (long spot minus short perp: only basis moves reach the equity); with
   the margin model (:mod:`perpcarry.backtest.margin`), a short whose margin fell below its
   floor is topped up (a transfer, or a rebalance slice that trades) or liquidated;
2. at a rebalance, the estimator's funding (known at t) gives each pair a net APR through
   :mod:`perpcarry.money.yields`, and the rules of :mod:`perpcarry.strategy.rules` (the code
   ``run`` uses too) say which pairs are eligible: held pairs leave below ``exit_apr`` once
   held ``min_hold_hours`` (or at once when their data ends, or on a risk exit), others join
   above ``enter_apr`` outside their cooldown; when that eligible set changes,
   :func:`perpcarry.strategy.rules.decide` has the allocator's LP split the current equity
   over it and positions trade to their targets. Positions still inside their minimum
   holding time are pinned: they keep their quantity, and the LP shares out what is left of
   the budget and of each cap around them;
3. every trade pays the venue's taker fee on both legs plus ``spread_cost``.

Speed: the net APR and the entry test are computed once per settlement (long arrays). The
sequential part looks for the next rebalance whose eligible set differs, a block of
rebalances at a time: pairs held, eligible or cooling down are watched one by one through
the panel's "settlement in force" index; any other pair changes the set exactly at the
rebalances where a settlement of it that may join is in force, which a count per rebalance
tells (less the watched pairs among them); a block stops before the next margin event,
which the margin book finds per held series with one vector pass. Only at a change does
anything else happen (equity for sizing, the LP, trades): otherwise the targets are
unchanged, so re-solving would return the same weights. Money is accrued per settlement
from the few held series' contiguous slices of the long arrays. Quantities are continuous:
lot rounding, which ``plan`` applies, would only add noise of a lot per position.

``max_positions``: :func:`perpcarry.allocation.lp.keep_largest` (largest notional x net APR
first), as :func:`perpcarry.allocation.allocator.allocate` applies it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from perpcarry.backtest.facts import pair_state, settlement_facts
from perpcarry.backtest.margin import LIQUIDATION, Event, MarginBook, MarginModel
from perpcarry.backtest.panel import Panel
from perpcarry.strategy.rules import (
    Allocate,
    Book,
    Rules,
    blackout_ends,
    decide,
    eligibility,
)

# Rebalances examined per vector step after a change; the step doubles while the eligible
# set stays the same, up to BLOCK_CELLS (watched pair, rebalance) cells.
BLOCK, BLOCK_CELLS = 32, 32 * 1024


@dataclass(frozen=True)
class Simulation:
    """What happened: the equity curve, per-row money flows, and every trade. The (T, S)
    views (quantity, funding, marking, fees, ...) are built from these on first use."""

    panel: Panel
    rules: Rules
    capital: float
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
    trade_reason: tuple[str, ...]  # the rule behind each trade, one line
    trade_kind: np.ndarray       # RULE_TRADE, TOPUP_TRADE (a margin rebalance), LIQUIDATED
    trade_lost: np.ndarray       # margin lost to a liquidation
    margin_events: tuple[Event, ...] = ()   # top-ups and liquidations (margin model on)

    @property
    def final_quantity(self) -> np.ndarray:
        return self.quantity[-1]

    def _trades(self, values, dtype=float) -> np.ndarray:
        # A margin event and a rebalance may trade one series at one grid time: summed.
        out = np.zeros(self.panel.shape, dtype=dtype)
        (np.logical_or if dtype is bool else np.add).at(
            out, (self.trade_row, self.trade_series), values)
        return out

    @cached_property
    def quantity(self) -> np.ndarray:
        """(T, S) base quantity held coming into each grid time."""
        out = np.zeros(self.panel.shape)
        bounds = [*[row for row, _ in self.changes][1:], out.shape[0] - 1]
        for (row, held), until in zip(self.changes, bounds, strict=True):
            out[row + 1:until + 1] = held
        return out

    @cached_property
    def funding(self) -> np.ndarray:
        out = np.zeros(self.panel.shape)
        out.ravel()[self.panel.event_flat] = self.event_funding
        return out

    @cached_property
    def marking(self) -> np.ndarray:
        out = np.zeros(self.panel.shape)
        out.ravel()[self.panel.event_flat] = self.event_marking
        return out

    @cached_property
    def fees(self) -> np.ndarray:
        return self._trades(self.trade_fee)

    @cached_property
    def spread(self) -> np.ndarray:
        return self._trades(self.trade_spread)

    @cached_property
    def lost(self) -> np.ndarray:
        return self._trades(self.trade_lost)

    @cached_property
    def traded(self) -> np.ndarray:
        return self._trades(self.trade_notional)

    @cached_property
    def entries(self) -> np.ndarray:
        return self._trades(self.trade_entry, bool)

    @cached_property
    def exits(self) -> np.ndarray:
        return self._trades(self.trade_exit, bool)


# Simulation.trade_kind: a trade the rules decided, a margin top-up's rebalance slice, a
# liquidation (the short closed by the venue, the spot sold).
RULE_TRADE, TOPUP_TRADE, LIQUIDATED = 0, 1, 2


def lp_allocator(limits, venues, bases, venue_share=None) -> Allocate:
    """The allocator's LP over the eligible pairs, caps as shares of the equity at the
    rebalance, ``max_positions`` applied as :func:`perpcarry.allocation.allocator.allocate`
    applies it (keep the largest and solve again on them). Pinned positions use their share
    of the budget, of their venue's and asset's caps and of ``max_positions`` first.
    ``venue_share`` (venue -> share of the equity) lowers a venue's cap to the capital it
    actually holds: the run loop's accounts are per venue, a backtest's capital is one."""
    from perpcarry.allocation.lp import keep_largest, solve_detailed

    names, venue_ids = np.unique(np.array(venues), return_inverse=True)
    base_venue_cap = np.full(names.size, limits.max_venue_share)
    if venue_share is not None:
        base_venue_cap = np.minimum(base_venue_cap,
                                    [venue_share.get(str(v), 0.0) for v in names])
    asset_ids = np.unique(np.array(bases), return_inverse=True)[1]
    n_venues, n_assets = int(venue_ids.max()) + 1, int(asset_ids.max()) + 1
    k = limits.capital_per_notional
    budget = 1.0 - limits.cash_reserve
    pair_cap = limits.pair_cap / limits.capital

    def allocate(members: np.ndarray, net_apr: np.ndarray, equity: float,
                 pinned: np.ndarray | None = None) -> np.ndarray:
        apr = np.nan_to_num(net_apr[members], nan=0.0)
        apr = np.where(apr >= limits.min_net_apr, apr, 0.0)
        venue_cap = base_venue_cap.copy()
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


def simulate(panel: Panel, rules: Rules, capital: float, spot_taker: np.ndarray,
             perp_taker: np.ndarray, allocate: Allocate,
             progress: Callable[[int, int], None] | None = None,
             margin: MarginModel | None = None) -> Simulation:
    """Run the rules over the panel from ``capital``. ``allocate(members, net_apr, equity,
    pinned=...)`` returns the hedged notional of each member (indices of the eligible
    series). With ``margin``, each short's margin is topped up or liquidated at settlements
    (:mod:`perpcarry.backtest.margin`)."""
    T, S = panel.shape
    reb = panel.rebalance
    series, mark, spot = panel.event_series, panel.event_mark, panel.event_spot
    hedged = bool(panel.hedged.any())
    facts = settlement_facts(panel, rules, spot_taker, perp_taker)
    n_steps = reb.size
    now_r = panel.hours[reb]
    # Pairs that may join at each rebalance: a settlement that may join counts from the
    # first rebalance at or after it to the first one at or after its series' next one, or
    # the first one inside the blackout before that next one, whichever comes first.
    joiners = np.flatnonzero(facts.may_enter)
    joined = np.searchsorted(reb, panel.event_row[joiners])
    replaced = np.full(joiners.size, n_steps)
    follows = joiners + 1 < series.size
    follows[follows] = series[joiners[follows] + 1] == series[joiners[follows]]
    replaced[follows] = np.searchsorted(reb, panel.event_row[joiners[follows] + 1])
    if rules.entry_blackout_minutes > 0:
        blocked = np.searchsorted(
            now_r, blackout_ends(rules, facts.next_hours[joiners[follows]]), side="right")
        replaced[follows] = np.maximum(np.minimum(replaced[follows], blocked),
                                       joined[follows])
    may_join_count = np.cumsum(
        np.bincount(joined, minlength=n_steps + 1)
        - np.bincount(replaced, minlength=n_steps + 1))[:n_steps]
    hedge = spot - mark if hedged else None   # long spot + short perp, per unit held

    def block_eligibility(members, in_force: np.ndarray, now: np.ndarray):
        """The rules' (eligible, may join) of ``members`` (indices of the series) whose
        settlements ``in_force`` (1 + position, 0: none yet) hold at rebalance times
        ``now``."""
        at = in_force - 1
        known = at >= 0
        at[~known] = 0
        return eligibility(rules, facts, at, known, held[members, None],
                           book.release_at[members, None], book.rejoin_at[members, None],
                           book.entry_mark[members, None], now)

    def money(held_q, rows_from: int, rows_to: int):
        """Settlements of the held series in grid rows (rows_from, rows_to]: slices of
        the long arrays (each series' settlements are contiguous, in time order)."""
        lo = panel.index[:, rows_from] if rows_from >= 0 else np.zeros(S, dtype=np.int64)
        hi = panel.index[:, rows_to]
        for s in np.flatnonzero(held_q):
            # index is 1 + the settlement in force, so (lo, hi] in 1-based is [lo, hi).
            a, b = int(lo[s]), int(hi[s])
            if b > a:
                yield s, a, b

    book = Book.empty(S)
    held = np.zeros(S, dtype=bool)
    equity, checkpoint = capital, 0
    trades: list[tuple] = []
    reasons: list[str] = []
    changes: list[tuple[int, np.ndarray]] = [(-1, book.quantity)]
    runs = 0
    margins = None if margin is None else MarginBook(margin, panel, spot_taker, perp_taker,
                                                     rules.spread_cost, capital)
    events: list[Event] = []

    def accrue(row: int) -> None:
        """Equity for sizing: funding and basis since the last checkpoint."""
        nonlocal equity, checkpoint
        qty = book.quantity
        if held.any():
            for s, a, b in money(held, checkpoint, row):
                equity += qty[s] * float(np.nan_to_num(panel.event_rate[a:b] * mark[a:b]).sum())
                if hedged:
                    equity += qty[s] * float(hedge[b - 1] - hedge[a - 1])
        checkpoint = row

    def margin_event(s: int) -> None:
        """The margin model's due event of series ``s``: a transfer, a rebalance slice or
        a liquidation, with its costs, quantity and the book updated."""
        nonlocal equity, book, held
        row = int(panel.event_row[margins.due[s]])
        accrue(row)
        event, left = margins.resolve(s, float(book.quantity[s]))
        events.append(event)
        if event.sold == 0:
            return
        liquidated = event.kind == LIQUIDATION
        # A margin below zero: the venue bore the loss beyond it (see the marking below).
        equity -= event.fee + event.spread + (event.margin if liquidated else 0.0)
        trades.append((np.array([row]), np.array([s]), np.array([event.fee]),
                       np.array([event.spread]), np.array([event.sold * mark[margins.ref[s]]]),
                       np.array([False]), np.array([left == 0]), np.array([event.lost]),
                       np.array([LIQUIDATED if liquidated else TOPUP_TRADE])))
        reasons.append(event.line(margin))
        qty = book.quantity.copy()
        qty[s] = left
        if left == 0:
            held = held.copy()
            held[s] = False
            book = replace(book, quantity=qty,
                           rejoin_at=np.where(np.arange(S) == s,
                                              panel.hours[row] + rules.cooldown_hours,
                                              book.rejoin_at),
                           entry_mark=np.where(np.arange(S) == s, np.nan, book.entry_mark))
        else:
            book = replace(book, quantity=qty)
        changes.append((row, qty))

    step, block, watched = 0, BLOCK, None
    while step < n_steps:
        limit = n_steps
        if margins is not None:
            due_row, s = margins.next_due()
            if 0 <= due_row <= reb[step]:     # settles before this rebalance decides
                margin_event(s)
                watched = None
                continue
            if due_row >= 0:
                limit = int(np.searchsorted(reb, due_row))
        # The next rebalance whose eligible set differs, a block of rebalances at a time.
        # Pairs held, eligible or cooling down are watched one by one; any other pair
        # changes the set exactly where it may join, which the count of pairs that may join
        # less the watched ones tells.
        if watched is None:
            watched = np.flatnonzero(held | book.eligible | (book.rejoin_at > now_r[step]))
        stop = min(step + block, limit)
        stay, may = block_eligibility(watched, panel.index[np.ix_(watched, reb[step:stop])],
                                      now_r[step:stop])
        differs = (stay != book.eligible[watched, None]).any(axis=0)
        differs |= may_join_count[step:stop] > may.sum(axis=0)
        changed = np.flatnonzero(differs)
        if progress is not None:
            progress(stop if changed.size == 0 else step + int(changed[0]) + 1, n_steps)
        if changed.size == 0:
            step = stop
            block = max(min(2 * block, BLOCK_CELLS // max(watched.size, 1)), BLOCK)
            continue    # same eligible set: the same targets, nothing trades
        step += int(changed[0])
        now, i = now_r[step], int(reb[step])
        block, watched = BLOCK, None
        step += 1
        qty = book.quantity
        accrue(i)
        pairs = pair_state(panel, facts, i)
        decision = decide(rules, pairs, book, now, equity, allocate)
        runs += decision.solved
        target = decision.target
        m = np.flatnonzero(target != qty)
        if m.size:
            d, s_px, m_px = np.abs(target[m] - qty[m]), pairs.spot[m], pairs.mark[m]
            fee = d * (s_px * spot_taker[m] + m_px * perp_taker[m])
            spread = d * rules.spread_cost * (s_px + m_px) / 2.0
            equity -= fee.sum() + spread.sum()
            now_held = target > 0
            entry, leaving = now_held[m] & ~held[m], held[m] & ~now_held[m]
            trades.append((np.full(m.size, i), m, fee, spread, d * m_px, entry, leaving,
                           np.zeros(m.size), np.full(m.size, RULE_TRADE)))
            reasons += [decision.reasons[j] for j in m.tolist()]
            held = now_held
            changes.append((i, target))
            if margins is not None:
                at = panel.index[m, i].astype(np.int64) - 1
                for j, s in enumerate(m.tolist()):
                    margins.traded(s, int(at[j]), float(qty[s]), float(target[s]),
                                   float(fee[j] + spread[j]))
        book = book.after(rules, decision, now, pairs.mark)
    while margins is not None and margins.next_due()[0] >= 0:   # after the last rebalance
        margin_event(margins.next_due()[1])

    # Money per settlement: the quantity held coming into its grid time (the one set at the
    # last trade before it) x its funding (and basis move since the series' last one).
    event_funding = np.zeros(panel.events)
    event_marking = np.zeros(panel.events)
    slices = []
    for (row, held_q), (until, _) in zip(changes, [*changes[1:], (T - 1, None)],
                                         strict=True):
        for s, a, b in money(held_q, row, until):
            event_funding[a:b] = held_q[s] * np.nan_to_num(panel.event_rate[a:b] * mark[a:b])
            if hedged and a > 0 and series[a - 1] == s:
                event_marking[a:b] = held_q[s] * (hedge[a:b] - hedge[a - 1:b - 1])
            elif hedged:
                event_marking[a + 1:b] = held_q[s] * np.diff(hedge[a:b])
            slices.append(np.arange(a, b))
    for event in events:   # a short liquidated past its margin lost only its margin
        if event.kind == LIQUIDATION and event.margin < 0:
            event_marking[event.settlement] -= event.margin
    flows = np.zeros(T)
    if slices:    # only the held series' settlements carry money
        paid = np.concatenate(slices)
        flows += np.bincount(panel.event_row[paid],
                             weights=event_funding[paid] + event_marking[paid], minlength=T)
    if trades:
        trade = [np.concatenate(part) for part in zip(*trades, strict=True)]
    else:
        trade = [np.zeros(0, dtype=np.int64)] * 2 + [np.zeros(0)] * 3 + \
            [np.zeros(0, dtype=bool)] * 2 + [np.zeros(0), np.zeros(0, dtype=np.int64)]
    flows -= np.bincount(trade[0], weights=trade[2] + trade[3] + trade[7], minlength=T)
    return Simulation(panel=panel, rules=rules, capital=capital,
                      equity=capital + np.cumsum(flows), allocator_runs=runs,
                      changes=tuple(changes[1:]) if len(changes) > 1 else
                      ((0, book.quantity),),
                      event_funding=event_funding,
                      event_marking=event_marking, trade_row=trade[0], trade_series=trade[1],
                      trade_fee=trade[2], trade_spread=trade[3], trade_notional=trade[4],
                      trade_entry=trade[5], trade_exit=trade[6], trade_reason=tuple(reasons),
                      trade_kind=trade[8], trade_lost=trade[7], margin_events=tuple(events))
