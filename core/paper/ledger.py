"""The paper venue's bookkeeping: the wallet model, fees, funds checks, and what a fill does
to balances and positions. Called inside a store transaction, so a fill's checks and writes
see one state.

Wallets follow the venue's declared :class:`OrderCapabilities`: with ``separate_wallets``
(Binance) spot trades settle in the spot wallet and perp margin, fees, PnL and funding live
in the futures wallet, so margin for a short must be transferred first; otherwise both live
in the unified wallet. Spot fees are charged in the asset received (the base on a buy, the
quote on a sell), as Binance, Bybit ("the trading fee unit charged is based on the purchased
cryptocurrency", Bybit help "Spot Trading: Fees Explained", read 2026-12-06) and OKX charge
them by default; perp fees in the settle currency.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from perpcarry.domain.errors import InsufficientFunds, InvalidOrder, VenueError
from perpcarry.domain.types import FeeSchedule, Market, MarketKind
from perpcarry.paper.margin import Exposure
from perpcarry.paper.store import PaperStore, PositionRow
from perpcarry.venues.orders import (
    Balance,
    Fee,
    OrderCapabilities,
    Side,
    Wallet,
)

ZERO = Decimal(0)
# Until setup_account sets one, a position is margined at 1x: the most margin, so a paper
# account never looks safer than the live one will be.
DEFAULT_LEVERAGE = Decimal(1)


@dataclass(frozen=True, slots=True)
class WalletModel:
    spot: Wallet  # where spot trades settle; starting balances go here
    margin: Wallet  # where perp margin, fees, PnL and funding live
    wallets: tuple[Wallet, ...]

    @classmethod
    def of(cls, capabilities: OrderCapabilities) -> WalletModel:
        if capabilities.separate_wallets:
            return cls(Wallet.SPOT, Wallet.FUTURES, capabilities.wallets)
        return cls(Wallet.UNIFIED, Wallet.UNIFIED, capabilities.wallets)


def fee_for(market: Market, side: Side, quantity: Decimal, price: Decimal,
            schedule: FeeSchedule, maker: bool) -> Fee:
    """The fee of one fill, in the currency the venue charges it."""
    if market.kind is MarketKind.PERP:
        rate = schedule.perp_maker if maker else schedule.perp_taker
        return Fee(quantity * price * rate, market.settle or market.quote)
    rate = schedule.spot_maker if maker else schedule.spot_taker
    if side is Side.BUY:
        return Fee(quantity * rate, market.base)
    return Fee(quantity * price * rate, market.quote)


class Ledger:
    """Balances and positions of one paper account, over its store."""

    def __init__(self, venue_id: str, store: PaperStore, model: WalletModel) -> None:
        self.venue_id = venue_id
        self.store = store
        self.model = model

    def leverage(self, symbol: str) -> Decimal:
        return self.store.leverage(symbol) or DEFAULT_LEVERAGE

    def exposures(self, marks: dict[str, Decimal | None]) -> list[Exposure]:
        """Every open position with its mark (None where unknown)."""
        return [Exposure(p.symbol, p.quantity, p.entry_price, marks.get(p.symbol),
                         self.leverage(p.symbol)) for p in self.store.positions()]

    def balances(self, markets: dict[str, Market], marks: dict[str, Decimal | None]
                 ) -> dict[Wallet, dict[str, Balance]]:
        """Per declared wallet and currency: ``total`` is the cash plus the unrealised PnL
        of the perps margined in it (the margin balance), ``used`` the initial margin of
        those perps plus what open orders hold, ``free`` the rest."""
        cash = self.store.balances()
        held = self._held_by_orders(markets)
        pnl: dict[str, Decimal] = defaultdict(Decimal)
        margin: dict[str, Decimal] = defaultdict(Decimal)
        for exposure in self.exposures(marks):
            settle = _settle(markets, exposure.symbol, self.venue_id)
            if exposure.unrealised_pnl is None:
                raise VenueError(self.venue_id, f"{exposure.symbol}: no mark price, so the "
                                 "margin balance is unknown")
            pnl[settle] += exposure.unrealised_pnl
            margin[settle] += exposure.initial_margin
        result: dict[Wallet, dict[str, Balance]] = {}
        for wallet in self.model.wallets:
            in_wallet = cash.get(wallet, {})
            currencies = set(in_wallet) | {c for w, c in held if w is wallet}
            if wallet is self.model.margin:
                currencies |= set(pnl)
            rows = {}
            for currency in sorted(currencies):
                total = in_wallet.get(currency, ZERO)
                used = held.get((wallet, currency), ZERO)
                if wallet is self.model.margin:
                    total += pnl.get(currency, ZERO)
                    used += margin.get(currency, ZERO)
                rows[currency] = Balance(currency, total - used, used, total)
            result[wallet] = rows
        return result

    def _held_by_orders(self, markets: dict[str, Market]) -> dict[tuple[Wallet, str], Decimal]:
        """What resting orders hold: the quote of spot buys, the base of spot sells, the
        initial margin of perp orders that are not reduce-only."""
        held: dict[tuple[Wallet, str], Decimal] = defaultdict(Decimal)
        for row in self.store.open_orders():
            order, market = row.state, markets.get(row.state.symbol)
            if market is None or row.limit_price is None:
                continue
            remaining = order.quantity - order.filled_quantity
            if market.kind is MarketKind.SPOT:
                if order.side is Side.BUY:
                    held[(self.model.spot, market.quote)] += remaining * row.limit_price
                else:
                    held[(self.model.spot, market.base)] += remaining
            elif not order.reduce_only:
                held[(self.model.margin, market.settle or market.quote)] += (
                    remaining * row.limit_price / self.leverage(market.symbol))
        return held

    def check_reduce_only(self, market: Market, side: Side, quantity: Decimal) -> None:
        """A reduce-only order may only shrink the position, never open or flip one."""
        position = self.store.position(market.symbol)
        held = position.quantity if position else ZERO
        reduces = (held < 0 and side is Side.BUY) or (held > 0 and side is Side.SELL)
        if not reduces or quantity > abs(held):
            raise InvalidOrder(self.venue_id, f"{market.symbol}: reduce-only {side.value} of "
                               f"{quantity} would open or flip the position ({held})")

    def check_funds(self, market: Market, side: Side, quantity: Decimal, price: Decimal,
                    fee: Fee, markets: dict[str, Market], marks: dict[str, Decimal | None]
                    ) -> None:
        """Refuse with ``InsufficientFunds`` a fill (or resting order) of ``quantity`` at
        ``price`` the wallet cannot pay for."""
        if market.kind is MarketKind.SPOT:
            wallet = self.model.spot
            currency, needed = ((market.quote, quantity * price) if side is Side.BUY
                                else (market.base, quantity))
        else:
            wallet, currency = self.model.margin, market.settle or market.quote
            opening = self._opening(market.symbol, side, quantity)
            if not opening:
                # A pure reduction frees margin: venues take it whatever is free, since
                # closing is how an account near liquidation gets out.
                return
            needed = opening * price / self.leverage(market.symbol)
            if fee.currency == currency:
                needed += fee.amount
        balance = self.balances(markets, marks)[wallet].get(currency)
        free = balance.free if balance else ZERO
        if needed > free:
            hint = ""
            if wallet is Wallet.FUTURES:
                hint = " (margin lives in the futures wallet: transfer from spot first)"
            raise InsufficientFunds(self.venue_id, f"{market.symbol}: needs {needed} "
                                    f"{currency}, {free} free in the {wallet.value} "
                                    f"wallet{hint}")

    def _opening(self, symbol: str, side: Side, quantity: Decimal) -> Decimal:
        """The part of a perp order that adds to exposure rather than reducing it."""
        position = self.store.position(symbol)
        held = position.quantity if position else ZERO
        delta = quantity if side is Side.BUY else -quantity
        if held * delta >= 0:
            return quantity
        return max(quantity - abs(held), ZERO)

    def apply_fill(self, market: Market, side: Side, quantity: Decimal, price: Decimal,
                   fee: Fee, now: datetime) -> None:
        """Book a fill: the spot wallet's assets, or the perp position and its realised PnL;
        then the fee."""
        if market.kind is MarketKind.SPOT:
            sign = 1 if side is Side.BUY else -1
            self.store.add_balance(self.model.spot, market.base, sign * quantity)
            self.store.add_balance(self.model.spot, market.quote, -sign * quantity * price)
            self.store.add_balance(self.model.spot, fee.currency, -fee.amount)
            return
        settle = market.settle or market.quote
        position = self.store.position(market.symbol)
        held = position.quantity if position else ZERO
        entry = position.entry_price if position else price
        settled = position.funding_settled if position else now
        delta = quantity if side is Side.BUY else -quantity
        after = held + delta
        if held * delta >= 0:  # opening or adding: the entry is the size-weighted average
            entry = (abs(held) * entry + quantity * price) / abs(after)
        else:
            closed = min(quantity, abs(held))
            realised = closed * (price - entry) * (1 if held > 0 else -1)
            self.store.add_balance(self.model.margin, settle, realised)
            if after * held < 0:  # flipped through zero: the rest opens at this price
                entry, settled = price, now
        self.store.put_position(PositionRow(market.symbol, after, entry, settled))
        self.store.add_balance(self.model.margin, fee.currency, -fee.amount)

    def transfer_check(self, currency: str, amount: Decimal, from_wallet: Wallet,
                       to_wallet: Wallet, markets: dict[str, Market],
                       marks: dict[str, Decimal | None]) -> None:
        for wallet in (from_wallet, to_wallet):
            if wallet not in self.model.wallets:
                raise InvalidOrder(self.venue_id, f"no {wallet.value} wallet on this venue "
                                   f"(wallets: {', '.join(w.value for w in self.model.wallets)})")
        if from_wallet is to_wallet or amount <= 0:
            raise InvalidOrder(self.venue_id, f"transfer of {amount} {currency} from "
                               f"{from_wallet.value} to {to_wallet.value}: needs two wallets "
                               "and a positive amount")
        balance = self.balances(markets, marks)[from_wallet].get(currency)
        free = balance.free if balance else ZERO
        if amount > free:
            raise InsufficientFunds(self.venue_id, f"transfer of {amount} {currency}: {free} "
                                    f"free in the {from_wallet.value} wallet")


def _settle(markets: dict[str, Market], symbol: str, venue_id: str) -> str:
    market = markets.get(symbol)
    if market is None:
        raise VenueError(venue_id, f"{symbol}: a paper position in a market the venue no "
                         "longer lists")
    return market.settle or market.quote

