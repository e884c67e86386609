"""Between two cycles of ``perpcarry run``: a held perp's mark moving fast wakes the loop, so
the risk monitor checks margins within seconds instead of at the next cadence.

:class:`MarkAlarm` listens to the venues' :class:`~perpcarry.streams.hub.StreamHub` s. A
mark that moved ``[streams] wake_on_mark_move`` or more from the mark the last cycle saw is
a decision: recorded, logged, and the loop's ``sooner`` event set. Only a mark that may
drive a decision counts: a pushed one while its feed is live (the hub hears nothing from a
stale feed) or one the venue's REST client answered, named as such.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal

from loguru import logger

from perpcarry.venues.streams import StreamKind, StreamUpdate


@dataclass(frozen=True)
class MarkDecision:
    """The alarm's verdict on one mark: the loop was woken."""

    venue: str
    symbol: str
    mark: Decimal
    reference: Decimal
    move: Decimal  # mark / reference - 1
    source: str  # "stream" | "rest"
    decided_at: float  # perf_counter() when decided (bench/stream.py measures from it)
    update: StreamUpdate


class MarkAlarm:
    """Wakes ``sooner`` when a watched perp's mark moves ``threshold`` or more."""

    def __init__(self, threshold: float, sooner: asyncio.Event | None = None) -> None:
        self.threshold = Decimal(repr(threshold))
        self.sooner = sooner or asyncio.Event()
        self.references: dict[tuple[str, str], Decimal] = {}
        self.decisions: list[MarkDecision] = []
        self.seen = 0

    def watch(self, venue: str, symbol: str, mark: Decimal) -> None:
        """Watch ``symbol`` on ``venue`` from ``mark`` (the mark the cycle acted on)."""
        self.references[(venue, symbol)] = mark

    def __call__(self, venue: str, update: StreamUpdate, source: str) -> None:
        """A hub listener: every accepted value of every watched venue passes here."""
        if update.kind is not StreamKind.MARK:
            return
        key = (venue, update.symbol)
        reference = self.references.get(key)
        if reference is None:
            return
        self.seen += 1
        move = update.mark_price / reference - 1
        if abs(move) < self.threshold:
            return
        decision = MarkDecision(venue, update.symbol, update.mark_price, reference, move,
                                source, time.perf_counter(), update)
        self.decisions.append(decision)
        # The move is acted on once: the next alarm counts from this mark.
        self.references[key] = update.mark_price
        logger.info("{}: {} mark {} moved {:+.2%} from {} ({}): waking the risk check",
                    venue, update.symbol, update.mark_price, float(move), reference, source)
        self.sooner.set()
