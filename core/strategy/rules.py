"""The carry rules: which pairs are held, and how much of each, at a rebalance.

One implementation for ``backtest`` and ``run``. The backtest engine calls
:func:`eligibility` on its long per-settlement arrays, a block of rebalances at a time (to
find the next rebalance whose eligible set changes), and :func:`decide` at each such
rebalance; the run loop calls :func:`decide` once per cycle with what it knows of each pair.
So the enter and exit tests, the pinning of positions inside their minimum hold, the
allocator call and the resize band are the same code in both (docs/strategy.md lists every
rule with its default and where it comes from).

A pair is *eligible* when the strategy wants it held: a held pair stays unless a rule makes it
leave; any other pair joins when every entry rule allows it and its cooldown is over. Only
when the eligible set changes does the allocator split the equity again (otherwise the
targets stay as they are: small moves of the APRs do not churn positions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from perpcarry.config.settings import StrategyConfig

# allocate(members, net_apr, equity, pinned) -> hedged notional of each member; ``pinned``
# (S,) is the notional of positions that must stay as they are (not among the members).
Allocate = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Rules:
    """The ``[strategy]`` thresholds the decisions use (see StrategyConfig for each)."""

    enter_apr: float
    exit_apr: float
    min_hold_hours: float
    cooldown_hours: float
    horizon_days: float
    spread_cost: float
    resize_band: float
    exit_funding_below: float | None
    entry_blackout_minutes: float
    spike_exit: float | None
    enter_premium: float | None
    exit_premium: float | None

    @classmethod
    def from_config(cls, config: StrategyConfig) -> Rules:
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Facts:
    """What is known of a pair at each settlement (long arrays in the backtest, one value
    per pair in the loop), with the entry tests that do not depend on the clock."""

    net_apr: np.ndarray
    rate: np.ndarray
    mark: np.ndarray
    spot: np.ndarray
    live: np.ndarray
    next_hours: np.ndarray       # or anything indexed like it (the backtest's is lazy)
    premium: np.ndarray | None   # perp / spot - 1, only when a premium rule is on
    may_enter: np.ndarray

    @classmethod
    def of(cls, rules: Rules, net_apr, rate, mark, spot, live, next_hours) -> Facts:
        """Entry tests: net APR above ``enter_apr``, data current, priced; with the rules on,
        the last rate not below ``exit_funding_below`` and the premium at least
        ``enter_premium`` (an unknown rate or premium allows no entry)."""
        premium = None
        if rules.enter_premium is not None or rules.exit_premium is not None:
            premium = mark / spot - 1.0
        with np.errstate(invalid="ignore"):
            may = net_apr > rules.enter_apr
            may &= live
            may &= np.isfinite(mark)
            if rules.exit_funding_below is not None:
                may &= rate >= rules.exit_funding_below
            if rules.enter_premium is not None:
                may &= premium >= rules.enter_premium
        return cls(net_apr, rate, mark, spot, live, next_hours, premium, may)


def blackout_ends(rules: Rules, next_hours):
    """The last clock time (hours) at which a pair may still enter before its next
    settlement: entries are refused after it (``entry_blackout_minutes``)."""
    return next_hours - rules.entry_blackout_minutes / 60.0


def spiked(rules: Rules, mark, entry_mark):
    """The spike-exit rule (``spike_exit`` set): the mark moved more than ``spike_exit`` since
    entry. On float arrays (:func:`eligibility`) and on Decimals (the stream risk watch,
    :mod:`perpcarry.risk.watch`, between cycles)."""
    return abs(mark / entry_mark - 1) > rules.spike_exit


def eligibility(rules: Rules, facts: Facts, at: np.ndarray, known: np.ndarray, held, release_at,
                rejoin_at, entry_mark, now: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eligible, may join) of pairs whose facts in force are ``facts[at]`` (``known``: any
    at all) at clock times ``now`` (shapes broadcast: pairs x times). Held pairs stay unless
    their data ends or gaps, or, once held ``min_hold_hours``, their net APR falls below
    ``exit_apr`` or their premium below ``exit_premium``; two risk exits apply at once, inside
    the minimum hold too: the last rate below ``exit_funding_below`` and a mark that moved
    more than ``spike_exit`` since entry. Other pairs join when they may (:meth:`Facts.of`),
    outside the blackout before their next settlement, and their cooldown is over."""
    may = known & facts.may_enter[at]
    if rules.entry_blackout_minutes > 0:
        may &= ~(now > blackout_ends(rules, facts.next_hours[at]))
    with np.errstate(invalid="ignore"):
        leave = known & (facts.net_apr[at] < rules.exit_apr)
        if rules.exit_premium is not None:
            leave |= known & (facts.premium[at] < rules.exit_premium)
        leave &= now >= release_at
        leave |= ~(known & facts.live[at])
        if rules.exit_funding_below is not None:
            leave |= known & (facts.rate[at] < rules.exit_funding_below)
        if rules.spike_exit is not None:
            leave |= known & spiked(rules, facts.mark[at], entry_mark)
    stay = held & ~leave
    stay |= ~held & may & (now >= rejoin_at)
    return stay, may


@dataclass(frozen=True)
class PairState:
    """What the loop (or the backtest at a rebalance) knows of each carry pair now, (S,)."""

    net_apr: np.ndarray                # nan where unknown
    rate: np.ndarray                   # last settled funding rate per period
    mark: np.ndarray                   # nan where unknown
    spot: np.ndarray                   # nan where unknown
    live: np.ndarray                   # bool: data current (a pair whose data ended leaves)
    next_settlement_hours: np.ndarray  # absolute hours, same clock as now; inf if unknown


@dataclass(frozen=True)
class Book:
    """The strategy's memory per pair, (S,): base quantity held, when the minimum hold ends,
    when the cooldown ends (hours), the mark at entry (nan if not held) and the eligible set
    of the last decision (the loop keeps it between cycles; after a restart ``quantity > 0``
    is the best rebuild: the allocator then runs once more)."""

    quantity: np.ndarray
    release_at: np.ndarray
    rejoin_at: np.ndarray
    entry_mark: np.ndarray
    eligible: np.ndarray

    @classmethod
    def empty(cls, size: int) -> Book:
        return cls(np.zeros(size), np.full(size, -np.inf), np.full(size, -np.inf),
                   np.full(size, np.nan), np.zeros(size, dtype=bool))

    def after(self, rules: Rules, decision: Decision, now_hours: float,
              mark: np.ndarray) -> Book:
        """The book once ``decision``'s targets are traded at ``now_hours``: entries start
        their minimum hold and record their mark, exits start their cooldown."""
        was, held = self.quantity > 0, decision.target > 0
        entry, leaving = held & ~was, was & ~held
        return Book(decision.target,
                    np.where(entry, now_hours + rules.min_hold_hours, self.release_at),
                    np.where(leaving, now_hours + rules.cooldown_hours, self.rejoin_at),
                    np.where(entry, mark, np.where(held, self.entry_mark, np.nan)),
                    decision.eligible)


@dataclass(frozen=True)
class Decision:
    target: np.ndarray           # (S,) base quantity to hold
    eligible: np.ndarray         # (S,) bool, to keep in Book.eligible
    reasons: dict[int, str]      # one line per pair that enters, leaves or resizes
    solved: bool                 # the allocator ran


def decide(rules: Rules, pairs: PairState, book: Book, now_hours: float, equity: float,
           allocate: Allocate) -> Decision:
    """Targets for every pair at ``now_hours``: when the eligible set differs from the last
    decision's, positions inside their minimum hold keep their quantity (pinned) and
    ``allocate`` splits ``equity`` over the other eligible pairs around them; a held
    position whose target moved by no more than ``resize_band`` of it keeps its quantity."""
    size = pairs.net_apr.size
    facts = Facts.of(rules, pairs.net_apr, pairs.rate, pairs.mark, pairs.spot, pairs.live,
                     pairs.next_settlement_hours)
    qty = book.quantity
    held = qty > 0
    eligible = eligibility(rules, facts, np.arange(size)[:, None], np.ones((size, 1), bool),
                           held[:, None], book.release_at[:, None], book.rejoin_at[:, None],
                           book.entry_mark[:, None], np.array([now_hours]))[0][:, 0]
    if np.array_equal(eligible, book.eligible):
        return Decision(qty, eligible, {}, False)
    pinned = held & eligible & (now_hours < book.release_at)
    free = np.flatnonzero(eligible & ~pinned)
    target = np.where(pinned, qty, 0.0)
    if free.size:
        kept = np.where(pinned, qty * pairs.mark, 0.0)
        target[free] = allocate(free, pairs.net_apr, equity, pinned=kept) / pairs.mark[free]
        # Small drifts of a held position's target are not worth two taker fees.
        steady = held & eligible & (np.abs(target - qty) <= rules.resize_band * qty)
        target[steady] = qty[steady]
    reasons = {int(i): reason(rules, facts, book, int(i), target[i], now_hours, eligible[i])
               for i in np.flatnonzero(target != qty)}
    return Decision(target, eligible, reasons, bool(free.size))


# How each reason line starts -> the rule it names (summaries count exits by rule).
RULE_OF_REASON = {"exit: data ended": "data_ended", "exit: funding": "exit_funding_below",
                  "exit: price moved": "spike_exit", "exit: net APR": "exit_apr",
                  "exit: premium": "exit_premium", "exit: the allocator": "allocator",
                  "enter:": "enter", "resize:": "resize"}


def rule_of(reason_line: str) -> str:
    """The rule a :func:`reason` line names (``exit_funding_below``, ``allocator``, ...)."""
    return next(rule for start, rule in RULE_OF_REASON.items()
                if reason_line.startswith(start))


def _pct(value: float) -> str:
    return f"{value * 100:.2f} %".replace(".00 %", " %")


def reason(rules: Rules, facts: Facts, book: Book, i: int, target: float, now_hours: float,
           eligible: bool) -> str:
    """The rule behind pair ``i``'s trade, in one line."""
    was = float(book.quantity[i])
    if was == 0:
        line = f"enter: net APR {_pct(facts.net_apr[i])} above {_pct(rules.enter_apr)}"
        if rules.enter_premium is not None:
            line += (f", premium {_pct(facts.premium[i])} at least "
                     f"{_pct(rules.enter_premium)}")
        return line
    if target > 0:
        return (f"resize: target {target:.6g} moved {_pct(abs(target / was - 1.0))} "
                f"(band {_pct(rules.resize_band)})")
    if not facts.live[i]:
        return "exit: data ended or gapped"
    rate, limit = facts.rate[i], rules.exit_funding_below
    if limit is not None and rate < limit:
        return f"exit: funding {_pct(rate)} below {_pct(limit)}"
    if rules.spike_exit is not None and spiked(rules, facts.mark[i], book.entry_mark[i]):
        moved = abs(facts.mark[i] / book.entry_mark[i] - 1.0)
        return (f"exit: price moved {_pct(moved)} since entry "
                f"(limit {_pct(rules.spike_exit)})")
    if facts.net_apr[i] < rules.exit_apr and now_hours >= book.release_at[i]:
        return f"exit: net APR {_pct(facts.net_apr[i])} below {_pct(rules.exit_apr)}"
    if rules.exit_premium is not None and facts.premium[i] < rules.exit_premium:
        return f"exit: premium {_pct(facts.premium[i])} below {_pct(rules.exit_premium)}"
    assert eligible   # otherwise one of the exits above applies
    return "exit: the allocator gives it no capital now (caps, max_positions, better pairs)"
