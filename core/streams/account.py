"""A venue's account streams (orders, positions, balances), with REST as the truth, and the
order updates the executor waits on.

An :class:`AccountBook` belongs to one venue's :class:`~perpcarry.streams.hub.StreamHub`.
The hub runs its account feeds (one subscription per venue, no symbol list) with the same
watchdog, backoff and reconcile-after-reconnect as the market feeds; the book

- parses each push with the plugin's :data:`~perpcarry.venues.streams.AccountParser`
  (which reuses the venue's REST parsing), skips and counts a malformed, duplicate or stale
  (older than what is known) order update, and keeps the newest order state by client id,
  the positions by symbol and the balances by wallet;
- reconciles from REST (:meth:`reconcile`): the working orders the session lists, each by
  client id (``fetch_order``), ``fetch_positions`` and ``fetch_balances``, over the venue's
  own REST order client;
- wakes :meth:`wait` ers (``LegSender``) on an order's update by client id, and only while
  the orders feed is live.

What "stale" means here: an account stream is quiet while nothing happens, so silence alone
is not a fault. After ``stale_after_seconds`` of silence on a connection ccxt.pro still holds
open (its keep-alive pings are answered), the hub reads the account from REST and keeps the
feed live; a failing keep-alive, an error or a closed connection makes it stale.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from loguru import logger

from perpcarry.domain.errors import BadSymbol, PerpcarryError, VenueError
from perpcarry.domain.parsing import MalformedField
from perpcarry.streams.client import connected
from perpcarry.venues.orders import Balance, OrderState, PerpPosition, Wallet
from perpcarry.venues.streams import (
    AccountUpdate,
    BalanceUpdate,
    OrderUpdate,
    PositionUpdate,
    StreamFeed,
    StreamKind,
)

# (symbol, client order id) of every order the journal sent on this venue and has not seen
# final: what is read by client id after a reconnect.
WorkingOrders = Callable[[], Iterable[tuple[str, str]]]
# What a push may fail with when it is not what the venue documents.
UNREADABLE = (PerpcarryError, MalformedField, KeyError, TypeError, ValueError, ArithmeticError)


class AccountBook:
    """What one venue's account streams and REST reads say, newest first."""

    def __init__(self, venue_id: str, orders: Any, working_orders: WorkingOrders) -> None:
        self.venue_id = venue_id
        self.orders = orders  # the venue's REST order client (an OrderVenue with .market)
        self.working_orders = working_orders
        self.order_states: dict[str, OrderState] = {}
        self.positions: dict[str, PerpPosition] = {}
        self.balances: dict[Wallet, dict[str, Balance]] = {}
        self.counts: Counter[str] = Counter()  # malformed, duplicates, out_of_order, ...
        # Whether the orders feed is live (the hub sets it as the feed's state changes).
        self.orders_live = False
        self._waiters: dict[str, list[asyncio.Future[OrderState | None]]] = {}

    # -- what the executor reads ------------------------------------------------------------

    @property
    def live(self) -> bool:
        """Whether order updates arrive from a live stream (else REST is queried)."""
        return self.orders_live

    async def wait(self, client_order_id: str, timeout: float) -> OrderState | None:
        """The order's next update within ``timeout`` seconds (at once if a final state is
        already known); None when none came, or the orders feed is not live (the caller then
        queries REST)."""
        if not self.orders_live:
            return None
        known = self.order_states.get(client_order_id)
        if known is not None and known.status.is_final:
            return known
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(client_order_id, []).append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(client_order_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(client_order_id, None)

    def set_live(self, live: bool) -> None:
        """The orders feed went live or left it; leaving wakes every waiter with None, so
        each queries REST at once instead of waiting on a dead stream."""
        self.orders_live = live
        if not live:
            for waiters in self._waiters.values():
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    # -- pushes -----------------------------------------------------------------------------

    async def accept(self, feed: StreamFeed, name: str, result: Any, received: datetime
                     ) -> Counter[str]:
        """Every item of a ccxt.pro answer (a list of orders or positions, or one balance
        structure) parsed and kept; the verdicts of the items skipped, counted."""
        items = result if isinstance(result, list) else [result]
        verdicts: Counter[str] = Counter()
        for item in items:
            try:
                updates = await feed.parse(item, self.orders, received)
            except BadSymbol:
                # An order or position of a market perpcarry does not list (a web-UI trade
                # of another symbol): not ours to follow, and not a broken push.
                verdicts["other_markets"] += 1
                continue
            except UNREADABLE as err:
                verdicts["malformed"] += 1
                logger.warning("{}: {} push skipped: {}", self.venue_id, name, short_error(err))
                continue
            for update in updates:
                verdict = self.store(update)
                if verdict is not None:
                    verdicts[verdict] += 1
        self.counts.update(verdicts)
        return verdicts

    def store(self, update: AccountUpdate) -> str | None:
        """Keep ``update``; a duplicate or an order update older than the known state is
        dropped and its verdict returned."""
        if isinstance(update, OrderUpdate):
            return self._store_order(update.state)
        if isinstance(update, PositionUpdate):
            if update.position is None:
                self.positions.pop(update.symbol, None)
            else:
                self.positions[update.symbol] = update.position
            return None
        if isinstance(update, BalanceUpdate):
            wallet = self.balances.setdefault(update.wallet, {})
            wallet.update({b.currency: b for b in update.balances})
        return None

    def _store_order(self, state: OrderState, *, pushed: bool = True) -> str | None:
        known = self.order_states.get(state.client_order_id)
        if known is not None and pushed:
            # A push repeating a final order (ccxt re-merges its cached fee into it: a
            # duplicate ORDER_TRADE_UPDATE came back with the fee doubled) or the same
            # state again is a duplicate; fewer fills than known, an old push arriving late.
            # Neither is kept over the newer state. A REST read is the truth and always is.
            if state == known or (known.status.is_final
                                  and state.filled_quantity == known.filled_quantity):
                return "duplicates"
            if state.filled_quantity < known.filled_quantity or known.status.is_final:
                return "out_of_order"
        self.order_states[state.client_order_id] = state
        for waiter in self._waiters.pop(state.client_order_id, []):
            if not waiter.done():
                waiter.set_result(state)
        return None

    # -- REST, the truth --------------------------------------------------------------------

    async def reconcile(self, kinds: Iterable[StreamKind]) -> dict[str, str]:
        """Read ``kinds`` over REST: each working order by client id, the positions, the
        balances. Returns, per read that failed, why (the others still count)."""
        kinds = set(kinds)
        failures: dict[str, str] = {}
        if StreamKind.ORDERS in kinds:
            for symbol, client_id in list(self.working_orders()):
                state = await self._rest(failures, f"order {client_id}",
                                         self._fetch_order(symbol, client_id))
                if state is not None:
                    self._store_order(state, pushed=False)
        if StreamKind.POSITIONS in kinds:
            positions = await self._rest(failures, "positions", self.orders.fetch_positions())
            if positions is not None:
                self.positions = {p.symbol: p for p in positions}
        if StreamKind.BALANCES in kinds:
            balances = await self._rest(failures, "balances", self.orders.fetch_balances())
            if balances is not None:
                self.balances = balances
        return failures

    async def _fetch_order(self, symbol: str, client_id: str) -> OrderState | None:
        return await self.orders.fetch_order(await self.orders.market(symbol), client_id)

    @staticmethod
    async def _rest(failures: dict[str, str], what: str, read: Awaitable[Any]) -> Any:
        try:
            return await read
        except (VenueError, PerpcarryError) as err:
            failures[what] = str(err)
            return None


# How often an account feed looks whether ccxt.pro has opened its connection.
ACCOUNT_CONNECT_POLL_SECONDS = 0.02


class StreamSilent(Exception):
    """The watchdog's verdict: no message within the kind's ``stale_after_seconds``."""


async def account_connected(exchange: Any, pending: asyncio.Future, limit: float) -> None:
    """Return once ccxt.pro holds an open connection for the feed (or it already pushed);
    raise the watch's own error (a refused login) or :class:`StreamSilent` after ``limit``
    seconds without one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not connected(exchange):
        if pending.done():
            pending.result()
            return
        if loop.time() > deadline:
            raise StreamSilent(f"no connection within {limit:g}s")
        await asyncio.wait({pending}, timeout=ACCOUNT_CONNECT_POLL_SECONDS)



# -- parsing helpers the plugins' account parsers share -------------------------------------


async def ccxt_order_state(item: dict[str, Any], venue: Any) -> OrderState:
    """ccxt.pro's order structure as the venue's REST path parses ccxt's order structure
    (``venue`` is the plugin's ``CcxtOrderVenue``): the journal records both alike."""
    return venue._order_state(await venue.market(item["symbol"]), item)


async def parse_ccxt_order(item: dict[str, Any], venue: Any, received: datetime
                           ) -> list[AccountUpdate]:
    """An account parser for a venue whose order pushes carry the order's cumulative fee,
    as its REST answer does (Bybit's ``cumExecFee``, OKX's ``fee``): ccxt.pro's order
    structure read as ``fetch_order``'s answer is."""
    return [OrderUpdate(await ccxt_order_state(item, venue))]


async def parse_ccxt_position(item: dict[str, Any], venue: Any, received: datetime
                              ) -> list[AccountUpdate]:
    """An account parser: ccxt.pro's position structure through the venue's REST position
    parsing; a position of no contracts is the venue saying the perp is flat."""
    market = await venue.market(item["symbol"])
    contracts = item.get("contracts")
    if contracts is None:
        raise MalformedField("contracts", None, "position push without contracts")
    if not Decimal(str(contracts)):
        return [PositionUpdate(market.symbol, None)]
    return [PositionUpdate(market.symbol,
                           venue._position(market, item, Decimal(str(contracts))))]


def ccxt_balance_update(item: dict[str, Any], venue: Any, wallet: Wallet
                        ) -> list[AccountUpdate]:
    """ccxt.pro's balance structure of ``wallet`` through the venue's REST balance
    parsing (a currency lacking free or total makes the push unreadable, never a zero)."""
    return [BalanceUpdate(wallet, tuple(venue._balances(item).values()))]


def redact(text: str, venue: Any) -> str:
    """``text`` with each of ``venue``'s credentials replaced by ``***``: a venue's login
    refusal may echo the login request (Bybit's carries the key and signature), and a
    feed's reason is shown and logged."""
    config = getattr(venue, "config", None)
    for field_name in getattr(venue, "credential_keys", {}):
        secret = getattr(config, field_name, None)
        if secret is not None and secret.get_secret_value():
            text = text.replace(secret.get_secret_value(), "***")
    return text


def short_error(err: BaseException) -> str:
    """An error's text for a reason or a log line, at most 160 characters."""
    text = str(err) or type(err).__name__
    return text if len(text) <= 160 else f"{text[:157]}..."
