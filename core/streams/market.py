"""``perpcarry run`` on streams: each cycle's market snapshot with the freshest marks and
spot prices, and held pairs watched between cycles.

:class:`StreamMarket` wraps the loop's REST source (:class:`perpcarry.run.market.ScanMarket`:
funding history, fees and the money math stay REST, read each cycle). Where a venue streams
marks and spot books and the streamed value is fresh (``[streams] max_age_seconds``, from a
live feed), it replaces the polled one; everything else keeps the REST value, and the
cycle's notes say how many of each. Held pairs are handed to the :class:`MarkAlarm`, which
wakes the loop early when their mark moves.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from perpcarry.run.market import MarketSnapshot, MarketSource
from perpcarry.streams.alarm import MarkAlarm
from perpcarry.streams.session import HubSet
from perpcarry.venues.streams import StreamKind

KINDS = (StreamKind.MARK, StreamKind.FUNDING, StreamKind.SPOT_BOOK)


class StreamMarket:
    """A :class:`MarketSource` reading streams where declared and fresh, REST otherwise."""

    def __init__(self, polled: MarketSource, hubs: HubSet, max_age: float,
                 alarm: MarkAlarm, held: Callable[[], set[tuple[str, str]]]) -> None:
        self.polled = polled
        self.hubs = hubs
        self.max_age = max_age
        self.alarm = alarm
        self.held = held
        hubs.listeners.append(alarm)

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
            if c.key in held and snapshot.candidates[i].price is not None:
                self.alarm.watch(c.venue, c.pair.perp.symbol, snapshot.candidates[i].price)
        for venue, count in sorted(Counter(c.venue for c in snapshot.candidates).items()):
            how = "streams" if self.hubs.get(venue) else "no stream declared or [streams] off"
            snapshot.notes.append(f"{venue}: {streamed[venue]} of {count} marks streamed and "
                                  f"fresh, the rest from REST ({how})")
        return snapshot
