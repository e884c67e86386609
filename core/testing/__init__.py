"""Reusable test kits for venue plugins, first- or third-party: the market-data half
(docs/writing-a-plugin.md) and the order half (docs/orders.md)."""

from perpcarry.testing.conformance import VenueConformance
from perpcarry.testing.orders import OrderHarness, OrderVenueConformance
from perpcarry.testing.support import HistoryCase

__all__ = ["HistoryCase", "OrderHarness", "OrderVenueConformance", "VenueConformance"]
