"""The base class's history paging, on any venue: whatever the settlement times (1h, 4h and
8h mixed, jittered), the page size and the direction, paging returns exactly the settlements
inside the window, once each; a page answering a window it ignored is an error."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perpcarry.ccxt.venue import CcxtVenue
from perpcarry.config.settings import VenueConfig
from perpcarry.domain.errors import InvalidResponse
from perpcarry.domain.types import FundingRecord, Market, MarketKind
from perpcarry.venues.protocol import VenueContext

HOUR_MS = 3_600_000
MARKET = Market("memory", "BTC/USDT:USDT", "BTCUSDT", "BTC", "USDT", "USDT", MarketKind.PERP,
                Decimal(1), Decimal("0.001"), Decimal("0.001"), None, Decimal("0.1"))


class MemoryVenue(CcxtVenue):
    """Serves history pages from a list in memory, as a venue's endpoint would."""

    venue_id = "memory"
    ccxt_id = "binance"  # only constructed; nothing is sent
    market_types = ("linear",)
    weight_budgets: ClassVar[dict[str, int]] = {"default": 1200}
    market_requests: ClassVar[dict[str, tuple[int, str]]] = {}
    history_page_limit = 10
    history_paging = "forward"

    def __init__(self, context: VenueContext) -> None:
        super().__init__(VenueConfig(), context)
        self.times_ms: list[int] = []
        self.ignore_window = False

    async def fetch_history_page(self, market, start_ms, end_ms):
        if self.ignore_window:  # its first page, whatever window was asked
            inside = self.times_ms
        else:
            inside = [t for t in self.times_ms if start_ms <= t <= end_ms]
        limit = self.history_page_limit
        page = inside[:limit] if self.history_paging == "forward" else inside[-limit:]
        return [FundingRecord(self.venue_id, market.symbol,
                              datetime.fromtimestamp(t / 1000, UTC), Decimal("0.0001"))
                for t in page]

    async def fetch_funding_snapshot(self):
        raise NotImplementedError

    async def fetch_book_tops(self, kind):
        raise NotImplementedError


@pytest.fixture(scope="module")
def venue(tmp_path_factory):
    return MemoryVenue(VenueContext(cache_dir=tmp_path_factory.mktemp("memory"), offline=True))


settlement_times = st.lists(
    st.tuples(st.sampled_from([1, 4, 8]), st.integers(0, 20)),  # interval, jitter in ms
    min_size=0, max_size=120,
).map(lambda steps: [sum(h for h, _ in steps[:i + 1]) * HOUR_MS + jitter
                     for i, (_, jitter) in enumerate(steps)])


@settings(max_examples=150, deadline=None)
@given(times=settlement_times, limit=st.integers(1, 25),
       direction=st.sampled_from(["forward", "backward"]),
       window=st.tuples(st.integers(0, 800), st.integers(0, 800)))
def test_paging_returns_every_settlement_in_the_window_once(venue, times, limit, direction,
                                                             window):
    venue.times_ms, venue.ignore_window = times, False
    venue.history_page_limit, venue.history_paging = limit, direction
    start_ms, end_ms = sorted(hours * HOUR_MS for hours in window)
    records = asyncio.run(venue._page_history(MARKET, start_ms, end_ms))
    got = [round(r.funding_time.timestamp() * 1000) for r in records]
    assert got == [t for t in times if start_ms <= t <= end_ms]


def test_a_page_outside_the_window_is_an_error_not_an_empty_history(venue):
    """A venue that pages by something else than the window (a page number, say) and
    answers with its newest page: the window asked (older) gets records, none inside."""
    venue.times_ms = [t * 8 * HOUR_MS for t in range(100, 130)]
    venue.ignore_window, venue.history_page_limit, venue.history_paging = True, 10, "forward"
    with pytest.raises(InvalidResponse, match="none inside"):
        asyncio.run(venue._page_history(MARKET, 0, 50 * 8 * HOUR_MS))
