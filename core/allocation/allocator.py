"""How much capital goes to which carry position: a linear programme, then lot rounding.

Pure and venue-agnostic: the same code plans (``perpcarry plan``), rebalances and backtests.

Capital model. One unit of hedged notional (long spot, short perp, same base quantity) uses
``1 + (1 + margin_buffer) / leverage`` units of capital: the spot leg is fully paid, the perp
leg needs initial margin ``notional / leverage`` plus ``margin_buffer`` times that margin kept
free against the perp's losses when the price rises.

Constraints, all measured in capital used (spot notional + perp margin + buffer):

- the cash reserve (``cash_reserve`` x capital) is kept out; the rest is investable;
- per venue, per asset (across venues) and per pair (one venue's spot/perp pair) caps are
  shares of the WHOLE capital, reserve included, so "at most 20 % of my money in BTC" does not
  move when the reserve changes;
- ``min_positions`` m also caps every pair at 1/m of the investable capital, so deploying it
  all takes at least m positions (an LP cannot count positions; a cap can);
- ``max_positions``: when the LP optimum holds more, the largest LP positions are kept and the
  LP is solved again on them;
- each leg's quantity step, minimum quantity and minimum notional; both legs carry the same
  base quantity.

Money is in the pairs' quote currency, USDT and USDC counted one for one; sizing uses each
candidate's reference price (spot ask, else perp mark), so the venue re-checks minimum
notionals at the fill price.

The per-venue and per-asset caps are not nested, so a greedy fill by net APR is not optimal
in general (see :func:`greedy_baseline`); the continuous problem is solved exactly by HiGHS,
then every position is rounded down to its common lot and leftover capital is spent again,
lot by lot, where the caps still allow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any

from perpcarry.allocation.lp import (
    LpSolution,
    greedy_baseline,
    keep_largest,
    solve_detailed,
    solve_lp,
)
from perpcarry.allocation.rounding import exact_capital_per_notional, round_positions
from perpcarry.domain.errors import InvalidValue, UsageError
from perpcarry.domain.types import Market, Skipped
from perpcarry.money.yields import DAYS_PER_YEAR

if TYPE_CHECKING:
    from perpcarry.config.settings import AllocatorConfig
    from perpcarry.scan.engine import CarryYield

__all__ = ["Allocation", "AllocationCandidate", "CapUsage", "Limits", "Position",
           "UnusedCapital", "allocate", "candidates_from_scan", "greedy_baseline", "solve_lp"]

# Positions are sized in Decimal (28 significant digits) in lots as small as 1e-8 of a base
# unit: above a trillion of capital, lot counts no longer fit and the rounding cannot divide.
MAX_CAPITAL = 1e12

# A cap is binding when its slack at the LP optimum is below this share of the budget.
BINDING_EPSILON = 1e-7


@dataclass(frozen=True)
class AllocationCandidate:
    """One carry position the allocator may take: long ``spot``, short ``perp`` on ``venue``.

    ``net_apr`` is the expected net yield per unit of hedged notional per year; ``price`` the
    reference price of one base unit used for sizing; ``entry_score`` orders entry (current
    funding APR plus the entry premium amortised over the horizon, as the FMZ strategy enters
    the best rate + premium first). ``expected_apr`` (expected funding APR) gives the expected
    daily funding shown in the plan.
    """

    venue: str
    base: str
    pair_label: str
    spot: Market
    perp: Market
    net_apr: float
    price: Decimal
    entry_score: float
    expected_apr: float | None = None
    current_rate: Decimal | None = None
    interval_hours: int | None = None

    @property
    def quote(self) -> str:
        return self.perp.settle or self.perp.quote

    @property
    def lot(self) -> Decimal:
        """The smallest base quantity both legs can trade: a common multiple of both steps."""
        return _common_multiple(self.spot.quantity_step * self.spot.contract_size,
                                self.perp.quantity_step * self.perp.contract_size)

    @property
    def min_base_quantity(self) -> Decimal:
        """The smallest lot multiple meeting both legs' minimum quantity and notional."""
        floor = max(self.spot.min_quantity * self.spot.contract_size,
                    self.perp.min_quantity * self.perp.contract_size)
        for min_notional in (self.spot.min_notional, self.perp.min_notional):
            if min_notional is not None:
                floor = max(floor, min_notional / self.price)
        lot = self.lot
        return (floor / lot).to_integral_value(ROUND_CEILING) * lot


@dataclass(frozen=True)
class Position:
    """One target position. Money in the pair's quote currency at the reference price."""

    venue: str
    base: str
    pair_label: str
    spot_symbol: str
    perp_symbol: str
    base_quantity: Decimal
    perp_contracts: Decimal
    price: Decimal
    notional: Decimal          # per leg
    margin: Decimal            # perp initial margin + buffer
    capital: Decimal           # notional + margin
    net_apr: float
    expected_daily_funding: float | None
    expected_daily_net: float
    entry_rank: int
    lp_notional: float


@dataclass(frozen=True)
class CapUsage:
    """Capital used under one cap at the plan (after rounding) and at the LP optimum."""

    kind: str                  # total | venue | asset | pair
    name: str
    used: float
    cap: float
    lp_used: float
    binding: bool              # tight at the LP optimum
    shadow_apr: float | None   # yearly net yield per extra unit of capital under this cap


@dataclass(frozen=True)
class UnusedCapital:
    reserve: float             # the cash reserve
    caps: float                # investable capital the LP optimum leaves idle (caps, no candidates)
    rounding: float            # LP capital lost to lot rounding

    @property
    def total(self) -> float:
        return self.reserve + self.caps + self.rounding


@dataclass(frozen=True)
class Allocation:
    capital: float
    investable: float
    capital_per_notional: float
    positions: tuple[Position, ...]
    venues: tuple[CapUsage, ...]
    assets: tuple[CapUsage, ...]
    binding: tuple[CapUsage, ...]
    unused: UnusedCapital
    lp_objective: float        # yearly net yield of the continuous optimum
    objective: float           # yearly net yield after rounding
    excluded: tuple[Skipped, ...] = ()
    reason: str | None = None  # why nothing (or less than asked) could be allocated
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["unused"]["total"] = self.unused.total
        return data


@dataclass(frozen=True)
class Limits:
    """Validated allocator settings with the capital: every cap as an amount of capital."""

    capital: float
    leverage: float
    margin_buffer: float
    cash_reserve: float
    max_venue_share: float
    max_asset_share: float
    max_pair_share: float
    min_net_apr: float
    min_positions: int
    max_positions: int

    @classmethod
    def from_config(cls, config: AllocatorConfig, capital: float | None = None,
                    **overrides: Any) -> Limits:
        """``config`` with ``capital`` and any non-None override; raises InvalidValue naming
        the first field out of its range."""
        values = config.model_dump()
        values.update({k: v for k, v in overrides.items() if v is not None})
        if capital is not None:
            values["capital"] = capital
        if values.get("capital") is None:
            raise UsageError("capital is not set")
        limits = cls(**values)
        limits.validate()
        return limits

    def validate(self) -> None:
        """The one place allocator settings are checked, whether they come from
        ``[allocator]``, ``plan``'s flags or a backtest; raises :class:`InvalidValue`."""
        ranges = (  # field, low, high, low excluded, high excluded
            ("capital", 0, MAX_CAPITAL, True, False),
            ("leverage", 1, 5, False, False),
            ("margin_buffer", 0, 5, False, False),
            ("cash_reserve", 0, 1, False, True),
            ("max_venue_share", 0, 1, True, False),
            ("max_asset_share", 0, 1, True, False),
            ("max_pair_share", 0, 1, True, False),
            ("min_net_apr", None, None, False, False),
            ("min_positions", 0, None, False, False),
            ("max_positions", 1, None, False, False),
        )
        for name, low, high, low_open, high_open in ranges:
            value = getattr(self, name)
            if not (math.isfinite(value)
                    and (low is None or (value > low if low_open else value >= low))
                    and (high is None or (value < high if high_open else value <= high))):
                raise InvalidValue(name, value, low=low, high=high, low_open=low_open,
                                   high_open=high_open)
        if self.min_positions > self.max_positions:
            raise InvalidValue("min_positions", self.min_positions,
                               rule=f"must not exceed max_positions ({self.max_positions})")

    @property
    def capital_per_notional(self) -> float:
        return float(exact_capital_per_notional(self))

    @property
    def investable(self) -> float:
        return self.capital * (1.0 - self.cash_reserve)

    @property
    def pair_cap(self) -> float:
        cap = self.max_pair_share * self.capital
        if self.min_positions > 1:
            cap = min(cap, self.investable / self.min_positions)
        return cap


def candidates_from_scan(rows: Iterable[CarryYield]) -> tuple[list[AllocationCandidate],
                                                              list[Skipped]]:
    """Turn scan rows into candidates; rows without a net APR or a price are skipped, with why."""
    from perpcarry.money.yields import net_apr as amortised_apr

    candidates: list[AllocationCandidate] = []
    skipped: list[Skipped] = []
    for row in rows:
        label = row.pair.label
        if row.net_apr is None:
            skipped.append(Skipped(row.venue, label, f"no net APR: the {row.estimator} "
                                   "estimator has too little funding history"))
            continue
        price = row.reference_price
        if price is None or price <= 0:
            skipped.append(Skipped(row.venue, label, "no reference price (no book, no mark)"))
            continue
        premium = row.entry_premium or 0.0
        candidates.append(AllocationCandidate(
            venue=row.venue, base=row.pair.base, pair_label=label, spot=row.pair.spot,
            perp=row.pair.perp, net_apr=float(row.net_apr), price=price,
            entry_score=float(amortised_apr(row.current_apr, premium, 0.0, row.horizon_days)),
            expected_apr=row.expected_apr, current_rate=row.quote.rate,
            interval_hours=row.quote.interval_hours,
        ))
    return candidates, skipped


# --------------------------------------------------------------------------- allocate


def allocate(candidates: Sequence[AllocationCandidate], limits: Limits) -> Allocation:
    """The plan: LP optimum over ``candidates`` under ``limits``, rounded to lot sizes."""
    import numpy as np


    limits.validate()
    k = limits.capital_per_notional
    excluded: list[Skipped] = []
    eligible: list[AllocationCandidate] = []
    best_below: AllocationCandidate | None = None
    tightest = _tightest_cap(limits)
    for cand in candidates:
        if cand.net_apr < limits.min_net_apr or cand.net_apr <= 0:
            excluded.append(Skipped(cand.venue, cand.pair_label,
                                    f"net APR {cand.net_apr:.2%} below the minimum "
                                    f"{max(limits.min_net_apr, 0.0):.2%}"))
            if best_below is None or cand.net_apr > best_below.net_apr:
                best_below = cand
            continue
        eligible.append(cand)

    venues = {v: i for i, v in enumerate(sorted({c.venue for c in candidates}))}
    assets = {a: i for i, a in enumerate(sorted({c.base for c in candidates}))}
    active = list(eligible)
    notes: list[str] = []
    reason: str | None = None
    while True:
        venue_ids = np.array([venues[c.venue] for c in active], dtype=np.int64)
        asset_ids = np.array([assets[c.base] for c in active], dtype=np.int64)
        apr = np.array([c.net_apr for c in active])
        solve = _solver(apr, k, venue_ids, asset_ids, limits, len(venues), len(assets))
        solution = solve(np.arange(len(active)))
        held = np.flatnonzero(solution.notional > 0)
        if held.size > limits.max_positions:
            keep = keep_largest(solution.notional, apr, limits.max_positions)
            notes.append(f"the LP optimum holds {held.size} positions; kept the "
                         f"{limits.max_positions} with the largest expected yield "
                         "(max_positions) and solved again")
            solution = solve(keep)
        rounded, failed = round_positions(active, solution.notional, limits)
        if not failed:
            break
        # Minimum orders are checked only where the LP puts capital: checking all the
        # candidates up front costs more than the LP itself on thousands of them.
        for i in failed:
            cand = active[i]
            why = _too_small_for_caps(cand, tightest, k) or (
                f"its LP share ({solution.notional[i]:.2f} {cand.quote} per leg) rounds "
                "below the minimum order; solved again without it")
            excluded.append(Skipped(cand.venue, cand.pair_label, why))
        dropped = set(failed)
        active = [c for i, c in enumerate(active) if i not in dropped]

    positions = _positions(active, rounded, solution.notional, limits)
    if not positions:
        reason = _why_nothing(candidates, eligible, excluded, best_below, limits)
    elif len(positions) < limits.min_positions:
        reason = (f"min_positions = {limits.min_positions} but only {len(positions)} "
                  "positions fit under the caps and minimum orders")
        positions = []
    usage = _cap_usage(active, solution, positions, limits, venues, assets)
    lp_capital = float(k * solution.notional.sum())
    plan_capital = float(sum(p.capital for p in positions))
    # Topping up after rounding may spend a little of what the LP left idle: count only
    # the net loss as rounding, so reserve + caps + rounding + plan = capital exactly.
    rounding = max(lp_capital - plan_capital, 0.0) if positions else 0.0
    return Allocation(
        capital=limits.capital, investable=limits.investable, capital_per_notional=k,
        positions=tuple(positions), venues=usage["venue"], assets=usage["asset"],
        binding=tuple(u for kind in ("total", "venue", "asset", "pair") for u in usage[kind]
                      if u.binding),
        unused=UnusedCapital(reserve=limits.capital - limits.investable,
                             caps=limits.investable - plan_capital - rounding,
                             rounding=rounding),
        lp_objective=solution.objective, objective=float(sum(p.net_apr * float(p.notional)
                                                             for p in positions)),
        excluded=tuple(excluded), reason=reason, notes=tuple(notes),
    )


def _solver(apr, k, venue_ids, asset_ids, limits: Limits, n_venues: int, n_assets: int):
    """Solve the LP restricted to a subset of candidates (indices into the arrays)."""
    import numpy as np

    def solve(subset: np.ndarray) -> LpSolution:
        notional = np.zeros(apr.size)
        if subset.size == 0:
            return LpSolution(notional, 0.0, {})
        part = solve_detailed(apr[subset], k, venue_ids[subset], asset_ids[subset],
                      budget=limits.investable, venue_cap=limits.max_venue_share * limits.capital,
                      asset_cap=limits.max_asset_share * limits.capital,
                      pair_cap=limits.pair_cap, n_venues=n_venues, n_assets=n_assets)
        notional[subset] = part.notional
        return LpSolution(notional, part.objective, part.shadow)

    return solve


def _tightest_cap(limits: Limits) -> tuple[float, str]:
    caps = [(limits.investable, "investable capital (after the cash reserve)"),
            (limits.max_venue_share * limits.capital, "per-venue cap"),
            (limits.max_asset_share * limits.capital, "per-asset cap"),
            (limits.pair_cap, "per-pair cap")]
    return min(caps, key=lambda c: c[0])


def _too_small_for_caps(cand: AllocationCandidate, tightest: tuple[float, str],
                        capital_per_notional: float) -> str | None:
    """Why the minimum order alone breaks a cap, naming the tightest cap; None if it fits."""
    min_notional = cand.min_base_quantity * cand.price
    needed = float(min_notional) * capital_per_notional
    cap, name = tightest
    if needed <= cap:
        return None
    q = cand.quote
    return (f"minimum order {_money(min_notional)} {q} per leg (needs {_money(needed)} {q} "
            f"of capital with margin) exceeds the {name} of {_money(cap)} {q}")


def _why_nothing(candidates, eligible, excluded, best_below, limits: Limits) -> str:
    if not candidates:
        return "no carry candidate to allocate to (the scan found none with a net APR)"
    if not eligible and best_below is not None and len(excluded) == len(candidates) and all(
            "below the minimum" in s.reason for s in excluded):
        return (f"no candidate reaches the minimum net APR of {max(limits.min_net_apr, 0):.2%} "
                f"(best: {best_below.pair_label} on {best_below.venue} at "
                f"{best_below.net_apr:.2%})")
    sized = [s for s in excluded if "minimum order" in s.reason or "rounds below" in s.reason]
    if sized:
        return f"{sized[0].venue} {sized[0].symbol}: {sized[0].reason}"
    return "no position fits under the caps"


def _positions(active, rounded, lp_notional, limits: Limits) -> list[Position]:
    k_dec = exact_capital_per_notional(limits)
    chosen = [i for i, q in enumerate(rounded) if q > 0]
    ranked = sorted(chosen, key=lambda i: -active[i].entry_score)
    positions = []
    for rank, i in enumerate(ranked, start=1):
        cand, quantity = active[i], rounded[i]
        notional = quantity * cand.price
        capital = notional * k_dec
        daily = (None if cand.expected_apr is None
                 else cand.expected_apr * float(notional) / DAYS_PER_YEAR)
        positions.append(Position(
            venue=cand.venue, base=cand.base, pair_label=cand.pair_label,
            spot_symbol=cand.spot.symbol, perp_symbol=cand.perp.symbol,
            base_quantity=quantity, perp_contracts=quantity / cand.perp.contract_size,
            price=cand.price, notional=notional, margin=capital - notional, capital=capital,
            net_apr=cand.net_apr, expected_daily_funding=daily,
            expected_daily_net=cand.net_apr * float(notional) / DAYS_PER_YEAR, entry_rank=rank,
            lp_notional=float(lp_notional[i]),
        ))
    return positions


def _cap_usage(active, solution: LpSolution, positions, limits: Limits, venues, assets):
    import numpy as np

    k = limits.capital_per_notional
    lp_used: dict[tuple[str, str], float] = {}
    for i in np.flatnonzero(solution.notional):
        cand, x = active[i], solution.notional[i]
        for key in (("venue", cand.venue), ("asset", cand.base),
                    ("pair", f"{cand.venue} {cand.pair_label}"), ("total", "investable")):
            lp_used[key] = lp_used.get(key, 0.0) + k * float(x)
    used: dict[tuple[str, str], float] = {}
    for p in positions:
        for key in (("venue", p.venue), ("asset", p.base),
                    ("pair", f"{p.venue} {p.pair_label}"), ("total", "investable")):
            used[key] = used.get(key, 0.0) + float(p.capital)
    caps = {"total": limits.investable, "venue": limits.max_venue_share * limits.capital,
            "asset": limits.max_asset_share * limits.capital, "pair": limits.pair_cap}
    ids = {"venue": venues, "asset": assets, "total": {"investable": 0}}
    out: dict[str, list[CapUsage]] = {"total": [], "venue": [], "asset": [], "pair": []}
    for (kind, name), lp in sorted(lp_used.items()):
        if kind in ("venue", "asset", "pair") and lp <= 0 and used.get((kind, name), 0) <= 0:
            continue
        cap = caps[kind]
        shadow = solution.shadow.get((kind, ids.get(kind, {}).get(name, -1)))
        out[kind].append(CapUsage(kind, name, used.get((kind, name), 0.0), cap, lp,
                                  cap - lp <= BINDING_EPSILON * limits.investable, shadow))
    return {kind: tuple(rows) for kind, rows in out.items()}


# --------------------------------------------------------------------------- decimals


def _money(value) -> str:
    return f"{float(value):,.2f}".rstrip("0").rstrip(".") if value else "0"


def _common_multiple(a: Decimal, b: Decimal) -> Decimal:
    """Least common multiple of two positive decimal steps (0.001 and 0.01 -> 0.01)."""
    if a >= b and a % b == 0:
        return a
    if b > a and b % a == 0:
        return b
    exponent = max(-a.normalize().as_tuple().exponent, -b.normalize().as_tuple().exponent, 0)
    ia, ib = int(a.scaleb(exponent)), int(b.scaleb(exponent))
    return Decimal(math.lcm(ia, ib)).scaleb(-exponent).normalize()

