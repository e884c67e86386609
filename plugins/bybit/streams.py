"""What Bybit streams through ccxt.pro 4.5, and how its pushes read.

``watchTickers`` on the linear stream subscribes ``tickers.<symbol>``: a snapshot, then
deltas that ccxt merges into ``info``; a linear ticker carries ``markPrice``,
``indexPrice``, ``fundingRate``, ``nextFundingTime`` and the top of book (``bid1Price``,
``ask1Price``), so one feed serves marks, funding and perp books. Spot tickers carry no
bid/ask (the real capture in data/raw-responses/multivenue-ws-… shows it), so spot books
come from ``watchBidsAsks`` (``orderbook.1.<symbol>``).

With credentials, the v5 private stream (``wss://stream.bybit.com/v5/private``, logged in
with ``{"op":"auth","args":[key, expires, signature]}``): ``watchOrders`` subscribes the
``order`` topic, ``watchPositions`` the ``position`` topic, ``watchBalance`` the ``wallet``
topic, each parsed by the REST path's own parsing (a push's objects have the v5 REST
fields).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from perpcarry.domain.parsing import (
    MalformedField,
    best_bid_ask,
    decimal_field,
    optional_decimal,
    time_field,
)
from perpcarry.domain.types import MarketKind
from perpcarry.streams.account import (
    ccxt_balance_update,
    parse_ccxt_order,
    parse_ccxt_position,
)
from perpcarry.venues.orders import Wallet
from perpcarry.venues.streams import (
    AccountUpdate,
    BookTick,
    FundingTick,
    MarkTick,
    StreamCapabilities,
    StreamFeed,
    StreamKind,
    StreamLimits,
    StreamUpdate,
)


def _time(item: dict[str, Any], received: datetime) -> datetime:
    return time_field(item, "timestamp") if item.get("timestamp") is not None else received


def parse_linear_ticker(item: dict[str, Any], market: MarketKind, received: datetime
                        ) -> list[StreamUpdate]:
    """A linear ``tickers`` push as ccxt merged it: mark, funding and, when present, the
    top of book (a delta may carry only some of them; what it lacks is not an update)."""
    raw, symbol, at = item["info"], item["symbol"], _time(item, received)
    updates: list[StreamUpdate] = []
    if raw.get("markPrice") not in (None, ""):
        updates.append(MarkTick(symbol, at, decimal_field(raw, "markPrice"),
                                optional_decimal(raw, "indexPrice")))
    if raw.get("fundingRate") not in (None, ""):
        updates.append(FundingTick(symbol, at, decimal_field(raw, "fundingRate"),
                                   time_field(raw, "nextFundingTime")))
    if raw.get("bid1Price") not in (None, "") and raw.get("ask1Price") not in (None, ""):
        bid, ask = best_bid_ask(raw, "bid1Price", "ask1Price")
        updates.append(BookTick(symbol, at, bid, ask, StreamKind.PERP_BOOK))
    if not updates:
        raise MalformedField("markPrice", None,
                             "ticker push without markPrice, fundingRate or bid1/ask1Price")
    return updates


def parse_bid_ask(item: dict[str, Any], market: MarketKind, received: datetime
                  ) -> list[StreamUpdate]:
    """An ``orderbook.1`` push as ccxt's bid/ask ticker."""
    bid, ask = best_bid_ask(item, "bid", "ask")
    kind = StreamKind.SPOT_BOOK if market is MarketKind.SPOT else StreamKind.PERP_BOOK
    return [BookTick(item["symbol"], _time(item, received), bid, ask, kind)]


async def parse_balance(item: dict[str, Any], venue: Any, received: datetime
                        ) -> list[AccountUpdate]:
    """A ``wallet`` push: the trading account's wallet, read by ccxt's REST balance parsing
    from the push's ``data`` (the v5 REST wallet-balance ``list`` objects, same fields).
    ccxt.pro's own websocket parse reads other fields (``equity`` as the total) and would
    disagree with ``fetch_balances`` for the same values."""
    parsed = venue.exchange.parse_balance({"result": {"list": item["info"]}})
    return ccxt_balance_update(parsed, venue, Wallet.UNIFIED)


# The unified trading account the REST client declares (no probing requests), and no REST
# positions snapshot of ccxt.pro's own: the hub reconciles over the venue's REST client.
ACCOUNT_OPTIONS = (("enableUnifiedAccount", True), ("enableUnifiedMargin", False),
                   ("watchPositions", {"fetchPositionsSnapshot": False,
                                       "awaitPositionsSnapshot": False}))

STREAMS = StreamCapabilities(
    feeds=(
        StreamFeed("watchTickers", MarketKind.PERP,
                   frozenset({StreamKind.MARK, StreamKind.FUNDING, StreamKind.PERP_BOOK}),
                   parse_linear_ticker),
        StreamFeed("watchBidsAsks", MarketKind.SPOT, frozenset({StreamKind.SPOT_BOOK}),
                   parse_bid_ask),
        StreamFeed("watchOrders", None, frozenset({StreamKind.ORDERS}), parse_ccxt_order,
                   options=ACCOUNT_OPTIONS),
        StreamFeed("watchPositions", None, frozenset({StreamKind.POSITIONS}),
                   parse_ccxt_position, options=ACCOUNT_OPTIONS),
        StreamFeed("watchBalance", None, frozenset({StreamKind.BALANCES}), parse_balance,
                   options=ACCOUNT_OPTIONS),
    ),
    # bybit-exchange.github.io/docs/v5/rate-limit, "Websocket IP limit" (read 2026-12-06):
    # no more than 500 connections within a 5-minute window per IP. A spot subscribe
    # request holds at most 10 args (the v5 "Connect" page, read in an earlier session;
    # not in today's search index), so each connection carries at most 10.
    limits=StreamLimits(subscriptions_per_connection=10, connections_per_window=500,
                        connection_window_seconds=300),
)
