"""``perpcarry run`` on streams: each cycle's market snapshot with the freshest marks and
spot prices; the held perps' streamed marks are decided on between cycles by
:class:`perpcarry.risk.watch.StreamRisk` (a listener on the same hubs).

:class:`StreamMarket` wraps the loop's REST source (:class:`perpcarry.run.market.ScanMarket`:
funding history, fees and the money math stay REST, read each cycle). Where a venue streams
marks and spot books and the streamed value is fresh (``[streams] max_age_seconds``, from a
live feed), it replaces the polled one; everything else keeps the REST value, and the
cycle's notes say how many of each, and, once per stale spell, which held perp has no fresh
streamed mark (nothing is decided on it between cycles then: the loop's cadence applies).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from perpcarry.run.market import MarketSnapshot, MarketSource
from perpcarry.streams.session import HubSet
from perpcarry.venues.streams import StreamKind

# The perp's book too: the executor's basis watch and the paper venue's perp fills read it.
KINDS = (StreamKind.MARK, StreamKind.FUNDING, StreamKind.SPOT_BOOK, StreamKind.PERP_BOOK)


class StreamMarket:
    """A :class:`MarketSource` reading streams where declared and fresh, REST otherwise."""

    def __init__(self, polled: MarketSource, hubs: HubSet, max_age: float,
                 held: Callable[[], set[tuple[str, str]]]) -> None:
        self.polled = polled
        self.hubs = hubs
        self.max_age = max_age
        self.held = held
        self._stale_told: set[tuple[str, str]] = set()

    async def snapshot(self, now: datetime) -> MarketSnapshot:
        snapshot = await self.polled.snapshot(now)
        pairs: dict[str, list] = {}
        for c in snapshot.candidates:
            pairs.setdefault(c.venue, []).append(c.pair)
        self.hubs.start(pairs, KINDS)  # the first cycle subscribes; later ones find them
        streamed: Counter[str] = Counter()
        held = self.held()
        for i, c in enumerate(snapshot.candidates):
            hub = self.hubs.get(c.venue)
            mark = hub.fresh(StreamKind.MARK, c.pair.perp.symbol, self.max_age) if hub else None
            if mark is not None:
                snapshot.candidates[i] = dataclasses.replace(c, price=mark.mark_price)
                snapshot.pairs.mark[i] = float(mark.mark_price)
                streamed[c.venue] += 1
            book = hub.fresh(StreamKind.SPOT_BOOK, c.pair.spot.symbol, self.max_age) \
                if hub else None
            if book is not None:
                snapshot.pairs.spot[i] = float((book.bid + book.ask) / 2)
            if c.key in held and hub is not None:
                self._held_note(c, mark is not None, snapshot.notes)
        for venue, count in sorted(Counter(c.venue for c in snapshot.candidates).items()):
            how = "streams" if self.hubs.get(venue) else "no stream declared or [streams] off"
            snapshot.notes.append(f"{venue}: {streamed[venue]} of {count} marks streamed and "
                                  f"fresh, the rest from REST ({how})")
        return snapshot

    def _held_note(self, c, fresh: bool, notes: list[str]) -> None:
        """Once per stale spell: a held perp without a fresh streamed mark."""
        if fresh:
            self._stale_told.discard(c.key)
        elif c.key not in self._stale_told:
            self._stale_told.add(c.key)
            notes.append(f"{c.venue}: {c.pair.perp.symbol} has no fresh streamed mark: the "
                         "stream risk decides nothing on it; the risk monitor's checks at "
                         "the loop's cadence (danger_check_seconds near danger) apply")
