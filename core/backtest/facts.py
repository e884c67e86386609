"""What the carry rules are told of the backtest's settlements: the facts of each one (net
APR, rate, prices, liveness, the next settlement's time) and the state of every pair at a
grid row, as :func:`perpcarry.strategy.rules.decide` takes it."""

from __future__ import annotations

import numpy as np

from perpcarry.backtest.panel import Panel
from perpcarry.money import yields
from perpcarry.strategy.rules import Facts, PairState, Rules


def settlement_facts(panel: Panel, rules: Rules, spot_taker: np.ndarray,
                     perp_taker: np.ndarray) -> Facts:
    """The rules' facts of every settlement: net APR through the yields module (the
    estimator's funding, the basis, the round trip at the venue's taker fees plus
    ``spread_cost``, over ``horizon_days``), the rate, prices, liveness, the time of the
    series' next settlement, and the entry tests that do not depend on the clock."""
    mark, spot = panel.event_mark, panel.event_spot
    round_trip = yields.round_trip_cost(spot_taker, perp_taker, 2.0 * rules.spread_cost)
    # index[:, -1] is 1 + each series' last settlement: series s has [index[s - 1, -1],
    # index[s, -1]) of the long arrays.
    settlements = np.diff(panel.index[:, -1], prepend=0)
    with np.errstate(invalid="ignore"):
        if panel.hedged.any():
            net = yields.net_apr(yields.apr_from_hourly(panel.event_expected),
                                 yields.basis(mark, spot), np.repeat(round_trip, settlements),
                                 rules.horizon_days)
        else:   # no basis: the same sum, its per-series cost term computed once per series
            net = yields.apr_from_hourly(panel.event_expected)
            net += np.repeat(yields.net_apr(0.0, 0.0, round_trip, rules.horizon_days),
                             settlements)
    return Facts.of(rules, net, panel.event_rate, mark, spot, panel.event_live,
                    NextSettlementHours(panel))


class NextSettlementHours:
    """The time (hours) of each settlement's successor in its series, inf for a series'
    last, read like an array (``facts.next_hours[at]``) but computed only for the
    settlements asked: the whole array would cost a third of a simulation."""

    def __init__(self, panel: Panel) -> None:
        self.panel = panel

    def __getitem__(self, at) -> np.ndarray:
        panel = self.panel
        at = np.asarray(at)
        after = np.minimum(at + 1, panel.events - 1)
        same = (at + 1 < panel.events) & (panel.event_series[after] == panel.event_series[at])
        return np.where(same, panel.hours[panel.event_row[after]], np.inf)


def pair_state(panel: Panel, facts: Facts, row: int) -> PairState:
    """What :func:`perpcarry.strategy.rules.decide` is told of every series at grid ``row``:
    the facts of the settlement in force (nan, not live, no next settlement where none is
    yet)."""
    at = panel.index[:, row].astype(np.int64) - 1
    known = at >= 0
    at[~known] = 0

    def pick(values, missing):
        return np.where(known, values[at], missing)

    return PairState(net_apr=pick(facts.net_apr, np.nan), rate=pick(facts.rate, np.nan),
                     mark=pick(facts.mark, np.nan), spot=pick(facts.spot, np.nan),
                     live=known & facts.live[at],
                     next_settlement_hours=pick(facts.next_hours, np.inf))
