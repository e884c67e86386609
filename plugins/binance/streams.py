"""What Binance streams through ccxt.pro 4.5, and how its pushes read.

``watchMarkPrices`` subscribes ``<symbol>@markPrice@1s`` on fstream: each push carries the
mark (``p``), index (``i``), current funding rate (``r``) and next funding time (``T``), so
one feed serves marks and funding (ccxt has no ``watchFundingRates`` for Binance).
``watchBidsAsks`` subscribes ``<symbol>@bookTicker`` (spot and USDⓈ-M).

With credentials, the USDⓈ-M user-data stream: ccxt.pro 4.5 takes a listenKey from
``POST /fapi/v1/listenKey`` (kept alive by a ``PUT`` every 20 minutes) and connects to
``fstream…/private/ws?listenKey=…``; ``watchOrders`` reads its ``ORDER_TRADE_UPDATE``
events, ``watchPositions`` its ``ACCOUNT_UPDATE`` positions. Not streamed, so polled:
spot orders (ccxt 4.5 moved spot user data to the ws-api ``userDataStream.subscribe``
handshake, which our local test server does not speak yet) and balances (``ACCOUNT_UPDATE``
carries the wallet balance ``wb`` but no free balance, and a balance without its free part
is not made up).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from perpcarry.domain.parsing import best_bid_ask, decimal_field, optional_decimal, time_field
from perpcarry.domain.types import MarketKind
from perpcarry.streams.account import ccxt_order_state, parse_ccxt_position
from perpcarry.venues.orders import Fee
from perpcarry.venues.streams import (
    AccountUpdate,
    BookTick,
    FundingTick,
    MarkTick,
    OrderUpdate,
    StreamCapabilities,
    StreamFeed,
    StreamKind,
    StreamLimits,
    StreamUpdate,
)


def _event_time(raw: dict[str, Any], received: datetime) -> datetime:
    # Spot bookTicker pushes carry no event time; USDⓈ-M ones do (E).
    return time_field(raw, "E") if raw.get("E") is not None else received


def parse_mark_price(item: dict[str, Any], market: MarketKind, received: datetime
                     ) -> list[StreamUpdate]:
    """A ``markPriceUpdate`` push (ccxt keeps it in ``info``): mark and funding."""
    raw = item["info"]
    symbol, at = item["symbol"], _event_time(raw, received)
    return [MarkTick(symbol, at, decimal_field(raw, "p"), optional_decimal(raw, "i")),
            FundingTick(symbol, at, decimal_field(raw, "r"), time_field(raw, "T"))]


def parse_book_ticker(item: dict[str, Any], market: MarketKind, received: datetime
                      ) -> list[StreamUpdate]:
    """A ``bookTicker`` push: best bid ``b`` and ask ``a``."""
    raw = item["info"]
    bid, ask = best_bid_ask(raw, "b", "a")
    kind = StreamKind.SPOT_BOOK if market is MarketKind.SPOT else StreamKind.PERP_BOOK
    return [BookTick(item["symbol"], _event_time(raw, received), bid, ask, kind)]


async def parse_order(item: dict[str, Any], venue: Any, received: datetime
                      ) -> list[AccountUpdate]:
    """An ``ORDER_TRADE_UPDATE`` as ccxt's order, parsed as ``fetch_order``'s answer is.

    The fee is the event's own: its commission ``n`` is the last trade's only, a
    partial-fill update can go missing (ccxt #27412), and ccxt merges fees across updates
    of its cached order (a repeated event doubles it). So the fee is taken only when that
    one trade is the whole fill so far (``l`` == ``z``); otherwise it is left to the fee
    completion after the fill (``fees_pending``: a USDⓈ-M fee is never in base, so the
    fill itself is exact)."""
    state = await ccxt_order_state(item, venue)
    raw = item["info"]
    fees: tuple[Fee, ...] = ()
    if state.filled_quantity and Decimal(raw["l"]) == Decimal(raw["z"]) \
            and Decimal(raw["n"]) > 0:
        fees = (Fee(Decimal(raw["n"]), venue.exchange.safe_currency_code(raw["N"])),)
    return [OrderUpdate(replace(state, fees=fees,
                                fees_pending=bool(state.filled_quantity) and not fees))]


USER_DATA = (("type", "future"),)  # the USDⓈ-M user-data stream (ccxt's "linear")
# ccxt.pro would read positions over REST itself on subscribing (watchOrders too); the
# hub's reconcile does that, over the venue's REST client.
NO_SNAPSHOT = (("watchPositions", {"fetchPositionsSnapshot": False,
                                   "awaitPositionsSnapshot": False}),)

STREAMS = StreamCapabilities(
    feeds=(
        StreamFeed("watchMarkPrices", MarketKind.PERP,
                   frozenset({StreamKind.MARK, StreamKind.FUNDING}), parse_mark_price),
        StreamFeed("watchBidsAsks", MarketKind.SPOT, frozenset({StreamKind.SPOT_BOOK}),
                   parse_book_ticker),
        StreamFeed("watchBidsAsks", MarketKind.PERP, frozenset({StreamKind.PERP_BOOK}),
                   parse_book_ticker),
        StreamFeed("watchOrders", None, frozenset({StreamKind.ORDERS}), parse_order,
                   params=USER_DATA, options=NO_SNAPSHOT),
        StreamFeed("watchPositions", None, frozenset({StreamKind.POSITIONS}),
                   parse_ccxt_position, params=USER_DATA, options=NO_SNAPSHOT),
    ),
    # developers.binance.com, USDⓈ-M "Websocket Market Streams" (read 2026-12-06): at most
    # 1024 streams per connection, 10 incoming messages per second, 24 h per connection;
    # 300 connections per 5 minutes per IP (same page family, spot "WebSocket Limits").
    limits=StreamLimits(subscriptions_per_connection=1024, connections_per_window=300,
                        connection_window_seconds=300),
)
