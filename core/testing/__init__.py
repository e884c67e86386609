"""Reusable test kit for venue plugins, first- or third-party; see docs/writing-a-plugin.md."""

from perpcarry.testing.conformance import VenueConformance
from perpcarry.testing.support import HistoryCase

__all__ = ["HistoryCase", "VenueConformance"]
