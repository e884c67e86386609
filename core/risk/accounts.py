"""Reading a venue's margin as the monitor sees it: each perp position with its journal
positions, the margin pools (a venue's perps settled in one currency, in the wallet that
margins them), and what a balance says of free quote and margin use."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from perpcarry.domain.types import Market
from perpcarry.execution.journal import Position
from perpcarry.risk.report import PerpRisk, PoolRisk
from perpcarry.risk.sizing import maintenance_rate
from perpcarry.venues.orders import Balance, PerpPosition, Side, Wallet

if TYPE_CHECKING:
    from perpcarry.execution.service import TradingSession


def perp_risk(venue_id: str, position: PerpPosition, settle: str,
          held: tuple[Position, ...]) -> PerpRisk:
    mark = position.mark_price
    rate = None if mark is None else maintenance_rate(position.maintenance_margin,
                                                      position.quantity, mark)
    return PerpRisk(venue_id, position.symbol, settle, position.side is Side.SELL,
                    position.quantity, mark, position.margin_ratio, position.liquidation_price,
                    position.liquidation_distance, rate, held)


async def markets_of(session: TradingSession, venue_id: str) -> dict[str, Market]:
    """The venue's markets by symbol (the market-data client caches them)."""
    return {m.symbol: m for m in await session.venues[venue_id].market_data.load_markets()}


def margin_wallet(session: TradingSession, venue_id: str) -> Wallet:
    capabilities = session.config.registry.venues[venue_id].order_capabilities
    separate = capabilities is not None and capabilities.separate_wallets
    return Wallet.FUTURES if separate else Wallet.UNIFIED


def pools_of(session: TradingSession, venue_id: str, perps: list[PerpRisk],
           balances: dict[Wallet, dict[str, Balance]]) -> list[PoolRisk]:
    wallet = margin_wallet(session, venue_id)
    pools = []
    for settle in sorted({p.settle for p in perps}):
        balance = balances.get(wallet, {}).get(settle)
        if balance is None:
            continue
        members = [p for p in perps if p.settle == settle]
        notional = (None if any(p.mark is None for p in members)
                    else sum((p.quantity * p.mark for p in members), Decimal(0)))
        pools.append(PoolRisk(venue_id, settle, wallet, balance.total, balance.used,
                              notional))
    return pools


def free_of(balances: dict[Wallet, dict[str, Balance]], wallet: Wallet, currency: str
          ) -> Decimal:
    balance = balances.get(wallet, {}).get(currency)
    return balance.free if balance is not None else Decimal(0)


def utilisation_of(balances: dict[Wallet, dict[str, Balance]], wallet: Wallet, currency: str
                 ) -> Decimal | None:
    balance = balances.get(wallet, {}).get(currency)
    if balance is None or balance.total <= 0:
        return None
    return balance.used / balance.total


def pct(value: Decimal) -> str:
    return f"{value * 100:.1f} %"
