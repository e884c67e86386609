"""Turning ccxt's unified market dicts into perpcarry ``Market`` objects."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from perpcarry.domain.types import Market, MarketKind

# Carry needs spot quoted in the perp's settle currency; these are the linear settles.
CARRY_QUOTES = frozenset({"USDT", "USDC"})


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def market_from_ccxt(venue: str, m: dict[str, Any]) -> Market | None:
    """Spot markets quoted in USDT/USDC and linear USDT/USDC perpetuals; None for the rest.

    ccxt reports precision as step sizes for all three first-party venues (TICK_SIZE mode).
    """
    if m.get("active") is False:
        return None
    if m.get("spot"):
        kind = MarketKind.SPOT
        if m.get("quote") not in CARRY_QUOTES:
            return None
    elif m.get("swap") and m.get("linear") and m.get("settle") in CARRY_QUOTES:
        kind = MarketKind.PERP
    else:
        return None
    precision = m.get("precision") or {}
    limits = m.get("limits") or {}
    step = _dec(precision.get("amount"))
    tick = _dec(precision.get("price"))
    if step is None or tick is None:
        return None
    min_quantity = _dec((limits.get("amount") or {}).get("min")) or step
    # ccxt's ``limits.market`` is the market-order limit where a venue publishes one
    # (Binance MARKET_LOT_SIZE); a zero maximum means none.
    max_quantity = _dec((limits.get("amount") or {}).get("max")) or None
    max_market_quantity = _dec((limits.get("market") or {}).get("max")) or None
    return Market(
        venue=venue,
        symbol=m["symbol"],
        venue_symbol=m["id"],
        base=m["base"],
        quote=m["quote"],
        settle=m.get("settle") if kind is MarketKind.PERP else None,
        kind=kind,
        contract_size=_dec(m.get("contractSize")) or Decimal(1),
        quantity_step=step,
        min_quantity=min_quantity,
        min_notional=_dec((limits.get("cost") or {}).get("min")),
        price_tick=tick,
        max_quantity=max_quantity,
        max_market_quantity=max_market_quantity,
    )
