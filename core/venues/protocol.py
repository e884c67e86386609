"""What a venue plugin implements, in one file.

A venue plugin registers a :class:`VenueSpec` through the ``register_venues`` hook. Its
``factory`` builds a client satisfying :class:`MarketDataVenue`. Plugins built on ccxt
subclass ``perpcarry.ccxt.venue.CcxtVenue``, which supplies the transport, error
translation, rate limiting, market cache and funding-history paging and cache; a plugin
then writes only its venue-specific endpoints and parsing.

The account and order half of a venue is in :mod:`perpcarry.venues.orders`; execution
strategies (``register_executors``) in :mod:`perpcarry.execution.engine`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from perpcarry.config.settings import VenueConfig
from perpcarry.domain.types import (
    BookSnapshot,
    CarryPair,
    FeeSchedule,
    FundingRecord,
    FundingSnapshot,
    Market,
    MarketKind,
)
from perpcarry.venues.orders import OrderCapabilities
from perpcarry.venues.streams import StreamCapabilities

if TYPE_CHECKING:  # polars loads only when a history file is read, not with the plugins
    import polars as pl


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class VenueContext:
    """Side effects a venue client may use, injected so tests control them.

    ``base_url`` points every REST host of the venue at one address (the local replay
    server of ``bench/scan.py``). ``offline`` disables the on-disk caches (markets,
    responses, funding history) so a replay never reads or writes the user's cache.
    """

    cache_dir: Path
    clock: Callable[[], datetime] = utc_now
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    offline: bool = False
    base_url: str | None = None


def fixed_clock(instant: datetime) -> Callable[[], datetime]:
    """A clock that always reads ``instant``: the clock of a replayed session."""
    return lambda: instant


def offline_context(spec: VenueSpec, cache_dir: Path, **overrides) -> VenueContext:
    """The context a replay of ``spec.offline_snapshot`` runs in: offline (no on-disk
    caches) and the clock pinned to ``spec.offline_instant``."""
    return VenueContext(cache_dir=cache_dir, offline=True,
                        clock=fixed_clock(spec.offline_instant), **overrides)


@dataclass(frozen=True)
class VenueCapabilities:
    """What a venue declares it can do; core reads this instead of probing with try/except."""

    spot: bool
    linear_perp: bool
    bulk_funding: bool
    bulk_books: bool
    funding_history: bool
    funding_intervals_hours: tuple[int, ...]
    trading: bool = False


@runtime_checkable
class MarketDataVenue(Protocol):
    """The market-data half of a venue."""

    venue_id: str

    async def load_markets(self) -> list[Market]:
        """Spot and linear-perp markets; served from the on-disk cache while it is fresh."""

    async def fetch_funding_snapshot(self) -> FundingSnapshot:
        """Funding for every perp, in one bulk request per data kind, with real intervals."""

    async def fetch_book_tops(self, kind: MarketKind) -> BookSnapshot:
        """Best bid/ask (and 24h quote volume) of every market of ``kind`` in one request."""

    def prefetch_funding_history(self, symbols: Collection[str], span: timedelta) -> None:
        """A hint given before the funding snapshot is awaited: start reading the newest
        ``span`` of the locally cached history of ``symbols`` in the background, so that the
        ``fetch_funding_history`` calls that follow are answered sooner. A venue without a
        local cache does nothing."""

    async def fetch_funding_history(
        self, symbol: str, start: datetime, end: datetime
    ) -> list[FundingRecord]:
        """Settled funding of one perp in [start, end], from the local cache plus what is new."""

    async def fetch_fee_schedule(self) -> FeeSchedule | None:
        """The account's own fee rates when credentials are configured, else None."""

    async def flush_funding_history(self) -> None:
        """Write the history fetched since the last call to the local cache. A scan calls
        it once every venue's data are in (``close`` must write it too). A venue without a
        local cache does nothing."""

    async def close(self) -> None:
        """Write what the local cache lacks (see ``flush_funding_history``), release
        connections."""


@dataclass(frozen=True)
class VenueSpec:
    """A venue as a plugin registers it."""

    venue_id: str
    display_name: str
    config_model: type[VenueConfig]
    capabilities: VenueCapabilities
    factory: Callable[[VenueConfig, VenueContext], MarketDataVenue]
    # A recorded HTTP session (vcrpy cassette) replayed by ``--offline``; None if none ships.
    offline_snapshot: Path | None = None
    # What the venue's order half offers (wallets, order types); None: market data only.
    order_capabilities: OrderCapabilities | None = None
    # The instant that session stands for (timezone-aware; required with a snapshot).
    # Replayed, the venue's clock reads this instant: a request parameter derived from the
    # clock (an end time, a page number) is then the recorded one on any day.
    offline_instant: datetime | None = None
    # What the venue streams over websockets (perpcarry.venues.streams); None: REST only.
    streams: StreamCapabilities | None = None
    # Set by core when the spec is registered: the plugin that owns it.
    plugin: str = field(default="", compare=False)


@runtime_checkable
class HistorySource(Protocol):
    """A funding-history file format the backtest imports (``perpcarry backtest --data``),
    registered through ``register_history_sources``. Core reads its own formats (its
    parquet, the plugins' SQLite cache, multi-venue datasets whose rows name their venue);
    a format only one venue writes belongs to that venue's plugin."""

    # Shown in "unknown funding data format (known: ...)" and stamped on every row's
    # ``source`` column unless the loader sets its own.
    name: str

    def recognises(self, path: Path) -> bool:
        """Whether ``path`` is in this format, judged by its content (columns, keys) rather
        than its file name wherever the content can tell. Cheap: read a header, not rows."""

    def load(self, path: Path) -> pl.DataFrame | None:
        """The file as ``perpcarry.backtest.history.HISTORY_SCHEMA`` rows (build them with
        ``perpcarry.backtest.history.normalise``); None for a companion file that holds no
        funding (prices another file's loader reads beside it). Raise
        ``perpcarry.backtest.history.DataFormatError`` naming the file for bad content."""


@runtime_checkable
class FeeModel(Protocol):
    """Resolves the fee schedule of one venue."""

    venue_id: str

    async def fee_schedule(
        self, config: VenueConfig, venue: MarketDataVenue | None
    ) -> FeeSchedule:
        """The schedule to use: account rates, a config override, or the default table."""


def carry_pairs(markets: list[Market]) -> list[CarryPair]:
    """Perps whose base also trades spot against the perp's settle currency on the venue."""
    spots = {(m.base, m.quote): m for m in markets if m.kind is MarketKind.SPOT}
    pairs = []
    for perp in markets:
        if perp.kind is not MarketKind.PERP:
            continue
        spot = spots.get((perp.base, perp.settle))
        if spot is not None:
            pairs.append(CarryPair(perp.venue, spot, perp))
    return sorted(pairs, key=lambda p: p.perp.symbol)
