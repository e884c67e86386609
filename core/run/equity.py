"""The run loop's equity: what each venue's account holds, valued at the cycle's prices."""

from __future__ import annotations

import math
from collections import defaultdict

from perpcarry.ccxt.markets import CARRY_QUOTES
from perpcarry.domain.errors import VenueError
from perpcarry.execution.service import TradingSession
from perpcarry.run.market import MarketSnapshot


async def account_equity(session: TradingSession, snapshot: MarketSnapshot
                         ) -> tuple[dict[str, float] | None, list[str]]:
    """Each venue account's equity in quote: every wallet's settle-currency balance (a
    margin wallet's includes the perps' unrealised PnL) plus base assets at the pair's
    spot price. An asset without a price is left out and named; a venue whose balances
    cannot be read leaves the equity unknown (no trading on a guess)."""
    prices: dict[tuple[str, str], float] = {}
    for c, spot, mark in zip(snapshot.candidates, snapshot.pairs.spot,
                             snapshot.pairs.mark, strict=True):
        price = spot if math.isfinite(spot) else mark
        if math.isfinite(price):
            prices[c.key] = float(price)
    equity: dict[str, float] = {}
    unpriced: dict[str, set[str]] = defaultdict(set)
    for venue_id, handle in session.venues.items():
        try:
            balances = await handle.orders.fetch_balances()
        except VenueError as err:
            return None, [f"{venue_id}: balances unavailable ({err})"]
        total = 0.0
        for rows in balances.values():
            for currency, balance in rows.items():
                if not balance.total:
                    continue
                if currency in CARRY_QUOTES:
                    total += float(balance.total)
                elif (venue_id, currency) in prices:
                    total += float(balance.total) * prices[(venue_id, currency)]
                else:
                    unpriced[venue_id].add(currency)
        equity[venue_id] = total
    notes = [f"{venue}: {', '.join(sorted(assets))} left out of the equity (no price)"
             for venue, assets in unpriced.items()]
    return equity, notes
