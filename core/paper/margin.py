"""Cross-margin arithmetic of the paper venue: pure functions of positions and cash.

The margin of a venue's perps is one cross pool per settle currency in the futures wallet
(separate wallets) or the unified one: the wallet's cash in that currency plus the
unrealised PnL of every position settled in it. Other assets a unified account holds (the
spot leg's coins) are not counted as collateral, so liquidation prices here are more
conservative than the venue's, never less.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Exposure:
    """One open perp position, priced."""

    symbol: str
    quantity: Decimal  # signed base units: negative is short
    entry_price: Decimal
    mark_price: Decimal | None
    leverage: Decimal

    @property
    def unrealised_pnl(self) -> Decimal | None:
        if self.mark_price is None:
            return None
        return self.quantity * (self.mark_price - self.entry_price)

    @property
    def initial_margin(self) -> Decimal:
        """Margin held for the position: its entry notional over the leverage."""
        return abs(self.quantity) * self.entry_price / self.leverage

    def maintenance_margin(self, rate: Decimal) -> Decimal | None:
        if self.mark_price is None:
            return None
        return abs(self.quantity) * self.mark_price * rate


def liquidation_price(position: Exposure, others: list[Exposure], cash: Decimal,
                      rate: Decimal) -> Decimal | None:
    """The mark price of ``position`` at which the pool's equity falls to its maintenance
    margin, the other positions held at their marks. Zero for a long the pool can carry down
    to a price of zero (as the venues report it); None when a mark is unknown, or for a
    short the pool cannot carry at any price (it is liquidatable now).

    Solves ``cash + others + q (P - E) = m |q| P`` for ``P``, where ``others`` is the other
    positions' unrealised PnL less their maintenance margin."""
    rest = ZERO
    for other in others:
        pnl, maintenance = other.unrealised_pnl, other.maintenance_margin(rate)
        if pnl is None or maintenance is None:
            return None
        rest += pnl - maintenance
    q, entry = position.quantity, position.entry_price
    if q > 0:
        price = (q * entry - cash - rest) / (q * (1 - rate))
    else:
        price = (cash + rest - q * entry) / (-q * (1 + rate))
        if price <= 0:
            return None
    return max(price, ZERO)


def margin_ratio(positions: list[Exposure], cash: Decimal, rate: Decimal) -> Decimal | None:
    """Maintenance margin over margin balance (cash plus unrealised PnL): liquidation at 1.
    None when a mark is unknown or the balance is not positive."""
    maintenance = balance = ZERO
    for p in positions:
        pnl, margin = p.unrealised_pnl, p.maintenance_margin(rate)
        if pnl is None or margin is None:
            return None
        maintenance += margin
        balance += pnl
    balance += cash
    return maintenance / balance if balance > 0 else None
