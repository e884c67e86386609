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
    # Column generation: solve on the best candidates only, then price the others with the
    # duals; a left-out candidate is needed only if its yield beats the capital's shadow
    # price under its caps. Exact (LP duality), and a few hundred columns solve far faster
    # than thousands.
    take = take[np.argsort(-apr[take], kind="stable")]
    first = min(take.size, int(4 / max(float(np.median(p_cap[take])), 1e-6)) + 64)
    columns, rest = take[:first], take[first:]
    while True:
        x, shadow, duals = _solve_columns(apr, k, venue_index, asset_index, v_cap, a_cap,
                                          p_cap, columns)
        if rest.size == 0:
            break
        y_total, y_venue, y_asset = duals
        priced = k[rest] * (y_total + y_venue[venue_index[rest]] + y_asset[asset_index[rest]])
        wanted = apr[rest] > priced + 1e-12
        if not wanted.any():
            break
        columns = np.concatenate([columns, rest[wanted]])
        rest = rest[~wanted]
    notional[columns] = x * scale
    return LpSolution(notional, float(apr @ notional), shadow)


def _solve_columns(apr, k, venue_index, asset_index, v_cap, a_cap, p_cap, columns):
    """The LP on ``columns`` only: (x, shadow prices by row, dual arrays for pricing)."""
    import numpy as np
    from scipy.optimize import linprog
    from scipy.sparse import csr_array

    upper = p_cap[columns]
    kc = k[columns]
    # A row is left out when its members' own caps already fit under it: it cannot bind.
    row_of_col: list[np.ndarray] = []
    row_meta: list[tuple[str, np.ndarray, np.ndarray]] = []  # kind, group ids, caps
    n_rows = 0
    if upper.sum() > 1.0:
        row_of_col.append(np.zeros(columns.size, dtype=np.int64))
        row_meta.append(("total", np.array([0]), np.array([1.0])))
        n_rows = 1
    col_parts, row_parts = [], []
    if row_of_col:
        col_parts.append(np.arange(columns.size))
        row_parts.append(row_of_col[0])
    for kind, index, caps in (("venue", venue_index, v_cap), ("asset", asset_index, a_cap)):
        ids = index[columns]
        member_sum = np.bincount(ids, weights=upper, minlength=caps.size)
        groups = np.flatnonzero(member_sum > caps + 1e-15)
        if groups.size == 0:
            continue
        row_number = np.full(caps.size, -1, dtype=np.int64)
        row_number[groups] = n_rows + np.arange(groups.size)
        members = np.flatnonzero(row_number[ids] >= 0)
        col_parts.append(members)
        row_parts.append(row_number[ids[members]])
        row_meta.append((kind, groups, caps[groups]))
        n_rows += groups.size
    if n_rows:
        cols = np.concatenate(col_parts)
        a_ub = csr_array((kc[cols], (np.concatenate(row_parts), cols)),
                         shape=(n_rows, columns.size))
        b_ub = np.concatenate([caps for _, _, caps in row_meta])
    else:
        a_ub = b_ub = None
    result = linprog(-apr[columns], A_ub=a_ub, b_ub=b_ub,
                     bounds=np.column_stack([np.zeros(columns.size), upper / kc]),
                     method="highs")
    if result.status != 0:  # pragma: no cover - the LP is always feasible (x = 0) and bounded
        raise RuntimeError(f"allocator LP failed: {result.message}")
    x = np.clip(result.x, 0.0, None)
    x[x < WEIGHT_EPSILON] = 0.0
    duals = -result.ineqlin.marginals if n_rows else np.zeros(0)
    y_total = 0.0
    y_venue = np.zeros(v_cap.size)
    y_asset = np.zeros(a_cap.size)
    shadow: dict[tuple[str, int], float] = {}
    start = 0
    for kind, groups, _ in row_meta:
        values = duals[start:start + groups.size]
        start += groups.size
        if kind == "total":
            y_total = float(values[0])
        else:
            (y_venue if kind == "venue" else y_asset)[groups] = values
        shadow.update({(kind, int(g)): float(v) for g, v in zip(groups, values, strict=True)})
    return x, shadow, (y_total, y_venue, y_asset)


def keep_largest(notional, net_apr, max_positions: int):
    """Indices of the positions kept under ``max_positions``: the largest expected yield
    contribution (notional x net APR) first, ties in order; all held ones if they fit."""
    import numpy as np

    held = np.flatnonzero(notional > 0)
    if held.size <= max_positions:
        return held
    contribution = notional[held] * net_apr[held]
    return np.sort(held[np.argsort(-contribution, kind="stable")][:max(max_positions, 0)])


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
