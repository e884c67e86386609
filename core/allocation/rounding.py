"""From the LP's continuous notionals to base quantities both legs can trade.

Every position is rounded DOWN to its common lot (a multiple of the spot step and of the
perp step x contract size), so both legs carry the same base quantity and no cap can be
exceeded by rounding. The few positions the LP's tolerance (1e-7 of the budget) leaves a
hair over a cap lose a lot; then the capital rounding freed is spent again, one lot at a
time, on the best positions whose caps still have room. Exact in ``Decimal``.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from perpcarry.allocation.allocator import AllocationCandidate, Limits


def to_decimal(value: float) -> Decimal:
    """The float's shortest repr as a Decimal (0.1 -> Decimal("0.1"), not 0.1000000000000000055)."""
    return Decimal(repr(float(value)))


def exact_capital_per_notional(limits: Limits) -> Decimal:
    """Capital one unit of hedged notional uses: the spot leg, the perp margin and its buffer."""
    margin = (Decimal(1) + to_decimal(limits.margin_buffer)) / to_decimal(limits.leverage)
    return Decimal(1) + margin


def _groups(cand: AllocationCandidate) -> tuple[tuple[str, str], ...]:
    return (("total", ""), ("venue", cand.venue), ("asset", cand.base),
            ("pair", f"{cand.venue}\x00{cand.pair_label}"))


def round_positions(candidates: Sequence[AllocationCandidate], notional: np.ndarray,
                    limits: Limits) -> tuple[list[Decimal], list[int]]:
    """Base quantity per candidate, and the indices whose LP share rounds below a minimum.

    Quantities of failed candidates are 0; the caller solves again without them.
    """
    k = exact_capital_per_notional(limits)
    caps = {"total": to_decimal(limits.investable),
            "venue": to_decimal(limits.max_venue_share * limits.capital),
            "asset": to_decimal(limits.max_asset_share * limits.capital),
            "pair": to_decimal(limits.pair_cap)}
    import numpy as np

    quantities = [Decimal(0)] * len(candidates)
    failed: list[int] = []
    lot_capital: dict[int, Decimal] = {}
    lots: dict[int, Decimal] = {}
    minimums: dict[int, Decimal] = {}
    for i in np.flatnonzero(notional > 0).tolist():
        cand = candidates[i]
        lot = lots[i] = cand.lot
        minimums[i] = cand.min_base_quantity
        quantity = (Decimal(float(notional[i])) / cand.price / lot).to_integral_value(
            ROUND_FLOOR) * lot
        if quantity < minimums[i]:
            failed.append(i)
            continue
        quantities[i] = quantity
        lot_capital[i] = lot * cand.price * k
    if failed:
        return quantities, failed

    used: dict[tuple[str, str], Decimal] = {}
    for i, quantity in enumerate(quantities):
        if quantity:
            for group in _groups(candidates[i]):
                used[group] = used.get(group, Decimal(0)) + quantity * candidates[i].price * k

    # Repair: take lots off the worst positions of any group the LP left over its cap.
    by_apr = sorted(lot_capital, key=lambda i: candidates[i].net_apr)
    for group, total in list(used.items()):
        excess = total - caps[group[0]]
        for i in by_apr:
            if excess <= 0:
                break
            if group not in _groups(candidates[i]) or not quantities[i]:
                continue
            cand = candidates[i]
            n_lots = -(-excess // lot_capital[i])
            new = quantities[i] - n_lots * lots[i]
            if new < minimums[i]:
                new = Decimal(0)
            freed = (quantities[i] - new) * cand.price * k
            quantities[i] = new
            excess -= freed
            for g in _groups(cand):
                used[g] -= freed

    # Top up: spend what rounding left, best net APR first, within every cap.
    for i in reversed(by_apr):
        if not quantities[i]:
            continue
        room = min(caps[g[0]] - used.get(g, Decimal(0)) for g in _groups(candidates[i]))
        n_lots = room // lot_capital[i]
        if n_lots > 0:
            quantities[i] += n_lots * lots[i]
            for g in _groups(candidates[i]):
                used[g] = used.get(g, Decimal(0)) + n_lots * lot_capital[i]
    return quantities, failed
