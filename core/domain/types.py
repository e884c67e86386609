"""Domain types shared by core and every plugin.

Small, immutable and typed. Prices, quantities, rates and fees are ``Decimal`` because
they sit on the order path; analytics convert to float arrays where they need speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple

from loguru import logger


def decimal_text(value: Decimal | None) -> str | None:
    """A decimal as the JSON documents and pages give it: exact and never in exponent
    notation (``0E-8`` is ``0.00000000``, ``1E-7`` is ``0.0000001``); None stays None."""
    return None if value is None else format(value, "f")


class MarketKind(StrEnum):
    SPOT = "spot"
    PERP = "perp"


@dataclass(frozen=True, slots=True)
class Market:
    """One tradable instrument on one venue.

    ``symbol`` is ccxt's unified symbol (``BTC/USDT`` spot, ``BTC/USDT:USDT`` linear perp);
    ``venue_symbol`` is the venue's own id (``BTCUSDT``, ``BTC-USDT-SWAP``).
    Quantities (``quantity_step``, ``min_quantity``, ``max_*quantity``) are in the venue's
    order unit:
    base currency for spot and for Binance/Bybit perps, contracts for OKX swaps.
    ``contract_size`` converts one order unit to base currency (1 for spot).
    """

    venue: str
    symbol: str
    venue_symbol: str
    base: str
    quote: str
    settle: str | None
    kind: MarketKind
    contract_size: Decimal
    quantity_step: Decimal
    min_quantity: Decimal
    min_notional: Decimal | None
    price_tick: Decimal
    # Largest quantity of one order (order units); market orders may have a smaller one
    # (Binance MARKET_LOT_SIZE). None where the venue publishes none.
    max_quantity: Decimal | None = None
    max_market_quantity: Decimal | None = None


@dataclass(frozen=True, slots=True)
class FundingQuote:
    """The funding rate of one perp at one instant. A rate never travels without its interval.

    ``rate`` is per interval as a fraction (0.0001 = 0.01 %). ``is_predicted`` is True when
    the rate is the current-period one still moving until ``next_funding_time`` and False
    when it is the last settled rate. ``rate_cap``/``rate_floor`` are the venue's published
    limits for this symbol, None where the venue does not publish them.
    """

    venue: str
    symbol: str
    rate: Decimal
    interval_hours: int
    next_funding_time: datetime
    mark_price: Decimal | None
    index_price: Decimal | None
    is_predicted: bool
    rate_cap: Decimal | None
    rate_floor: Decimal | None
    timestamp: datetime

    @property
    def last_settlement(self) -> datetime:
        """When the period before ``next_funding_time`` settled: the newest settlement the
        venue's history can hold."""
        return self.next_funding_time - timedelta(hours=self.interval_hours)


class FundingRecord(NamedTuple):
    """One settled funding payment from a venue's history.

    A named tuple, unlike the other domain types: a cold scan builds ~10,000 of them, and a
    tuple is built in under half the time of a frozen dataclass (whose every field is set
    through ``object.__setattr__``). Immutable all the same."""

    venue: str
    symbol: str
    funding_time: datetime
    rate: Decimal
    mark_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class BookTop:
    """Best bid and ask of one market, with 24h quote volume where the venue reports it."""

    venue: str
    symbol: str
    bid: Decimal
    ask: Decimal
    bid_size: Decimal | None
    ask_size: Decimal | None
    timestamp: datetime
    quote_volume_24h: Decimal | None = None


class FeeSource(StrEnum):
    ACCOUNT = "account"
    DEFAULT = "default"
    CONFIG = "config"


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """Maker and taker fees (fractions of notional) for spot and perp on one venue."""

    venue: str
    spot_maker: Decimal
    spot_taker: Decimal
    perp_maker: Decimal
    perp_taker: Decimal
    source: FeeSource
    source_detail: str

    def describe(self) -> str:
        return f"{self.source.value}: {self.source_detail}"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A symbol left out of a result, and why. Skips are counted and reported, never silent."""

    venue: str
    symbol: str
    reason: str


@dataclass(frozen=True, slots=True)
class FundingSnapshot:
    venue: str
    quotes: dict[str, FundingQuote]
    skipped: tuple[Skipped, ...] = ()


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    venue: str
    kind: MarketKind
    books: dict[str, BookTop]
    skipped: tuple[Skipped, ...] = ()


@dataclass(frozen=True, slots=True)
class CarryPair:
    """A perp and the spot market of the same base, quoted in the perp's settle currency."""

    venue: str
    spot: Market
    perp: Market

    @property
    def base(self) -> str:
        return self.perp.base

    @property
    def label(self) -> str:
        return f"{self.perp.base}/{self.perp.settle}"


@dataclass(slots=True)
class SkipLog:
    """Collects skipped symbols while a plugin parses a response."""

    venue: str
    entries: list[Skipped] = field(default_factory=list)

    def skip(self, symbol: str, reason: str) -> None:
        # Counted here and summarised by the caller; one line per symbol only on request.
        logger.info("{}: skipping {}: {}", self.venue, symbol, reason)
        self.entries.append(Skipped(self.venue, symbol, reason))
