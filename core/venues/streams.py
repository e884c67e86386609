"""What a venue streams over websockets, declared by its plugin and read by core.

A plugin lists its :class:`StreamFeed` s in a :class:`StreamCapabilities` on its
``VenueSpec.streams``: each feed names the ``ccxt.pro`` watch method, the market kind it
subscribes, the :class:`StreamKind` s it carries and the plugin's parser from what ccxt
returns to :data:`StreamUpdate` s. A kind no feed carries is filled in by REST polling, and
:meth:`StreamCapabilities.mode` says so; core never probes ``exchange.has`` at run time.

An account feed (orders, positions, balances) is per venue, not per symbol: its ``market``
is None, it starts only when the venue has credentials, and its parser turns what ccxt.pro
returns into :data:`AccountUpdate` s built by the venue's own REST parsing (an order update
carries the same :class:`~perpcarry.venues.orders.OrderState` a ``fetch_order`` gives).
See docs/streams.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from perpcarry.domain.types import MarketKind
from perpcarry.venues.orders import Balance, OrderState, PerpPosition, Wallet


class StreamKind(StrEnum):
    """What a stream carries. The three account kinds need credentials."""

    MARK = "mark"  # mark (and index) price of a perp
    FUNDING = "funding"  # current funding rate and next funding time of a perp
    SPOT_BOOK = "spot_book"  # best bid/ask of a spot market
    PERP_BOOK = "perp_book"  # best bid/ask of a perp
    ORDERS = "orders"  # order updates and fills
    POSITIONS = "positions"
    BALANCES = "balances"

    @property
    def private(self) -> bool:
        return self in (StreamKind.ORDERS, StreamKind.POSITIONS, StreamKind.BALANCES)


MARKET_KINDS = (StreamKind.MARK, StreamKind.FUNDING, StreamKind.SPOT_BOOK, StreamKind.PERP_BOOK)


@dataclass(frozen=True)
class MarkTick:
    """A perp's mark as a stream pushed it; ``at`` is the venue's event time."""

    symbol: str
    at: datetime
    mark_price: Decimal
    index_price: Decimal | None = None
    kind: StreamKind = field(default=StreamKind.MARK, init=False)


@dataclass(frozen=True)
class FundingTick:
    """A perp's current funding rate (per its own interval) and next funding time."""

    symbol: str
    at: datetime
    rate: Decimal
    next_funding_time: datetime | None
    kind: StreamKind = field(default=StreamKind.FUNDING, init=False)


@dataclass(frozen=True)
class BookTick:
    """Best bid and ask of one market (``kind`` SPOT_BOOK or PERP_BOOK)."""

    symbol: str
    at: datetime
    bid: Decimal
    ask: Decimal
    kind: StreamKind = StreamKind.SPOT_BOOK


StreamUpdate = MarkTick | FundingTick | BookTick
# What ccxt.pro returned for one symbol, the feed's market kind and when it was received ->
# the updates it carries. Raises perpcarry.domain.parsing.MalformedField for a value that is
# not what the venue documents (the hub then skips that symbol's push and says why).
FeedParser = Callable[[dict[str, Any], MarketKind, datetime], list[StreamUpdate]]


@dataclass(frozen=True)
class OrderUpdate:
    """An order's state as an account stream pushed it (parsed as the REST path does)."""

    state: OrderState
    kind: StreamKind = field(default=StreamKind.ORDERS, init=False)

    @property
    def symbol(self) -> str:
        return self.state.symbol


@dataclass(frozen=True)
class PositionUpdate:
    """One perp's position as pushed; ``position`` None: the venue reports it flat."""

    symbol: str
    position: PerpPosition | None
    kind: StreamKind = field(default=StreamKind.POSITIONS, init=False)


@dataclass(frozen=True)
class BalanceUpdate:
    """The balances of one wallet as pushed (only the currencies the push carried)."""

    wallet: Wallet
    balances: tuple[Balance, ...]
    kind: StreamKind = field(default=StreamKind.BALANCES, init=False)


AccountUpdate = OrderUpdate | PositionUpdate | BalanceUpdate
# What ccxt.pro returned for one account item (an order, a position, a balance structure),
# the venue's REST order client (whose parsing it reuses) and when it was received -> the
# updates it carries. Raises InvalidResponse or MalformedField for an unreadable item.
AccountParser = Callable[[dict[str, Any], Any, datetime], Awaitable[list[AccountUpdate]]]


@dataclass(frozen=True)
class StreamFeed:
    """One ccxt.pro subscription a venue offers."""

    method: str  # the ccxt.pro watch method taking a list of unified symbols
    # Which markets' symbols it is subscribed with; None: an account feed, per venue.
    market: MarketKind | None
    kinds: frozenset[StreamKind]
    parse: FeedParser | AccountParser  # an AccountParser exactly when ``market`` is None
    # The ccxt.pro class when it is not the REST client's (none of ours today).
    ccxt_id: str | None = None
    # ccxt params of an account watch (which wallet or market type it follows).
    params: tuple[tuple[str, Any], ...] = ()
    # ccxt.pro options of the feed's client (e.g. no REST snapshot of its own: the hub
    # reconciles over the venue's REST client).
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def account(self) -> bool:
        """Whether this feed carries account kinds (needs credentials, has no symbols)."""
        return self.market is None


@dataclass(frozen=True)
class StreamLimits:
    """The venue's published websocket limits (each plugin cites its source)."""

    # Subscriptions (streams, topics, channels) one connection may carry.
    subscriptions_per_connection: int
    # New connections allowed per window (per IP), and the window's length.
    connections_per_window: int
    connection_window_seconds: float
    # Subscribe requests allowed per hour per connection; None: not limited.
    subscriptions_per_hour: int | None = None


@dataclass(frozen=True)
class StreamCapabilities:
    """The feeds a venue streams; every other kind is polled over REST."""

    feeds: tuple[StreamFeed, ...]
    limits: StreamLimits
    # ccxt.pro's per-connection settings: how often it pings (ms), declared per venue.
    keepalive_ms: int | None = None

    def feed_of(self, kind: StreamKind) -> StreamFeed | None:
        """The feed carrying ``kind``, or None when REST polling fills it in."""
        return next((f for f in self.feeds if kind in f.kinds), None)

    def mode(self, kind: StreamKind) -> str:
        """"stream" or "rest polling" for ``kind``: what ``perpcarry watch`` and the run
        report show."""
        return "stream" if self.feed_of(kind) is not None else "rest polling"

    def streamed(self, kinds: Mapping[StreamKind, Any] | tuple[StreamKind, ...]
                 ) -> tuple[StreamFeed, ...]:
        """The feeds needed for ``kinds``, each once."""
        wanted = []
        for kind in kinds:
            feed = self.feed_of(kind)
            if feed is not None and feed not in wanted:
                wanted.append(feed)
        return tuple(wanted)
