from pathlib import Path

from perpcarry.testing import VenueConformance


class TestConformance(VenueConformance):
    venue_id = "binance"
    cassette_dir = Path(__file__).parents[1] / "cassettes" / "binance"
