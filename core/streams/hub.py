"""One venue's websocket subscriptions, each watched by a watchdog, with REST as the truth.

A :class:`StreamHub` runs one task per declared feed (and per chunk of symbols that fits one
connection under the venue's published limits). Each task awaits the feed's ccxt.pro watch
method; every push is parsed by the plugin's parser, checked for order and duplicates, and
kept as the newest value of its (kind, symbol).

Streams lie (ccxt #27412, #20911, #16123, #23251), so:

- **watchdog**: no message within ``[streams] stale_after_seconds`` of the feed's kind, an
  error, or a closed connection marks the feed stale; its kinds are polled once over the
  venue's REST client, its connections are dropped, and it is resubscribed after an
  exponential backoff with jitter;
- **reconcile after every reconnect**: the first push after a resubscription is held back
  until the kinds are polled over REST again; only then is the feed live;
- **stale never drives a decision**: :meth:`StreamHub.fresh` answers only from a live feed
  (or from a REST poll) younger than ``max_age``; :meth:`StreamHub.current` falls back to
  REST and logs that it did.

Account feeds (orders, positions, balances; one per venue, no symbols) run only when the
hub is given an :class:`~perpcarry.streams.account.AccountBook` (the venue has credentials):
they keep the same rules, read the account from REST through the book, and are not stale
for being quiet (see :mod:`perpcarry.streams.account`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from loguru import logger

from perpcarry.config.settings import StreamsConfig
from perpcarry.domain.parsing import MalformedField
from perpcarry.domain.types import MarketKind
from perpcarry.streams.account import (
    AccountBook,
    StreamSilent,
    account_connected,
    redact,
    short_error,
)
from perpcarry.streams.client import (
    connected,
    drop_connections,
    new_connection,
    pro_exchange,
)
from perpcarry.streams.limits import ConnectionBudget, chunks
from perpcarry.streams.rest import rest_updates
from perpcarry.venues.streams import StreamCapabilities, StreamFeed, StreamKind, StreamUpdate


class FeedState(StrEnum):
    CONNECTING = "connecting"
    LIVE = "live"
    STALE = "stale"
    RECONCILING = "reconciling"


@dataclass
class FeedStatus:
    """What one subscription reports: its state and why, and what it went through."""

    name: str  # "watchMarkPrices perp" (and "#2" for a second chunk)
    kinds: frozenset[StreamKind]
    symbols: tuple[str, ...]
    state: FeedState = FeedState.CONNECTING
    reason: str = ""
    messages: int = 0
    counts: Counter[str] = field(default_factory=Counter)  # reconnects, rest_polls, ...
    last_message: float | None = None  # monotonic seconds


@dataclass(frozen=True)
class Entry:
    update: StreamUpdate
    received: float  # monotonic seconds
    source: str  # "stream" | "rest"
    feed: FeedStatus | None  # the feed it came from (None: a REST read by a consumer)


# A listener hears every accepted value: (venue_id, update, source).
Listener = Callable[[str, StreamUpdate, str], None]
StatusListener = Callable[[str, FeedStatus], None]


class StreamHub:
    """The streams of one venue. ``venue`` is its REST client (a ``CcxtVenue``)."""

    def __init__(self, venue: Any, capabilities: StreamCapabilities, settings: StreamsConfig,
                 *, exchange_factory: Callable[[bool], Any] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random.random,
                 keepalive_ms: int | None = None, account: AccountBook | None = None) -> None:
        self.venue = venue
        self.venue_id: str = venue.venue_id
        self.capabilities = capabilities
        self.settings = settings
        self.monotonic = monotonic
        self.jitter = jitter
        self.keepalive_ms = keepalive_ms
        # Called with whether the feed is an account one (its client gets the keys).
        self._exchange_factory = exchange_factory or (
            lambda private: pro_exchange(venue, credentials=private))
        self.account = account
        self.budget = ConnectionBudget(capabilities.limits, monotonic)
        self.feeds: list[FeedStatus] = []
        self.listeners: list[Listener] = []
        self.listener_failures: Counter[str] = Counter()  # by listener class
        self.status_listeners: list[StatusListener] = []
        self._latest: dict[tuple[StreamKind, str], Entry] = {}
        self._stream_at: dict[tuple[StreamKind, str], tuple[datetime, StreamUpdate]] = {}
        self._tasks: list[asyncio.Task] = []
        self._exchanges: list[Any] = []

    # -- consumers ------------------------------------------------------------------------

    def fresh(self, kind: StreamKind, symbol: str, max_age: float) -> StreamUpdate | None:
        """The newest value of ``kind`` for ``symbol`` when it may drive a decision: from a
        live feed (or a REST poll) and received at most ``max_age`` seconds ago; else None."""
        entry = self._latest.get((kind, symbol))
        if entry is None or self.monotonic() - entry.received > max_age:
            return None
        if entry.source == "stream" and (entry.feed is None
                                         or entry.feed.state is not FeedState.LIVE):
            return None
        return entry.update

    async def current(self, kind: StreamKind, symbol: str, max_age: float
                      ) -> StreamUpdate | None:
        """:meth:`fresh`, or else the venue's REST answer now (logged, naming why): what a
        decision reads. None when REST has no value for ``symbol`` either."""
        update = self.fresh(kind, symbol, max_age)
        if update is not None:
            return update
        feed = self._feed_of(kind, symbol)
        why = f"{feed.name} {feed.state.value}" if feed else f"{kind.value} not subscribed"
        logger.info("{}: {} of {} from REST ({})", self.venue_id, kind.value, symbol, why)
        await self.poll({kind})
        entry = self._latest.get((kind, symbol))
        return entry.update if entry is not None and entry.source == "rest" else None

    def _feed_of(self, kind: StreamKind, symbol: str) -> FeedStatus | None:
        return next((f for f in self.feeds if kind in f.kinds and symbol in f.symbols), None)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, symbols: dict[MarketKind, Iterable[str]],
              kinds: Iterable[StreamKind]) -> None:
        """Subscribe the feeds that carry ``kinds`` for ``symbols`` (by market kind); kinds
        no feed carries are left to REST polling (:meth:`current`)."""
        limit = self.capabilities.limits.subscriptions_per_connection
        for feed in self.capabilities.streamed(tuple(kinds)):
            if feed.account:
                # Per venue, every symbol at once; without credentials REST fills in.
                if self.account is not None and self.venue.config.has_credentials:
                    self._spawn(feed, FeedStatus(f"{feed.method} account", feed.kinds, ()))
                continue
            wanted = sorted(set(symbols.get(feed.market, ())))
            for n, part in enumerate(chunks(wanted, limit), start=1):
                name = f"{feed.method} {feed.market.value}" + (f" #{n}" if n > 1 else "")
                self._spawn(feed, FeedStatus(name, feed.kinds, tuple(part)))

    def _spawn(self, feed: StreamFeed, status: FeedStatus) -> None:
        self.feeds.append(status)
        self._tasks.append(asyncio.create_task(self._run(feed, status)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for exchange in self._exchanges:
            with contextlib.suppress(Exception):
                await exchange.close()

    # -- one feed -------------------------------------------------------------------------

    async def _run(self, feed: StreamFeed, status: FeedStatus) -> None:
        """Subscribe, read, and on any fault: stale -> REST poll -> backoff -> resubscribe
        -> reconcile from REST -> live."""
        try:
            exchange = self._exchange_factory(feed.account)
        except Exception as err:  # no ccxt.pro class, markets not loaded: REST fills in
            self._set(status, FeedState.STALE, f"cannot stream: {short_error(err)}")
            logger.warning("{}: {} cannot stream ({}); REST polling fills in", self.venue_id,
                           status.name, short_error(err))
            return
        if self.keepalive_ms is not None:
            exchange.streaming = {**exchange.streaming, "keepAlive": self.keepalive_ms}
        exchange.options.update(dict(feed.options))
        self._exchanges.append(exchange)
        method = getattr(exchange, feed.method)
        if feed.account:
            def watch(_symbols: list[str]) -> Any:
                return method(params=dict(feed.params))
        else:
            watch = method
        stale_after = min(self.settings.stale_after(k.value) for k in feed.kinds)
        attempt = 0
        reconnecting = False
        while True:
            await self.budget.acquire(max(1, len(status.symbols)))
            pending = asyncio.ensure_future(watch(list(status.symbols)))
            try:
                if feed.account:
                    # An account may push nothing for hours: the open connection (the
                    # venue took the keys), not a push, makes the feed live, after the
                    # account is read from REST.
                    await account_connected(exchange, pending, stale_after)
                    new_connection(exchange)
                    self._set(status, FeedState.RECONCILING, "reconciling from REST")
                    await self._poll(feed.kinds, status)
                    status.counts["reconciled"] += 1
                    reconnecting = False
                    self._set(status, FeedState.LIVE, "")
                while True:
                    done, _ = await asyncio.wait({pending}, timeout=stale_after)
                    if not done and feed.account and status.state is FeedState.LIVE \
                            and connected(exchange):
                        # A quiet account is not a fault while the connection holds (its
                        # keep-alive fails otherwise): read it from REST, stay live.
                        status.counts["quiet_checks"] += 1
                        await self._poll(feed.kinds, status)
                        continue
                    if not done:
                        pending.cancel()
                        raise StreamSilent(f"no message for {stale_after:g}s")
                    result = pending.result()
                    if new_connection(exchange) and status.messages and not reconnecting:
                        # ccxt.pro redialled on its own after the venue closed the
                        # connection between two watches: pushes may have been missed.
                        status.counts["reconnects"] += 1
                        reconnecting = True
                    if reconnecting:
                        # Reconcile before trusting the stream again: what happened while
                        # it was down is read from REST, the push that came first is kept
                        # only if it is newer than that.
                        self._set(status, FeedState.RECONCILING, "reconciling from REST")
                        await self._poll(feed.kinds, status)
                        status.counts["reconciled"] += 1
                        reconnecting = False
                    if status.state is not FeedState.LIVE:
                        self._set(status, FeedState.LIVE, "")
                    attempt = 0
                    if feed.account:
                        await self._accept_account(feed, status, result)
                    else:
                        self._accept(feed, status, result)
                    pending = asyncio.ensure_future(watch(list(status.symbols)))
            except asyncio.CancelledError:
                pending.cancel()
                if asyncio.current_task().cancelling():
                    raise
                reason = "connection closed"
            except StreamSilent as err:
                reason = str(err)
            except Exception as err:  # a ccxt error, a refused subscription, a dead socket
                reason = f"{type(err).__name__}: {short_error(err)}"
            status.counts["faults"] += 1
            reason = redact(reason, self.venue)
            self._set(status, FeedState.STALE, reason)
            await self._poll(feed.kinds, status)
            await drop_connections(exchange)
            delay = min(self.settings.backoff_max_seconds,
                        self.settings.backoff_base_seconds * 2 ** attempt)
            delay *= 1 + self.settings.backoff_jitter * self.jitter()
            attempt += 1
            status.counts["reconnects"] += 1
            reconnecting = True
            logger.info("{}: {} stale ({}); resubscribing in {:.2f}s", self.venue_id,
                        status.name, reason, delay)
            await asyncio.sleep(delay)

    def _accept(self, feed: StreamFeed, status: FeedStatus, result: Any) -> None:
        """Every symbol of a ccxt answer (a dict by symbol, or one structure) as updates."""
        items = result.values() if isinstance(result, dict) and "symbol" not in result \
            else [result]
        now = self.monotonic()
        received = datetime.now(UTC)
        status.messages += 1
        status.last_message = now
        for item in items:
            if item.get("symbol") not in status.symbols:
                continue
            try:
                updates = feed.parse(item, feed.market, received)
            except (MalformedField, KeyError, TypeError) as err:
                status.counts["malformed"] += 1
                logger.warning("{}: {} push for {} skipped: {}", self.venue_id, status.name,
                               item.get("symbol"), short_error(err))
                continue
            # A push is counted once, whatever number of updates (mark and funding) it held.
            dropped = {self._store(update, now, "stream", status) for update in updates}
            for verdict in dropped - {None}:
                status.counts[verdict] += 1

    async def _accept_account(self, feed: StreamFeed, status: FeedStatus, result: Any
                              ) -> None:
        status.messages += 1
        status.last_message = self.monotonic()
        verdicts = await self.account.accept(feed, status.name, result, datetime.now(UTC))
        status.counts.update(verdicts)

    def _store(self, update: StreamUpdate, received: float, source: str,
               status: FeedStatus | None) -> str | None:
        """Keep ``update`` as the newest of its kind and symbol and tell the listeners; a
        pushed one older than, or the same as, the last push is dropped and its verdict
        ("out_of_order", "duplicates") returned."""
        key = (update.kind, update.symbol)
        if source == "stream":
            seen = self._stream_at.get(key)
            if seen is not None:
                if update.at < seen[0]:
                    return "out_of_order"
                if update == seen[1]:
                    return "duplicates"
            self._stream_at[key] = (update.at, update)
        self._latest[key] = Entry(update, received, source, status)
        for listener in self.listeners:
            try:
                listener(self.venue_id, update, source)
            except Exception:  # one consumer's bug must not blind the others
                # A bug of ours in one consumer (or its journal write failing) would else
                # take the feed stale and flap it: logged with its traceback and counted.
                self.listener_failures[type(listener).__name__] += 1
                logger.opt(exception=True).error(
                    "{}: stream listener {} failed on {} of {}", self.venue_id,
                    type(listener).__name__, update.kind.value, update.symbol)
        return None

    async def poll(self, kinds: Iterable[StreamKind]) -> None:
        """Read ``kinds`` over REST now: how a kind no feed carries is filled in."""
        await self._poll(frozenset(kinds), None)

    async def _poll(self, kinds: frozenset[StreamKind], status: FeedStatus | None) -> None:
        """Read ``kinds`` over the venue's REST client and keep them as REST values (the
        account kinds through the account book)."""
        updates, failures = await rest_updates(self.venue, kinds)
        if self.account is not None and any(k.private for k in kinds):
            failures |= await self.account.reconcile(k for k in kinds if k.private)
        if status is not None:
            status.counts["rest_polls"] += 1
        for what, why in failures.items():
            logger.warning("{}: REST poll of {} failed: {}", self.venue_id, what, why)
        now = self.monotonic()
        wanted = set(status.symbols) if status is not None else None
        for update in updates:
            if wanted is None or update.symbol in wanted:
                self._store(update, now, "rest", status)

    def _set(self, status: FeedStatus, state: FeedState, reason: str) -> None:
        status.state, status.reason = state, reason
        if self.account is not None and StreamKind.ORDERS in status.kinds:
            self.account.set_live(state is FeedState.LIVE)
        for listener in self.status_listeners:
            listener(self.venue_id, status)
