"""What Binance streams through ccxt.pro 4.5, and how its pushes read.

``watchMarkPrices`` subscribes ``<symbol>@markPrice@1s`` on fstream: each push carries the
mark (``p``), index (``i``), current funding rate (``r``) and next funding time (``T``), so
one feed serves marks and funding (ccxt has no ``watchFundingRates`` for Binance).
``watchBidsAsks`` subscribes ``<symbol>@bookTicker`` (spot and USDⓈ-M). Orders, positions
and balances (the user-data stream) are polled over REST until an account feed lands.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from perpcarry.domain.parsing import best_bid_ask, decimal_field, optional_decimal, time_field
from perpcarry.domain.types import MarketKind
from perpcarry.venues.streams import (
    BookTick,
    FundingTick,
    MarkTick,
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


STREAMS = StreamCapabilities(
    feeds=(
        StreamFeed("watchMarkPrices", MarketKind.PERP,
                   frozenset({StreamKind.MARK, StreamKind.FUNDING}), parse_mark_price),
        StreamFeed("watchBidsAsks", MarketKind.SPOT, frozenset({StreamKind.SPOT_BOOK}),
                   parse_book_ticker),
        StreamFeed("watchBidsAsks", MarketKind.PERP, frozenset({StreamKind.PERP_BOOK}),
                   parse_book_ticker),
    ),
    # developers.binance.com, USDⓈ-M "Websocket Market Streams" (read 2026-12-06): at most
    # 1024 streams per connection, 10 incoming messages per second, 24 h per connection;
    # 300 connections per 5 minutes per IP (same page family, spot "WebSocket Limits").
    limits=StreamLimits(subscriptions_per_connection=1024, connections_per_window=300,
                        connection_window_seconds=300),
)
