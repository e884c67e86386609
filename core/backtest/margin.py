"""The backtest's margin model: each short's margin, topped up or liquidated at settlements.

Without it a position's base quantity is fixed and a short whose loss passes its margin goes
on as if nothing happened (in the bundled 2021 BTC carry, from 2021-02-18). Per held series,
at each settlement (the data's bars):

- the short's **margin** starts at its share of the capital the allocator sized it with,
  ``(1 + margin_buffer) x notional / leverage`` (see
  :attr:`perpcarry.allocation.allocator.Limits.capital_per_notional`), and moves with the
  funding received and the short's unrealised profit or loss;
- below ``margin_floor x notional / leverage`` (``[strategy] margin_floor``; default 1.25,
  where the run loop's pool is 80 % used) it is **topped up** to its target
  ``(1 + margin_buffer) x notional / leverage``:
  from free cash (equity not deployed in any leg) as a transfer, at no cost; what free cash
  cannot cover by a **rebalance**: sell a slice of spot and buy back the same quantity of
  perp (both legs' taker fee and ``spread_cost``), the quote freed restoring the margin of
  the smaller position (if that needs the whole position, it is closed);
- below the maintenance margin (``maintenance_rate x notional``, the paper venue's default
  rate, so backtest and paper agree) the venue got there first, between two bars: the
  position is **liquidated**: the short is closed at the loss and what was left of its
  margin is lost; the spot is sold (taker fee and half the spread on that leg). Where the
  bar jumped past the margin (margin below zero), the loss beyond it is the venue's (its
  insurance fund), not the trader's: the short's marking stops at its margin.

The rule is the run loop's margin monitor's too (:mod:`perpcarry.risk.sizing`, one formula:
:func:`~perpcarry.risk.sizing.margin_share`), which applies it to a venue's margin pool
rather than to each short.

Free cash changes only when money moves between it and the legs: trades at rebalances
(spot bought or sold, margin posted or returned, fees), transfers and liquidations. Funding
and price moves change the legs, not the cash.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perpcarry.backtest.panel import Panel
from perpcarry.risk.sizing import margin_share

# What a margin event did, in Simulation.margin_kind.
TRANSFER, REBALANCE, LIQUIDATION = "transfer", "rebalance", "liquidation"


@dataclass(frozen=True)
class MarginModel:
    leverage: float
    margin_buffer: float
    floor: float               # share of notional / leverage that triggers a top-up
    maintenance_rate: float    # share of notional below which the venue liquidates

    def target(self, notional):
        """The margin a short of ``notional`` is sized with and topped up to."""
        return margin_share(notional, 1.0 + self.margin_buffer, self.leverage)

    def floor_margin(self, notional):
        """The margin below which a short of ``notional`` is topped up."""
        return margin_share(notional, self.floor, self.leverage)


@dataclass(frozen=True)
class Event:
    """One margin event of one series at one settlement."""

    kind: str
    row: int
    series: int
    settlement: int
    transferred: float         # from free cash into the margin
    sold: float                # base quantity of spot sold and perp bought back
    fee: float
    spread: float
    lost: float                # margin left when liquidated (what the venue keeps)
    margin: float              # the margin the event found (below 0: the short lost more
                               # than its margin between two bars, which the venue bears)
    notional: float            # the short's notional then

    def line(self, model: MarginModel) -> str:
        """The event in one line, for the trade list."""
        share = f"{self.margin / self.notional * 100:.2f} % of notional"
        if self.kind == LIQUIDATION:
            return (f"liquidated: margin {share} below maintenance "
                    f"{model.maintenance_rate * 100:g} %")
        if self.kind == TRANSFER:
            return f"top-up: transferred {self.transferred:,.2f} from free cash (margin {share})"
        return (f"top-up: sold {self.sold:.6g} spot and bought back the same perp (margin "
                f"{share}, floor {model.floor / model.leverage * 100:g} %)")


class MarginBook:
    """Each series' perp margin (as of a settlement) and the free cash, advanced lazily:
    a series is looked at again only when its next event is due or it trades."""

    def __init__(self, model: MarginModel, panel: Panel, spot_taker: np.ndarray,
                 perp_taker: np.ndarray, spread_cost: float, capital: float) -> None:
        S = panel.shape[1]
        self.model, self.panel = model, panel
        self.spot_taker, self.perp_taker, self.spread_cost = spot_taker, perp_taker, spread_cost
        self.free = capital
        self.margin = np.zeros(S)
        self.ref = np.zeros(S, dtype=np.int64)       # settlement the margin is as of
        self.due = np.full(S, -1, dtype=np.int64)    # settlement of its next event, -1: none
        self.end = panel.index[:, -1].astype(np.int64)   # 1 + each series' last settlement

    def margin_at(self, s: int, quantity: float, k: int) -> float:
        """Series ``s``'s margin at settlement ``k`` (at or after its reference)."""
        p, a = self.panel, int(self.ref[s])
        if k <= a:
            return float(self.margin[s])
        funding = float(np.nan_to_num(p.event_rate[a + 1:k + 1] * p.event_mark[a + 1:k + 1]).sum())
        return float(self.margin[s] + quantity * (funding - (p.event_mark[k] - p.event_mark[a])))

    def _schedule(self, s: int, quantity: float) -> None:
        """The first settlement after the reference where the margin is below the floor."""
        p, a, b = self.panel, int(self.ref[s]) + 1, int(self.end[s])
        self.due[s] = -1
        if quantity <= 0 or a >= b:
            return
        mark = p.event_mark[a:b]
        path = self.margin[s] + quantity * (
            np.cumsum(np.nan_to_num(p.event_rate[a:b] * mark)) - (mark - p.event_mark[a - 1]))
        below = path < self.model.floor_margin(quantity * mark)
        if below.any():
            self.due[s] = a + int(np.argmax(below))

    def next_due(self) -> tuple[int, int]:
        """(grid row, series) of the earliest event due; row -1 when none is."""
        waiting = np.flatnonzero(self.due >= 0)
        if waiting.size == 0:
            return -1, -1
        s = int(waiting[np.argmin(self.panel.event_row[self.due[waiting]])])
        return int(self.panel.event_row[self.due[s]]), s

    def traded(self, s: int, at: int, old: float, new: float, cost: float) -> None:
        """A rebalance traded series ``s`` from ``old`` to ``new`` base units at settlement
        ``at`` (in force), paying ``cost``: spot bought or sold, margin posted or returned
        to its target for the new quantity."""
        p = self.panel
        margin = self.margin_at(s, old, at) if old > 0 else 0.0
        posted = self.model.target(new * p.event_mark[at])
        self.free -= (new - old) * p.event_spot[at] + posted - margin + cost
        self.margin[s], self.ref[s] = posted, at
        self._schedule(s, new)

    def resolve(self, s: int, quantity: float) -> tuple[Event, float]:
        """Handle series ``s``'s due event: (what was done, the quantity left)."""
        p, model, k = self.panel, self.model, int(self.due[s])
        mark, spot = float(p.event_mark[k]), float(p.event_spot[k])
        margin = self.margin_at(s, quantity, k)
        notional = quantity * mark
        row = int(p.event_row[k])
        self.ref[s] = k
        if margin < model.maintenance_rate * notional:
            fee = quantity * spot * self.spot_taker[s]
            spread = quantity * self.spread_cost * spot / 2.0
            self.free += quantity * spot - fee - spread
            self.margin[s], self.due[s] = 0.0, -1
            return Event(LIQUIDATION, row, s, k, 0.0, quantity, fee, spread, max(margin, 0.0),
                         margin, notional), 0.0
        need = model.target(notional) - margin
        moved = min(max(self.free, 0.0), need)
        self.free -= moved
        margin += moved
        if moved >= need:
            self.margin[s] = margin
            self._schedule(s, quantity)
            return Event(TRANSFER, row, s, k, moved, 0.0, 0.0, 0.0, 0.0, margin - moved,
                         notional), quantity
        # Sell x spot, buy back x perp: x (spot - unit cost) more margin, x perp less to back.
        unit_fee = spot * self.spot_taker[s] + mark * self.perp_taker[s]
        unit_spread = self.spread_cost * (spot + mark) / 2.0
        room = spot - unit_fee - unit_spread + model.target(mark)
        sold = quantity if room <= 0 else min(quantity, (model.target(notional) - margin) / room)
        fee, spread = sold * unit_fee, sold * unit_spread
        left = quantity - sold
        self.margin[s] = margin + sold * spot - fee - spread
        if left <= 0:       # nothing left to back: the freed quote goes back to the cash
            self.free += self.margin[s]
            self.margin[s] = 0.0
        self._schedule(s, left)
        return Event(REBALANCE, row, s, k, moved, sold, fee, spread, 0.0, margin - moved,
                     notional), left
