"""The allocator's linear programme, on plain arrays: fast enough to run at every rebalance.

Maximise ``sum(net_apr * notional)`` over hedged notionals subject to a budget and per-venue,
per-asset and per-candidate caps, all measured in capital used (``k * notional``, where ``k``
is the capital one unit of hedged notional ties up). Solved by HiGHS through scipy; rows
that cannot bind (their members' own caps already fit under them) are left out, which keeps
the programme small when the caps are loose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# LP weights below this share of the budget are zero (HiGHS' feasibility tolerance is 1e-7).
WEIGHT_EPSILON = 1e-9


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
    return solve_detailed(net_apr, capital_per_notional, venue_index, asset_index, budget=budget,
                  venue_cap=venue_cap, asset_cap=asset_cap, pair_cap=pair_cap).notional


def solve_detailed(net_apr, capital_per_notional, venue_index, asset_index, *, budget, venue_cap,
                   asset_cap, pair_cap, n_venues: int | None = None,
                   n_assets: int | None = None) -> LpSolution:
    """:func:`solve_lp` with the objective and the dual of every row it kept."""
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
