"""The stream hubs of a session's venues: one :class:`StreamHub` per venue that declares
streams (and only while ``[streams] enabled``), over the session's own REST clients. A live
session also hands each venue's :class:`~perpcarry.streams.account.AccountBook` (its orders,
positions and balances streams), which the hub starts where the venue has keys."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from perpcarry.config.loader import Config
from perpcarry.domain.types import CarryPair, MarketKind
from perpcarry.streams.account import AccountBook
from perpcarry.streams.hub import Listener, StreamHub
from perpcarry.venues.protocol import MarketDataVenue
from perpcarry.venues.streams import StreamKind

ACCOUNT_KINDS = tuple(kind for kind in StreamKind if kind.private)


class HubSet:
    """Hubs by venue id; a venue without streams has none (its data is polled)."""

    def __init__(self, config: Config, clients: dict[str, MarketDataVenue],
                 accounts: Callable[[str], AccountBook] | None = None) -> None:
        self.config = config
        self.clients = clients
        # The account book of a venue (a live session only): its account kinds streamed too.
        self.accounts = accounts
        self.hubs: dict[str, StreamHub] = {}
        self.listeners: list[Listener] = []

    def start(self, pairs: dict[str, Iterable[CarryPair]], kinds: Iterable[StreamKind]) -> None:
        """Subscribe ``kinds`` for the perps and spot markets of ``pairs`` (by venue). The
        clients' markets must be loaded (ccxt.pro is handed them)."""
        settings = self.config.settings.streams
        kinds = tuple(kinds)
        for venue_id, venue_pairs in pairs.items():
            spec = self.config.registry.venues[venue_id]
            if not settings.enabled or spec.streams is None or venue_id in self.hubs:
                continue
            venue_pairs = list(venue_pairs)
            account = self.accounts(venue_id) if self.accounts is not None else None
            hub = StreamHub(self.clients[venue_id], spec.streams, settings, account=account)
            hub.listeners.extend(self.listeners)
            hub.start({MarketKind.PERP: [p.perp.symbol for p in venue_pairs],
                       MarketKind.SPOT: [p.spot.symbol for p in venue_pairs]},
                      kinds + (ACCOUNT_KINDS if account is not None else ()))
            self.hubs[venue_id] = hub

    def get(self, venue_id: str) -> StreamHub | None:
        return self.hubs.get(venue_id)

    async def close(self) -> None:
        for hub in self.hubs.values():
            await hub.close()
