"""The account half over ccxt: balances per wallet, perp positions, account setup,
transfers between wallets and the funding ledger. Mixed into a ``CcxtVenue`` subclass
through :class:`perpcarry.ccxt.orders.CcxtOrderVenue`."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from perpcarry.ccxt.order_requests import CcxtRequests, dec, ms_to_datetime
from perpcarry.domain.errors import InvalidResponse, UsageError
from perpcarry.domain.types import Market, MarketKind
from perpcarry.venues.orders import (
    Balance,
    FundingPayment,
    MarginMode,
    PerpPosition,
    Side,
    Transfer,
    Wallet,
)


class CcxtAccount(CcxtRequests):
    """Balances, positions, setup, transfers and funding payments over ccxt."""

    # Wallets and the ccxt fetch_balance params that read each one ("weight": the request's
    # weight where not 1).
    balance_wallets: ClassVar[dict[Wallet, dict[str, Any]]]
    # Wallets between which ``transfer`` moves funds, as ccxt's account names; empty where
    # the account is unified and nothing needs moving.
    transfer_accounts: ClassVar[dict[Wallet, str]] = {}
    # ccxt params of one bulk positions request per scope ("weight" as above).
    position_scopes: ClassVar[tuple[dict[str, Any], ...]] = ({},)

    markets_by_venue_symbol: Any
    context: Any

    async def fetch_balances(self) -> dict[Wallet, dict[str, Balance]]:
        """Free, used and total of every currency held, per wallet the venue has."""
        balances: dict[Wallet, dict[str, Balance]] = {}
        for wallet, scope in self.balance_wallets.items():
            budget = self.order_budgets[MarketKind.PERP if wallet is Wallet.FUTURES
                                        else MarketKind.SPOT]
            params = {k: v for k, v in scope.items() if k != "weight"}
            call = lambda params=params: self.exchange.fetch_balance(params)  # noqa: E731
            send = self._derivatives if wallet is Wallet.FUTURES else self._query
            raw = await send(f"{wallet.value} balance", budget, call, scope.get("weight", 1))
            balances[wallet] = self._balances(raw)
        return balances

    def _balances(self, raw: dict[str, Any]) -> dict[str, Balance]:
        found = {}
        for currency, entry in raw.items():
            if currency in {"info", "free", "used", "total", "timestamp", "datetime", "debt"} \
                    or not isinstance(entry, dict):
                continue
            free, used, total = (dec(entry.get(k)) for k in ("free", "used", "total"))
            if total is None and free is not None and used is not None:
                total = free + used
            if total is None or free is None:
                raise InvalidResponse(self.venue_id, f"balance of {currency} lacks "
                                      "free or total")
            if used is None:
                used = total - free
            if total or free or used:
                found[currency] = Balance(currency, free, used, total)
        return found

    async def fetch_positions(self) -> list[PerpPosition]:
        """Every open position of the perps perpcarry trades (one request per scope)."""
        perps = await self.markets_by_venue_symbol(MarketKind.PERP)
        by_symbol = {m.symbol: m for m in perps.values()}
        positions = []
        for scope in self.position_scopes:
            params = {k: v for k, v in scope.items() if k != "weight"}
            rows = await self._derivatives(
                "positions", self.order_budgets[MarketKind.PERP],
                lambda params=params: self.exchange.fetch_positions(None, params),
                scope.get("weight", 1))
            for row in rows:
                market = by_symbol.get(row.get("symbol"))
                contracts = dec(row.get("contracts"))
                if market is None or not contracts:
                    continue
                positions.append(self._position(market, row, contracts))
        return positions

    def _position(self, market: Market, row: dict[str, Any], contracts: Decimal
                  ) -> PerpPosition:
        side = row.get("side")
        if side not in ("long", "short"):
            raise InvalidResponse(self.venue_id, f"position of {market.symbol}: side {side!r}")
        mode = row.get("marginMode")
        return PerpPosition(
            venue=self.venue_id, symbol=market.symbol,
            side=Side.BUY if side == "long" else Side.SELL,
            quantity=abs(contracts) * market.contract_size,
            entry_price=dec(row.get("entryPrice")), mark_price=dec(row.get("markPrice")),
            unrealised_pnl=dec(row.get("unrealizedPnl")), leverage=dec(row.get("leverage")),
            margin_mode=MarginMode(mode) if mode in ("cross", "isolated") else None,
            maintenance_margin=dec(row.get("maintenanceMargin")),
            margin_ratio=dec(row.get("marginRatio")),
            # Binance reports 0 where no liquidation price applies: unknown, not zero.
            liquidation_price=dec(row.get("liquidationPrice")) or None)

    async def setup_account(self, market: Market, leverage: Decimal,
                            margin_mode: MarginMode = MarginMode.CROSS) -> None:
        """One-way mode, ``margin_mode`` and ``leverage`` on ``market``; each setting sent
        once, a setting already in place is not an error."""
        if market.kind is not MarketKind.PERP:
            raise UsageError(f"{self.venue_id}: account setup applies to perps, not "
                             f"{market.symbol}")
        if leverage != int(leverage) or leverage < 1:
            raise UsageError(f"{self.venue_id}: leverage {leverage} is not a whole number "
                             "of at least 1")
        budget = self.order_budgets[MarketKind.PERP]
        # Some of ccxt's setters look the market up without loading markets first.
        await self.exchange.load_markets()
        for what, call in self._setup_steps(market, leverage, margin_mode):
            await self._derivatives(f"{market.symbol} {what}", budget,
                                    self._already_set_ok(call), send_once=True)

    def _setup_steps(self, market: Market, leverage: Decimal, margin_mode: MarginMode
                     ) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
        """The account-setting calls of :meth:`setup_account`, in order."""
        return [
            ("one-way position mode",
             lambda: self.exchange.set_position_mode(False, market.symbol)),
            (f"{margin_mode.value} margin",
             lambda: self.exchange.set_margin_mode(margin_mode.value, market.symbol)),
            (f"leverage {leverage}",
             lambda: self.exchange.set_leverage(int(leverage), market.symbol)),
        ]

    def _already_set_ok(self, call: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        async def tolerant() -> Any:
            import ccxt

            try:
                return await call()
            except (ccxt.MarginModeAlreadySet, ccxt.NoChange):
                return None
            except ccxt.ExchangeError as exc:
                if self._is_already_set(exc):
                    return None
                raise
        return tolerant

    def _is_already_set(self, exc: Exception) -> bool:
        """The venue's answer that a setting is already in place (venue codes)."""
        return False

    async def transfer(self, currency: str, amount: Decimal, from_wallet: Wallet,
                       to_wallet: Wallet) -> Transfer:
        """Move ``amount`` of ``currency`` between two wallets, sent once."""
        accounts = self.transfer_accounts
        if from_wallet not in accounts or to_wallet not in accounts or from_wallet == to_wallet:
            have = ", ".join(w.value for w in accounts) or "none: spot and perps share one "\
                "unified account, no transfer is needed"
            raise UsageError(f"{self.venue_id}: no transfer from {from_wallet.value} to "
                             f"{to_wallet.value} (wallets that transfer: {have})")
        if amount <= 0:
            raise UsageError(f"{self.venue_id}: transfer amount {amount} is not positive")
        result = await self._send_once(
            f"transfer {amount} {currency} {from_wallet.value}->{to_wallet.value}",
            self.order_budgets[MarketKind.SPOT],
            lambda: self.exchange.transfer(currency, float(amount), accounts[from_wallet],
                                           accounts[to_wallet]))
        return Transfer(self.venue_id, result.get("id"), currency, amount, from_wallet,
                        to_wallet, ms_to_datetime(result.get("timestamp")))

    async def fetch_funding_payments(self, since: datetime, until: datetime | None = None
                                     ) -> list[FundingPayment]:
        """Funding settled on the account in [since, until], every page, oldest first,
        positive = received; payments of markets perpcarry does not trade included."""
        start = int(since.timestamp() * 1000)
        end = int((until or self.context.clock()).timestamp() * 1000)
        payments = await self.funding_payment_pages(start, end)
        unique = {p.payment_id: p for p in payments if start <= p.time.timestamp() * 1000 <= end}
        return sorted(unique.values(), key=lambda p: (p.time, p.payment_id))

    @abstractmethod
    async def funding_payment_pages(self, start_ms: int, end_ms: int) -> list[FundingPayment]:
        """Every funding payment in [start_ms, end_ms] from the venue's ledger endpoint (the
        ledgers differ per venue: paging, sign, fields)."""
