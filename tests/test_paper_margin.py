"""Cross-margin arithmetic of the paper venue: the liquidation price is where the pool's
equity meets its maintenance margin, for any position and cash."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from perpcarry.paper.margin import Exposure, liquidation_price, margin_ratio

quantities = st.decimals("0.001", "100", places=3)
prices = st.decimals("1", "200000", places=2)
cash = st.decimals("0", "1000000", places=2)
rates = st.decimals("0.001", "0.1", places=4)


def _equity_less_maintenance(position: Exposure, others: list[Exposure], money: Decimal,
                             rate: Decimal, price: Decimal) -> Decimal:
    at = Exposure(position.symbol, position.quantity, position.entry_price, price,
                  position.leverage)
    rest = sum((o.unrealised_pnl - o.maintenance_margin(rate) for o in others), Decimal(0))
    return money + rest + at.unrealised_pnl - at.maintenance_margin(rate)


@given(quantities, st.booleans(), prices, prices, cash, rates, quantities, prices, prices)
def test_liquidation_is_where_equity_meets_maintenance(quantity, short, entry, mark, money,
                                                       rate, other_q, other_entry,
                                                       other_mark):
    position = Exposure("A", -quantity if short else quantity, entry, mark, Decimal(1))
    others = [Exposure("B", other_q, other_entry, other_mark, Decimal(1))]
    price = liquidation_price(position, others, money, rate)
    if price is None:  # a short the pool cannot carry: below maintenance at any price
        assert short and _equity_less_maintenance(position, others, money, rate, mark) < 0
        return
    assert price >= 0
    gap = _equity_less_maintenance(position, others, money, rate, price)
    if price > 0:
        assert abs(gap) < Decimal("1e-12") * max(Decimal(1), money, quantity * entry)
    # A move away from liquidation leaves the pool above its maintenance margin.
    safer = price * Decimal("0.99") if short else price * Decimal("1.01")
    if short or price > 0:
        assert _equity_less_maintenance(position, others, money, rate, safer) > -Decimal(
            "1e-12") * max(Decimal(1), money, quantity * entry)


def test_unknown_mark_gives_no_liquidation_price_or_ratio():
    known = Exposure("A", Decimal(-1), Decimal(100), Decimal(100), Decimal(1))
    unknown = Exposure("B", Decimal(1), Decimal(100), None, Decimal(1))
    assert liquidation_price(known, [unknown], Decimal(1000), Decimal("0.005")) is None
    assert margin_ratio([known, unknown], Decimal(1000), Decimal("0.005")) is None
    assert margin_ratio([known], Decimal(1000), Decimal("0.005")) == Decimal("0.5") / 1000
