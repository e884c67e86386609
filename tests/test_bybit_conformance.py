from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

from perpcarry.domain.types import MarketKind
from perpcarry.testing import HistoryCase, VenueConformance

T = datetime(2026, 2, 7, tzinfo=UTC)


class TestConformance(VenueConformance):
    venue_id = "bybit"
    cassette_dir = Path(__file__).parents[1] / "cassettes" / "bybit"
    snapshot_requests = 1  # tickers?category=linear
    book_cassettes: ClassVar[dict[MarketKind, str]] = {
        MarketKind.PERP: "tickers_linear_btcusdt_ccxt_static.json"}
    history_cases = (
        # 4h, 409 settlements, 200 a page: three pages
        HistoryCase("ORDI/USDT:USDT", datetime(2025, 12, 1, tzinfo=UTC), T, 4,
                    markets="history_paging.json"),
        # INJUSDT really went 8h -> 1h -> 8h in this window; two pages
        HistoryCase("INJ/USDT:USDT", datetime(2026, 2, 1, tzinfo=UTC),
                    datetime(2026, 3, 5, tzinfo=UTC), 8, markets="history_paging.json"),
        HistoryCase("BTC/USDT:USDT", T - timedelta(days=90), T - timedelta(days=30), 8,
                    markets="history_paging.json"),
    )
