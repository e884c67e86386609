"""How much margin a top-up moves, and how much of a position a rebalance closes: pure
functions of what the venue reports of the perp (quantity, mark, liquidation distance,
maintenance margin).

Both follow from the cross-margin liquidation price of a perp of ``q`` base (its pool's
other positions held at their marks): the mark ``P`` at which the pool's equity meets its
maintenance margin, ``E + q (M - P) = m q P`` for a short, so ``P = (E + q M) / (q (1 + m))``
with ``E`` the pool's equity at the mark ``M`` and ``m`` the maintenance rate. The distance
``d = P / M - 1`` then moves

- by ``C / (q M (1 + m))`` when ``C`` of quote is added to the pool (a transfer), and
- to ``(1 + d) q / (q - x) - 1`` when ``x`` base of the perp is bought back and the same
  ``x`` of spot sold into the pool at the mark (a rebalance: the buy-back realises the
  loss it already carried, the sale adds ``x M``).

A long perp (never opened by a carry, but possible on an account) mirrors it with
``1 - m``. ``perpcarry.paper.margin`` computes the paper venue's liquidation prices by the
same equation, so these sizes restore the target exactly there, and conservatively on a
venue that also counts other collateral.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal


def top_up_amount(distance: Decimal, target: Decimal, quantity: Decimal, mark: Decimal,
                  maintenance_rate: Decimal, *, short: bool = True) -> Decimal:
    """Quote to add to the pool so that the liquidation distance rises from ``distance``
    to ``target`` (zero when it is there already)."""
    if distance >= target:
        return Decimal(0)
    factor = 1 + maintenance_rate if short else 1 - maintenance_rate
    return (target - distance) * quantity * mark * factor


def distance_after_top_up(distance: Decimal, amount: Decimal, quantity: Decimal,
                          mark: Decimal, maintenance_rate: Decimal, *, short: bool = True
                          ) -> Decimal:
    """The distance once ``amount`` of quote is in the pool (the inverse of
    :func:`top_up_amount`)."""
    factor = 1 + maintenance_rate if short else 1 - maintenance_rate
    return distance + amount / (quantity * mark * factor)


def rebalance_quantity(distance: Decimal, target: Decimal, quantity: Decimal,
                       step: Decimal) -> Decimal:
    """Base to take off both legs so that the distance rises to ``target``, rounded up to
    ``step`` and never more than ``quantity`` (zero when it is there already).

    From ``(1 + d) q / (q - x) = 1 + t``: ``x = q (t - d) / (1 + t)``."""
    if distance >= target:
        return Decimal(0)
    needed = quantity * (target - distance) / (1 + target)
    rounded = (needed / step).to_integral_value(ROUND_CEILING) * step
    return min(rounded, quantity)


def maintenance_rate(maintenance_margin: Decimal | None, quantity: Decimal,
                     mark: Decimal) -> Decimal | None:
    """The maintenance rate the venue applies, from the margin it reports; None when it
    reports none."""
    if maintenance_margin is None or not quantity or not mark:
        return None
    return maintenance_margin / (quantity * mark)
