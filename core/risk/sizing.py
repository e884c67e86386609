"""How much margin a top-up moves, and how much of a position a rebalance closes: pure
functions of what the venue reports of the perp (quantity, mark, liquidation distance,
maintenance margin) or of its margin pool (equity, notional).

**The margin rule** (the backtest's and the run loop's, one formula: :func:`margin_share`):
a short of notional ``N`` at leverage ``L`` is sized with ``(1 + margin_buffer) N / L`` of
margin (the allocator's ``capital_per_notional``); when its margin falls below
``margin_floor x N / L`` it is topped up back to ``(1 + margin_buffer) N / L``. The backtest
applies it to each short (:mod:`perpcarry.backtest.margin`, floats over arrays), the margin
monitor to each margin pool (a venue's perps in one settle currency, ``N`` their notional at
the mark): :func:`margin_top_up` says how much, :func:`rebalance_for_margin` how much of
both legs to sell when no free quote can be moved.

**The liquidation-distance rule** (a second trigger of the monitor) follows from the
cross-margin liquidation price of a perp of ``q`` base (its pool's other positions held at
their marks): the mark ``P`` at which the pool's equity meets its
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
from typing import TypeVar

# A float, a numpy array of them (the backtest) or a Decimal (the monitor).
Amount = TypeVar("Amount")


def margin_share(notional: Amount, multiple, leverage) -> Amount:
    """Margin worth ``multiple`` times the initial margin of ``notional`` at ``leverage``:
    the target with ``multiple = 1 + margin_buffer``, the top-up trigger with
    ``multiple = margin_floor``."""
    return multiple * notional / leverage


def margin_top_up(equity: Decimal, notional: Decimal, leverage: Decimal, floor: Decimal,
                  target: Decimal) -> Decimal:
    """Quote that brings a pool's margin ``equity`` back to ``target`` times the initial
    margin of its ``notional``, once it is below ``floor`` times it (zero above the
    floor)."""
    if equity >= margin_share(notional, floor, leverage):
        return Decimal(0)
    return margin_share(notional, target, leverage) - equity


def rebalance_for_margin(need: Decimal, quantity: Decimal, mark: Decimal, leverage: Decimal,
                         target: Decimal, step: Decimal) -> Decimal:
    """Base to take off both legs of a perp of ``quantity`` so that its pool gains ``need``
    of margin, rounded up to ``step`` and never more than ``quantity``.

    Selling ``x`` spot (at about the mark) adds ``x M`` to the pool and buying back ``x``
    perp (its loss already counted in the equity) lowers the target by
    ``target x M / L``: ``x = need / (M (1 + target / L))``. Fees make the gain a little
    smaller; rounding up to the step covers it in practice, and the next check tops up
    what is still missing."""
    if need <= 0:
        return Decimal(0)
    needed = need / (mark * (1 + target / leverage))
    rounded = (needed / step).to_integral_value(ROUND_CEILING) * step
    return min(rounded, quantity)


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
