"""The perpcarry conformance kit, run exactly as a third-party plugin runs it."""

from pathlib import Path

from perpcarry.testing import VenueConformance


class TestConformance(VenueConformance):
    venue_id = "hyperliquid"
    cassette_dir = Path(__file__).parents[1] / "cassettes"
