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

The per-venue and per-asset caps are not nested, so a greedy fill by net APR is not optimal
in general (see :func:`greedy_baseline`); the continuous problem is solved exactly by HiGHS,
then every position is rounded down to its common lot and leftover capital is spent again,
lot by lot, where the caps still allow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any

from perpcarry.errors import UsageError
from perpcarry.types import Market, Skipped

if TYPE_CHECKING:
    import numpy as np

    from perpcarry.scan import CarryYield
    from perpcarry.settings import AllocatorConfig

# LP weights below this share of the budget are zero (HiGHS' feasibility tolerance is 1e-7).
WEIGHT_EPSILON = 1e-9
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
        """``config`` with ``capital`` and any non-None override; raises UsageError if invalid."""
        values = config.model_dump()
        values.update({k: v for k, v in overrides.items() if v is not None})
        if capital is not None:
            values["capital"] = capital
        if values.get("capital") is None:
            raise UsageError("capital is not set: pass --capital or set [allocator].capital")
        limits = cls(**values)
        limits.validate()
        return limits

    def validate(self) -> None:
        def bad(name: str, rule: str) -> UsageError:
            return UsageError(f"{name} = {getattr(self, name)!r} is invalid: {rule}")

        if not (math.isfinite(self.capital) and self.capital > 0):
            raise bad("capital", "capital must be a positive amount")
        if not 1 <= self.leverage <= 5:
            raise bad("leverage", "leverage must be between 1 and 5")
        if not 0 <= self.margin_buffer <= 5:
            raise bad("margin_buffer", "the buffer is a share of the perp margin, 0 to 5")
        if not 0 <= self.cash_reserve < 1:
            raise bad("cash_reserve", "a share of capital, at least 0 and below 1")
        for name in ("max_venue_share", "max_asset_share", "max_pair_share"):
            if not 0 < getattr(self, name) <= 1:
                raise bad(name, "a share of capital must be above 0 and at most 1 (0.2 = 20 %)")
        if not math.isfinite(self.min_net_apr):
            raise bad("min_net_apr", "must be a number (0.05 = 5 % a year)")
        if self.min_positions < 0:
            raise bad("min_positions", "must be 0 or more")
        if self.max_positions < 1:
            raise bad("max_positions", "must be 1 or more")
        if self.min_positions > self.max_positions:
            raise UsageError(f"min_positions = {self.min_positions} exceeds "
                             f"max_positions = {self.max_positions}")

    @property
    def capital_per_notional(self) -> float:
        return 1.0 + (1.0 + self.margin_buffer) / self.leverage

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
    from perpcarry.yields import net_apr as amortised_apr

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


# --------------------------------------------------------------------------- the LP


@dataclass(frozen=True)
class LpSolution:
    notional: np.ndarray       # per candidate
    objective: float           # sum of net_apr x notional
    shadow: dict[tuple[str, int], float]  # (total|venue|asset, index) -> dual of that row


def solve_lp(net_apr, capital_per_notional, venue_index, asset_index, *, budget=1.0,
             venue_cap=1.0, asset_cap=1.0, pair_cap=1.0) -> np.ndarray:
    """Hedged notional per candidate maximising ``sum(net_apr * notional)``.

    Subject to ``sum(k * notional) <= budget`` and, in capital used ``k * notional``, the
    per-venue (``venue_index`` -> ``venue_cap``), per-asset (``asset_index`` -> ``asset_cap``)
    and per-candidate (``pair_cap``) caps. ``capital_per_notional`` (k) and the caps are
    scalars or arrays (per candidate for k and ``pair_cap``; per venue / per asset id for the
    others, ids being 0..n-1 integers). All money in one unit: with ``budget=1`` caps are
    shares and the result is notional per unit of capital. Negative-yield candidates get 0.
    """
    return _solve(net_apr, capital_per_notional, venue_index, asset_index, budget=budget,
                  venue_cap=venue_cap, asset_cap=asset_cap, pair_cap=pair_cap).notional


def _solve(net_apr, capital_per_notional, venue_index, asset_index, *, budget, venue_cap,
           asset_cap, pair_cap, n_venues: int | None = None,
           n_assets: int | None = None) -> LpSolution:
    import numpy as np
    from scipy.optimize import linprog
    from scipy.sparse import csr_array

    apr = np.asarray(net_apr, dtype=float)
    n = apr.size
    venue_index = np.asarray(venue_index, dtype=np.int64)
    asset_index = np.asarray(asset_index, dtype=np.int64)
    k = np.broadcast_to(np.asarray(capital_per_notional, dtype=float), (n,))
    # Work in shares of the budget: HiGHS' tolerances are absolute.
    scale = float(budget)
    if n_venues is None:
        n_venues = int(venue_index.max()) + 1 if n else 0
    if n_assets is None:
        n_assets = int(asset_index.max()) + 1 if n else 0
    v_cap = np.broadcast_to(np.asarray(venue_cap, dtype=float), (n_venues,)) / scale
    a_cap = np.broadcast_to(np.asarray(asset_cap, dtype=float), (n_assets,)) / scale
    p_cap = np.minimum(np.broadcast_to(np.asarray(pair_cap, dtype=float), (n,)) / scale, 1.0)
    p_cap = np.minimum(p_cap, np.minimum(v_cap[venue_index], a_cap[asset_index]))
    take = np.flatnonzero((apr > 0) & (p_cap > 0))
    notional = np.zeros(n)
    if take.size == 0:
        return LpSolution(notional, 0.0, {})
    upper = p_cap[take]
    # A row is redundant when its members' own caps already fit under it.
    rows: list[tuple[str, int, np.ndarray, float]] = []
    if upper.sum() > 1.0:
        rows.append(("total", 0, np.arange(take.size), 1.0))
    for kind, index, caps in (("venue", venue_index, v_cap), ("asset", asset_index, a_cap)):
        ids = index[take]
        member_sum = np.bincount(ids, weights=upper, minlength=caps.size)
        for group in np.flatnonzero(member_sum > caps + 1e-15):
            rows.append((kind, int(group), np.flatnonzero(ids == group), float(caps[group])))
    kt = k[take]
    if rows:
        row_ids = np.concatenate([np.full(m.size, r) for r, (_, _, m, _) in enumerate(rows)])
        cols = np.concatenate([m for _, _, m, _ in rows])
        a_ub = csr_array((kt[cols], (row_ids, cols)), shape=(len(rows), take.size))
        b_ub = np.array([cap for _, _, _, cap in rows])
    else:
        a_ub = b_ub = None
    result = linprog(-apr[take], A_ub=a_ub, b_ub=b_ub,
                     bounds=np.column_stack([np.zeros(take.size), upper / kt]), method="highs")
    if result.status != 0:  # pragma: no cover - the LP is always feasible (x = 0) and bounded
        raise RuntimeError(f"allocator LP failed: {result.message}")
    x = np.clip(result.x, 0.0, None)
    x[x < WEIGHT_EPSILON] = 0.0
    notional[take] = x * scale
    shadow = {}
    if rows:
        for (kind, group, _, _), dual in zip(rows, result.ineqlin.marginals, strict=True):
            shadow[(kind, group)] = -float(dual)
    return LpSolution(notional, float(apr @ notional), shadow)


def greedy_baseline(net_apr, capital_per_notional, venue_index, asset_index, *, budget=1.0,
                    venue_cap=1.0, asset_cap=1.0, pair_cap=1.0) -> np.ndarray:
    """Fill the best net APR first until a cap binds: what the LP is measured against."""
    import numpy as np

    apr = np.asarray(net_apr, dtype=float)
    n = apr.size
    k = np.broadcast_to(np.asarray(capital_per_notional, dtype=float), (n,))
    venue_index = np.asarray(venue_index)
    asset_index = np.asarray(asset_index)
    v_room = np.array(np.broadcast_to(venue_cap, (int(venue_index.max()) + 1,)), dtype=float)
    a_room = np.array(np.broadcast_to(asset_cap, (int(asset_index.max()) + 1,)), dtype=float)
    p_cap = np.broadcast_to(np.asarray(pair_cap, dtype=float), (n,))
    room = float(budget)
    notional = np.zeros(n)
    for i in np.argsort(-apr, kind="stable"):
        if apr[i] <= 0 or room <= 0:
            break
        v, a = venue_index[i], asset_index[i]
        used = max(0.0, min(room, v_room[v], a_room[a], p_cap[i]))
        notional[i] = used / k[i]
        room -= used
        v_room[v] -= used
        a_room[a] -= used
    return notional


# --------------------------------------------------------------------------- allocate


def allocate(candidates: Sequence[AllocationCandidate], limits: Limits) -> Allocation:
    """The plan: LP optimum over ``candidates`` under ``limits``, rounded to lot sizes."""
    import numpy as np

    from perpcarry.allocator_rounding import round_positions

    limits.validate()
    k = limits.capital_per_notional
    excluded: list[Skipped] = []
    eligible: list[AllocationCandidate] = []
    best_below: AllocationCandidate | None = None
    for cand in candidates:
        if cand.net_apr < limits.min_net_apr or cand.net_apr <= 0:
            excluded.append(Skipped(cand.venue, cand.pair_label,
                                    f"net APR {cand.net_apr:.2%} below the minimum "
                                    f"{max(limits.min_net_apr, 0.0):.2%}"))
            if best_below is None or cand.net_apr > best_below.net_apr:
                best_below = cand
            continue
        why = _too_small_for_caps(cand, limits)
        if why:
            excluded.append(Skipped(cand.venue, cand.pair_label, why))
            continue
        eligible.append(cand)

    venues = sorted({c.venue for c in candidates})
    assets = sorted({c.base for c in candidates})
    active = list(eligible)
    notes: list[str] = []
    reason: str | None = None
    while True:
        venue_ids = np.array([venues.index(c.venue) for c in active], dtype=np.int64)
        asset_ids = np.array([assets.index(c.base) for c in active], dtype=np.int64)
        apr = np.array([c.net_apr for c in active])
        solve = _solver(apr, k, venue_ids, asset_ids, limits, len(venues), len(assets))
        solution = solve(np.arange(len(active)))
        held = np.flatnonzero(solution.notional > 0)
        if held.size > limits.max_positions:
            keep = held[np.argsort(-solution.notional[held], kind="stable")]
            keep = np.sort(keep[: limits.max_positions])
            notes.append(f"the LP optimum holds {held.size} positions; kept the "
                         f"{limits.max_positions} largest (max_positions) and solved again")
            solution = solve(keep)
        rounded, failed = round_positions(active, solution.notional, limits)
        if not failed:
            break
        for i in failed:
            cand = active[i]
            excluded.append(Skipped(cand.venue, cand.pair_label,
                                    f"its LP share ({solution.notional[i]:.2f} {cand.quote} "
                                    "per leg) rounds below the minimum order; solved again "
                                    "without it"))
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
        part = _solve(apr[subset], k, venue_ids[subset], asset_ids[subset],
                      budget=limits.investable, venue_cap=limits.max_venue_share * limits.capital,
                      asset_cap=limits.max_asset_share * limits.capital,
                      pair_cap=limits.pair_cap, n_venues=n_venues, n_assets=n_assets)
        notional[subset] = part.notional
        return LpSolution(notional, part.objective, part.shadow)

    return solve


def _too_small_for_caps(cand: AllocationCandidate, limits: Limits) -> str | None:
    """Why the minimum order alone breaks a cap, naming the tightest cap; None if it fits."""
    min_notional = cand.min_base_quantity * cand.price
    needed = float(min_notional) * limits.capital_per_notional
    caps = [(limits.investable, "investable capital (after the cash reserve)"),
            (limits.max_venue_share * limits.capital, "per-venue cap"),
            (limits.max_asset_share * limits.capital, "per-asset cap"),
            (limits.pair_cap, "per-pair cap")]
    cap, name = min(caps, key=lambda c: c[0])
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
    k_dec = Decimal(1) + (Decimal(1) + _dec(limits.margin_buffer)) / _dec(limits.leverage)
    chosen = [i for i, q in enumerate(rounded) if q > 0]
    ranked = sorted(chosen, key=lambda i: -active[i].entry_score)
    positions = []
    for rank, i in enumerate(ranked, start=1):
        cand, quantity = active[i], rounded[i]
        notional = quantity * cand.price
        capital = notional * k_dec
        daily = None if cand.expected_apr is None else cand.expected_apr * float(notional) / 365
        positions.append(Position(
            venue=cand.venue, base=cand.base, pair_label=cand.pair_label,
            spot_symbol=cand.spot.symbol, perp_symbol=cand.perp.symbol,
            base_quantity=quantity, perp_contracts=quantity / cand.perp.contract_size,
            price=cand.price, notional=notional, margin=capital - notional, capital=capital,
            net_apr=cand.net_apr, expected_daily_funding=daily,
            expected_daily_net=cand.net_apr * float(notional) / 365, entry_rank=rank,
            lp_notional=float(lp_notional[i]),
        ))
    return positions


def _cap_usage(active, solution: LpSolution, positions, limits: Limits, venues, assets):
    k = limits.capital_per_notional
    lp_used: dict[tuple[str, str], float] = {}
    for cand, x in zip(active, solution.notional, strict=True):
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
    ids = {"venue": {v: i for i, v in enumerate(venues)},
           "asset": {a: i for i, a in enumerate(assets)}, "total": {"investable": 0}}
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


def _dec(value: float) -> Decimal:
    return Decimal(repr(value))


def _money(value) -> str:
    return f"{float(value):,.2f}".rstrip("0").rstrip(".") if value else "0"


def _common_multiple(a: Decimal, b: Decimal) -> Decimal:
    """Least common multiple of two positive decimal steps (0.001 and 0.01 -> 0.01)."""
    exponent = max(-a.normalize().as_tuple().exponent, -b.normalize().as_tuple().exponent, 0)
    ia, ib = int(a.scaleb(exponent)), int(b.scaleb(exponent))
    return Decimal(math.lcm(ia, ib)).scaleb(-exponent).normalize()


def floor_to_lot(quantity: Decimal, lot: Decimal) -> Decimal:
    return (quantity / lot).to_integral_value(ROUND_FLOOR) * lot
