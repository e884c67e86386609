from pathlib import Path

from perpcarry.testing import VenueConformance


class TestConformance(VenueConformance):
    venue_id = "okx"
    cassette_dir = Path(__file__).parents[1] / "cassettes" / "okx"
