"""What the conformance kit is told and what it uses: recorded history cases, a stand-in for
``asyncio.sleep`` that records delays, and a spy that records which client methods core calls."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from perpcarry.venues.protocol import MarketDataVenue


@dataclass(frozen=True)
class HistoryCase:
    """One recorded ``fetch_funding_history(symbol, start, end)`` run: ``cassette`` (a name in
    ``cassette_dir``, or a path) answers its history requests, ``markets`` its market load
    (None: the offline snapshot). ``interval_hours`` is the longest interval the symbol
    settles on in the window: no two consecutive records may lie further apart."""

    symbol: str
    start: datetime
    end: datetime
    interval_hours: int
    cassette: str | Path = "history_paging.json"
    markets: str | Path | None = None



class SleepRecorder:
    """Stands in for asyncio.sleep so retries are instant and their delays visible."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class CallSpy:
    """Wraps a venue client and records which of its methods core calls."""

    def __init__(self, client: MarketDataVenue) -> None:
        self._client = client
        self.called: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if callable(attribute):
            self.called.add(name)
        return attribute
