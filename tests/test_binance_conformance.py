from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from perpcarry.domain.types import MarketKind
from perpcarry.testing import HistoryCase, VenueConformance

T = datetime(2025, 9, 9, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class TestConformance(VenueConformance):
    venue_id = "binance"
    cassette_dir = Path(__file__).parents[1] / "cassettes" / "binance"
    snapshot_requests = 2  # premiumIndex + fundingInfo (no response cache offline)
    book_cassettes: ClassVar[dict[MarketKind, str]] = {
        MarketKind.SPOT: "books_spot_2024-01-05.json",
        # the documented example (not a perp): the request works, no book comes back
        MarketKind.PERP: "books_perp_docs-example.json"}
    history_cases = (
        # 1,098 settlements, 1,000 a page: two pages
        HistoryCase("BTC/USDT:USDT", utc(2024, 1, 1), utc(2025, 1, 1), 8,
                    markets="markets_full.json"),
        HistoryCase("FLM/USDT:USDT", utc(2025, 8, 10), T, 4, markets="markets_full.json"),
    )
