"""What OKX streams through ccxt.pro 4.5, and how its pushes read.

``watchFundingRates`` subscribes the ``funding-rate`` channel (``fundingRate`` is the
current period's rate, paid at ``fundingTime``, as in the REST endpoint),
``watchMarkPrices`` the ``mark-price`` channel, ``watchBidsAsks`` ``bbo-tbt`` (best bid
and ask, tick by tick) for spot and swaps.

With credentials, the private stream (``wss://ws.okx.com:8443/ws/v5/private``, logged in
with ``{"op":"login","args":[{apiKey, passphrase, timestamp, sign}]}``): ``watchOrders``
subscribes the ``orders`` channel (every instrument type), ``watchPositions`` the
``positions`` channel, ``watchBalance`` the ``account`` channel, each parsed by the REST
path's own parsing (a push's objects have the v5 REST fields; swap sizes are in contracts
and converted with ``ctVal`` as in REST).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from perpcarry.domain.parsing import best_bid_ask, decimal_field, time_field
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


def parse_funding_rate(item: dict[str, Any], market: MarketKind, received: datetime
                       ) -> list[StreamUpdate]:
    """A ``funding-rate`` push (ccxt's funding-rate structure; the push in ``info``)."""
    raw = item["info"]
    return [FundingTick(item["symbol"], time_field(raw, "ts"), decimal_field(raw, "fundingRate"),
                        time_field(raw, "fundingTime"))]


def parse_mark_price(item: dict[str, Any], market: MarketKind, received: datetime
                     ) -> list[StreamUpdate]:
    """A ``mark-price`` push: ``markPx`` at ``ts``."""
    raw = item["info"]
    return [MarkTick(item["symbol"], time_field(raw, "ts"), decimal_field(raw, "markPx"))]


def parse_bbo(item: dict[str, Any], market: MarketKind, received: datetime
              ) -> list[StreamUpdate]:
    """A ``bbo-tbt`` push as ccxt's bid/ask ticker."""
    bid, ask = best_bid_ask(item, "bid", "ask")
    kind = StreamKind.SPOT_BOOK if market is MarketKind.SPOT else StreamKind.PERP_BOOK
    at = time_field(item, "timestamp") if item.get("timestamp") is not None else received
    return [BookTick(item["symbol"], at, bid, ask, kind)]


async def parse_balance(item: dict[str, Any], venue: Any, received: datetime
                        ) -> list[AccountUpdate]:
    """A ``account`` push as ccxt's balance structure: the trading account's wallet."""
    return ccxt_balance_update(item, venue, Wallet.UNIFIED)


# No REST positions snapshot of ccxt.pro's own: the hub reconciles over the REST client.
ACCOUNT_OPTIONS = (("watchPositions", {"fetchPositionsSnapshot": False,
                                       "awaitPositionsSnapshot": False}),)

STREAMS = StreamCapabilities(
    feeds=(
        StreamFeed("watchFundingRates", MarketKind.PERP, frozenset({StreamKind.FUNDING}),
                   parse_funding_rate),
        StreamFeed("watchMarkPrices", MarketKind.PERP, frozenset({StreamKind.MARK}),
                   parse_mark_price),
        StreamFeed("watchBidsAsks", MarketKind.SPOT, frozenset({StreamKind.SPOT_BOOK}),
                   parse_bbo),
        StreamFeed("watchBidsAsks", MarketKind.PERP, frozenset({StreamKind.PERP_BOOK}),
                   parse_bbo),
        StreamFeed("watchOrders", None, frozenset({StreamKind.ORDERS}), parse_ccxt_order,
                   options=ACCOUNT_OPTIONS),
        StreamFeed("watchPositions", None, frozenset({StreamKind.POSITIONS}),
                   parse_ccxt_position, options=ACCOUNT_OPTIONS),
        StreamFeed("watchBalance", None, frozenset({StreamKind.BALANCES}), parse_balance,
                   options=ACCOUNT_OPTIONS),
    ),
    # OKX API v5 "WebSocket" overview, as summarised in nautilus_trader's OKX adapter docs
    # (read 2026-12-06): 3 connection requests per second per IP, 480
    # subscribe/unsubscribe/login requests per connection per hour, 30 connections per
    # channel per sub-account.
    limits=StreamLimits(subscriptions_per_connection=480, connections_per_window=3,
                        connection_window_seconds=1, subscriptions_per_hour=480),
)
