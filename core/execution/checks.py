"""The built-in pre-trade checks, a plugin (entry point ``checks``) on the
``pre_trade_check`` hook like any third party's: the balance in the wallet the order draws
on, the account set up for the perp, a notional cap per order, and the kill switch and the
circuit breaker (both journal flags, :mod:`perpcarry.risk.state`), which stop opening and
never closing."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from perpcarry.domain.types import MarketKind
from perpcarry.plugins.hookspecs import hookimpl
from perpcarry.venues.orders import (
    Balance,
    OrderCapabilities,
    OrderRequest,
    Side,
    Wallet,
)


@dataclass(frozen=True)
class TradeContext:
    """What a pre-trade check may look at. ``balances`` were read when the intent began;
    the venue stays the judge of what it accepts."""

    venue: str
    action: str  # open | close
    reference_price: Decimal
    balances: dict[Wallet, dict[str, Balance]] | None
    capabilities: OrderCapabilities | None
    leverage: Decimal
    account_ready: bool  # position mode, margin mode and leverage set for the perp
    max_notional: Decimal | None
    killed: str | None  # the kill switch's reason when engaged
    breaker: str | None = None  # the circuit breaker's reason when tripped


def _free(context: TradeContext, wallets: tuple[Wallet, ...], currency: str) -> Decimal:
    return sum((context.balances.get(w, {}).get(currency, Balance(currency, *(Decimal(0),) * 3))
                .free for w in wallets), Decimal(0))


@hookimpl
def pre_trade_check(order: OrderRequest, context: TradeContext) -> str | None:
    opening = context.action == "open"
    notional = order.quantity * context.reference_price
    if opening and context.killed:
        return f"kill switch engaged ({context.killed}): no new positions"
    if opening and context.breaker:
        return f"circuit breaker tripped ({context.breaker}): no new positions"
    if opening and context.max_notional is not None and notional > context.max_notional:
        return (f"notional {notional:.2f} above the cap {context.max_notional} per order "
                "([execution] max_order_notional)")
    perp = order.market.kind is MarketKind.PERP
    if perp and opening and not context.account_ready:
        return "account not set up for the perp (one-way mode, margin mode, leverage)"
    if not opening or context.balances is None or context.capabilities is None:
        return None
    quote = order.market.settle if perp else order.market.quote
    separate = context.capabilities.separate_wallets
    if perp and order.side is Side.SELL:
        wallets = (Wallet.FUTURES,) if separate else (Wallet.UNIFIED,)
        need = notional / context.leverage
    elif not perp and order.side is Side.BUY:
        wallets = (Wallet.SPOT,) if separate else (Wallet.UNIFIED,)
        need = notional
    else:
        return None
    free = _free(context, wallets, quote)
    if free < need:
        where = "/".join(w.value for w in wallets)
        return f"{free:.2f} {quote} free in the {where} wallet, {need:.2f} needed"
    return None
