from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from perpcarry.domain.types import MarketKind
from perpcarry.testing import HistoryCase, VenueConformance


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class TestConformance(VenueConformance):
    venue_id = "okx"
    cassette_dir = Path(__file__).parents[1] / "cassettes" / "okx"
    snapshot_requests = 2  # public/funding-rate?instId=ANY + public/mark-price (replay only)
    book_cassettes: ClassVar[dict[MarketKind, str]] = {
        MarketKind.SPOT: "tickers_spot_single_real.json"}
    history_cases = (
        # 565 settlements, 400 a page: two pages
        HistoryCase("HYPE/USDT:USDT", utc(2025, 12, 3), utc(2026, 3, 7, 8), 4),
        HistoryCase("BTC/USDT:USDT", utc(2025, 12, 3), utc(2026, 3, 7, 8), 8),
    )
