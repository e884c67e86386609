"""Trading sessions: what ``open``, ``close``, ``positions`` and ``reconcile`` share.

A session holds the journal of one account set (paper or live; one file each in the data
dir, locked while a trading command runs) and the order venues it trades on. Every trading
command first finishes what a crashed predecessor left (:func:`recover_intents`) and
refuses to trade while an outcome is still unknown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from loguru import logger

from perpcarry.config.loader import Config
from perpcarry.domain.errors import InvalidOrder, UsageError, VenueError
from perpcarry.domain.types import CarryPair, MarketKind
from perpcarry.execution.checks import TradeContext
from perpcarry.execution.engine import (
    ExecutionIncomplete,
    ExecutionResult,
    Executor,
    Pacing,
    TwoLegExecution,
)
from perpcarry.execution.journal import Journal, Position, PositionState
from perpcarry.execution.legs import OrderUpdates
from perpcarry.execution.recovery import (
    Adoption,
    Reconciliation,
    reconcile_positions,
    recover_intents,
)
from perpcarry.risk.state import breaker_state, kill_state
from perpcarry.venues.orders import MarginMode, OrderVenue, Wallet
from perpcarry.venues.protocol import MarketDataVenue, carry_pairs
from perpcarry.venues.streams import StreamKind

BPS = Decimal(10_000)


def journal_path(data_dir: Path, paper: bool) -> Path:
    """One journal per account set: the paper accounts and the live ones never mix."""
    return data_dir / ("journal-paper.sqlite" if paper else "journal-live.sqlite")


@dataclass
class VenueHandle:
    orders: OrderVenue
    market_data: MarketDataVenue
    # The venue's order updates from its account stream (an AccountBook); None: queried.
    order_updates: OrderUpdates | None = None


class TradingSession:
    """The journal and the venues of one trading command."""

    def __init__(self, config: Config, journal: Journal, venues: dict[str, VenueHandle], *,
                 paper: bool, offline: bool = False,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.config = config
        self.settings = config.settings.execution
        self.journal = journal
        self.venues = venues
        self.paper = paper
        self.offline = offline
        self.sleep = sleep
        self._pairs: dict[tuple[str, str], CarryPair] = {}
        # The run's stream hubs (perpcarry.streams.session.HubSet), or None: REST only.
        self.streams = None

    # -- market data -------------------------------------------------------------------

    async def pair(self, venue_id: str, base: str) -> CarryPair:
        """The carry pair of ``base`` on ``venue_id``."""
        key = (venue_id, base.upper())
        if key not in self._pairs:
            markets = await self.venues[venue_id].market_data.load_markets()
            for pair in carry_pairs(markets):
                self._pairs[(venue_id, pair.base)] = pair
            if key not in self._pairs:
                raise UsageError(f"{venue_id} lists no carry pair for {base.upper()} (a perp "
                                 "and a spot market of the same base and quote)")
        return self._pairs[key]

    async def reference_price(self, pair: CarryPair) -> Decimal:
        """A price to size and check orders with: the perp's mark, else its book's mid;
        streamed when the session has streams and the value is fresh (``[streams]
        max_age_seconds``), else over REST (the hub logs why)."""
        hub = self.streams.get(pair.venue) if self.streams is not None else None
        if hub is not None:
            max_age = self.config.settings.streams.max_age_seconds
            mark = await hub.current(StreamKind.MARK, pair.perp.symbol, max_age)
            if mark is not None:
                return mark.mark_price
            book = await hub.current(StreamKind.PERP_BOOK, pair.perp.symbol, max_age)
            if book is not None:
                return (book.bid + book.ask) / 2
            raise VenueError(pair.venue, f"{pair.perp.symbol}: no mark price or book to "
                             "size the order with")
        client = self.venues[pair.venue].market_data
        snapshot = await client.fetch_funding_snapshot()
        quote = snapshot.quotes.get(pair.perp.symbol)
        if quote is not None and quote.mark_price:
            return quote.mark_price
        spec = self.config.registry.venues[pair.venue]
        if spec.capabilities.bulk_books:
            book = (await client.fetch_book_tops(MarketKind.PERP)).books.get(pair.perp.symbol)
            if book is not None:
                return (book.bid + book.ask) / 2
        raise VenueError(pair.venue, f"{pair.perp.symbol}: no mark price or book to size "
                         "the order with")

    async def pair_and_price(self, venue_id: str, base: str) -> tuple[CarryPair, Decimal]:
        pair = await self.pair(venue_id, base)
        return pair, await self.reference_price(pair)

    # -- recovery ----------------------------------------------------------------------

    async def recover(self) -> Reconciliation:
        """Finish or unwind what a previous process left pending; refuse to go on while an
        outcome is unknown."""
        report = Reconciliation()
        await recover_intents(self.journal, self._order_venues(), self, report)
        return report

    async def reconcile(self, adoption: Adoption | None = None) -> Reconciliation:
        """Recovery, then the journal's positions against each venue's, adopting what
        ``adoption`` asks for."""
        report = await self.recover()
        await reconcile_positions(self.journal, self._order_venues(), self, report, adoption)
        return report

    def _order_venues(self) -> dict[str, OrderVenue]:
        return {v: handle.orders for v, handle in self.venues.items()}

    def _require_clean(self, report: Reconciliation) -> None:
        unresolved = [f for f in report.findings if f.kind == "unresolved"]
        if unresolved:
            raise ExecutionIncomplete(
                f"{len(unresolved)} earlier intent(s) still have an order of unknown outcome "
                f"({unresolved[0].venue} {unresolved[0].subject}: {unresolved[0].detail}); "
                "no new order is sent until `perpcarry reconcile` resolves them")

    # -- trading -----------------------------------------------------------------------

    def executor(self, name: str | None) -> Executor:
        name = name or self.settings.executor
        executors = self.config.registry.executors
        if name not in executors:
            raise UsageError(f"--executor: unknown executor {name!r} (registered: "
                             f"{', '.join(sorted(executors))})")
        return executors[name][0]

    async def open(self, venue_id: str, base: str, *, notional: Decimal | None,
                   quantity: Decimal | None, executor: Executor, slices: int,
                   add_to: Position | None = None) -> ExecutionResult:
        """Open a carry position, or add to ``add_to`` (an open position of the same
        pair): one position per pair keeps each funding payment with the quantity it
        paid."""
        self._require_clean(await self.recover())
        if add_to is not None and (add_to.state is not PositionState.OPEN
                                   or (add_to.venue, add_to.base) != (venue_id, base.upper())):
            raise UsageError(f"position {add_to.position_id} is not an open {base.upper()} "
                             f"position on {venue_id}: nothing to add to")
        pair, price = await self.pair_and_price(venue_id, base)
        target = quantity if quantity is not None else notional / price
        venue = self.venues[venue_id].orders
        execution = self.execution(pair, price)
        await self._prepare_margin(pair, target * price)
        await venue.setup_account(pair.perp, self.settings.leverage, MarginMode.CROSS)
        execution.context = await self._context("open", pair, price, account_ready=True)
        position_id = add_to.position_id if add_to is not None else self.journal.new_id()
        intent = execution.plan("open", position_id, target, executor, slices)
        # Before any order: the perp margin in the capital `perpcarry pnl` divides by.
        self.journal.set_leverage(intent.position_id, self.settings.leverage)
        return await execution.run(executor, self._pacing(pair, price))

    async def close(self, position: Position, *, executor: Executor, slices: int,
                    quantity: Decimal | None = None) -> ExecutionResult:
        """Close ``position``, or take ``quantity`` of it down (both legs alike)."""
        self._require_clean(await self.recover())
        if position.state is PositionState.CLOSED:
            raise UsageError(f"position {position.position_id} is already closed")
        if quantity is not None and not 0 < quantity <= position.perp_quantity:
            raise UsageError(f"position {position.position_id}: cannot take down {quantity} "
                             f"of {position.perp_quantity} {position.base}")
        pair, price = await self.pair_and_price(position.venue, position.base)
        execution = self.execution(pair, price)
        execution.context = await self._context("close", pair, price, account_ready=True)
        execution.plan("close", position.position_id, quantity or position.perp_quantity,
                       executor, slices)
        return await execution.run(executor, self._pacing(pair, price))

    def tolerance(self, pair: CarryPair) -> Decimal:
        """How far the legs may differ, in base: ``[execution] tolerance``, else the coarser
        of the two markets' quantity steps (what :class:`TwoLegExecution` defaults to)."""
        if self.settings.tolerance is not None:
            return self.settings.tolerance
        return max(m.quantity_step * m.contract_size for m in (pair.spot, pair.perp))

    def execution(self, pair: CarryPair, price: Decimal) -> TwoLegExecution:
        """One open, close or repair of ``pair`` with the session's settings; ``price`` sizes
        and checks its orders."""
        handle = self.venues[pair.venue]
        return TwoLegExecution(self.journal, handle.orders, pair,
                               reference_price=price, tolerance=self.settings.tolerance,
                               sleep=self.sleep, max_attempts=self.settings.max_attempts,
                               checks=self.config.registry.pre_trade_vetoes,
                               updates=handle.order_updates)

    async def _context(self, action: str, pair: CarryPair, price: Decimal, *,
                       account_ready: bool) -> TradeContext:
        spec = self.config.registry.venues[pair.venue]
        balances = await self.venues[pair.venue].orders.fetch_balances()
        kill, breaker = kill_state(self.journal), breaker_state(self.journal)
        return TradeContext(pair.venue, action, price, balances, spec.order_capabilities,
                            self.settings.leverage, account_ready,
                            self.settings.max_order_notional, kill and kill.reason,
                            breaker and breaker.reason)

    async def _prepare_margin(self, pair: CarryPair, notional: Decimal) -> None:
        """Where spot and futures wallets are separate, move the short's margin to the
        futures wallet first (``[execution] auto_transfer``; on by default in paper)."""
        capabilities = self.config.registry.venues[pair.venue].order_capabilities
        if capabilities is None or not capabilities.separate_wallets:
            return
        auto = self.settings.auto_transfer
        if auto is None:
            auto = self.paper
        venue = self.venues[pair.venue].orders
        settle = pair.perp.settle or pair.perp.quote
        need = notional / self.settings.leverage * self.settings.margin_buffer
        balances = await venue.fetch_balances()
        free = balances.get(Wallet.FUTURES, {}).get(settle)
        shortfall = need - (free.free if free else Decimal(0))
        if shortfall <= 0:
            return
        if not auto:
            raise InvalidOrder(pair.venue, f"{shortfall:.2f} {settle} more margin is needed in "
                               "the futures wallet: transfer it, or set [execution] "
                               "auto_transfer = true")
        await self.transfer_margin(pair.venue, settle, shortfall)

    async def transfer_margin(self, venue_id: str, currency: str, amount: Decimal
                              ) -> Decimal:
        """Move ``amount`` (rounded up to the cent) of ``currency`` from the spot wallet to
        the futures wallet, journalled before and after; the amount moved. Used before a
        short (:meth:`_prepare_margin`) and by the margin monitor's top-ups."""
        amount = amount.quantize(Decimal("0.01"), rounding="ROUND_CEILING")
        venue = self.venues[venue_id].orders
        self.journal.record_transfer(venue_id, currency, amount, Wallet.SPOT, Wallet.FUTURES,
                                     "planned")
        transfer = await venue.transfer(currency, amount, Wallet.SPOT, Wallet.FUTURES)
        self.journal.record_transfer(venue_id, currency, amount, Wallet.SPOT, Wallet.FUTURES,
                                     "done", transfer.transfer_id)
        logger.info("{}: moved {} {} to the futures wallet for the short's margin",
                    venue_id, amount, currency)
        return amount

    def _pacing(self, pair: CarryPair, price: Decimal) -> Pacing:
        start: list[Decimal] = []
        limit = self.settings.max_basis_move_bps / BPS

        async def basis_check() -> str | None:
            hub = self.streams.get(pair.venue) if self.streams is not None else None
            if hub is not None:
                # Fresh streamed tops, else the venue's REST books (the hub logs why).
                max_age = self.config.settings.streams.max_age_seconds
                spot = await hub.current(StreamKind.SPOT_BOOK, pair.spot.symbol, max_age)
                perp = await hub.current(StreamKind.PERP_BOOK, pair.perp.symbol, max_age)
                return moved(spot, perp)
            client = self.venues[pair.venue].market_data
            try:
                spot_books = await client.fetch_book_tops(MarketKind.SPOT)
                perp_books = await client.fetch_book_tops(MarketKind.PERP)
            except VenueError as err:
                return f"books unavailable, so the basis cannot be watched ({err})"
            return moved(spot_books.books.get(pair.spot.symbol),
                         perp_books.books.get(pair.perp.symbol))

        def moved(spot, perp) -> str | None:
            if spot is None or perp is None:
                return None
            basis = perp.bid / spot.ask - 1
            if not start:
                start.append(basis)
                return None
            if abs(basis - start[0]) > limit:
                return (f"basis moved {(basis - start[0]) * BPS:.1f} bps since the first "
                        f"slice (limit {self.settings.max_basis_move_bps})")
            return None

        # Offline snapshots hold no books, and a venue that declares none has nothing to
        # watch: slices are then paced only.
        watch = (not self.offline
                 and self.config.registry.venues[pair.venue].capabilities.bulk_books)
        return Pacing(self.settings.slice_pause_seconds, self.sleep,
                      basis_check if watch else None)
