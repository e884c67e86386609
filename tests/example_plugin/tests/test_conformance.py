"""The perpcarry conformance kit, run exactly as a third-party plugin runs it."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import perpcarry_example_hyperliquid

from perpcarry.testing import HistoryCase, VenueConformance

T = datetime(2025, 4, 17, 12, tzinfo=UTC)
SNAPSHOT = Path(perpcarry_example_hyperliquid.__file__).parent / "snapshot" / "snapshot.json"


class TestConformance(VenueConformance):
    venue_id = "hyperliquid"
    cassette_dir = Path(__file__).parents[1] / "cassettes"
    snapshot_requests = 1  # {"type": "metaAndAssetCtxs"}
    # No book_cassettes: the venue declares bulk_books=False.
    history_cases = (
        # 721 hourly settlements, 500 a page: two pages (recorded in the offline snapshot)
        HistoryCase("BTC/USDC:USDC", T - timedelta(days=30), T, 1, cassette=SNAPSHOT),
        HistoryCase("ETH/USDC:USDC", T - timedelta(days=30), T, 1, cassette=SNAPSHOT),
    )
