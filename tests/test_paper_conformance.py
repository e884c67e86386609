"""The order conformance kit, run on the paper twins of Binance and Bybit over their bundled
offline snapshots (real markets, funding and marks; no books, so fills are mark+2bps)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from perpcarry.ccxt.replay import replaying
from perpcarry.config.loader import load_config
from perpcarry.paper import PaperFaults, open_paper_venue
from perpcarry.testing import OrderHarness, OrderVenueConformance
from perpcarry.testing.orders import CHECKS
from perpcarry.venues.protocol import VenueContext


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@asynccontextmanager
async def paper_harness(venue_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        base: str = "BTC"):
    """A fresh paper account of ``venue_id`` in ``tmp_path``, its clock at the snapshot's
    time, replaying the snapshot for as long as the harness is in use."""
    monkeypatch.setenv("PERPCARRY_DATA_DIR", str(tmp_path / "data"))
    config = load_config(None)
    spec = config.registry.venues[venue_id]
    clock = Clock(datetime.fromtimestamp(0).astimezone())
    faults = PaperFaults()
    with replaying(spec.offline_snapshot):
        venue = open_paper_venue(config, venue_id, VenueContext(
            cache_dir=tmp_path / "cache", offline=True, clock=clock), faults)
        try:
            quote = (await venue.view.funding()).quotes[f"{base}/USDT:USDT"]
            clock.now = quote.timestamp
            markets = await venue.view.markets()
            spot, perp = markets[f"{base}/USDT"], markets[f"{base}/USDT:USDT"]

            async def settle_funding() -> Decimal:
                clock.now = quote.next_funding_time + timedelta(minutes=1)
                return quote.rate

            harness = OrderHarness(venue, spec.order_capabilities, spot, perp,
                                   quote.mark_price, faults=faults,
                                   settle_funding=settle_funding)
            if quote.mark_price is None:
                # Nothing can be priced: every check is declared (price stays unknown).
                harness.unsupported = dict.fromkeys(CHECKS, (
                    f"the bundled {venue_id} snapshot has no mark price and no book for "
                    f"{perp.symbol}, so no paper order has a price offline"))
            else:
                harness.unsupported = _untestable_size_rules(harness, venue_id)
            yield harness
        finally:
            await venue.close()


def _untestable_size_rules(harness: OrderHarness, venue_id: str) -> dict[str, str]:
    """The size-rule checks the snapshot's markets give nothing to test."""
    unsupported = {}
    if harness.min_notional_market() is None:
        unsupported["min_notional"] = (
            f"{venue_id} {harness.spot.base}: no minimum notional above the minimum "
            "quantity's worth on either market")
    if harness.max_quantity_market() is None:
        unsupported["max_quantity"] = (
            f"{venue_id} {harness.spot.base}: neither market publishes a maximum quantity")
    return unsupported


class TestPaperBinance(OrderVenueConformance):
    @pytest.fixture(autouse=True)
    def _monkeypatch(self, monkeypatch):
        self.monkeypatch = monkeypatch

    def order_harness(self, tmp_path):
        return paper_harness("binance", tmp_path, self.monkeypatch)


class TestPaperBybit(OrderVenueConformance):
    @pytest.fixture(autouse=True)
    def _monkeypatch(self, monkeypatch):
        self.monkeypatch = monkeypatch

    def order_harness(self, tmp_path):
        return paper_harness("bybit", tmp_path, self.monkeypatch)


class TestPaperOkx(OrderVenueConformance):
    """OKX perps trade in contracts (0.01 BTC): base units must convert exactly."""

    @pytest.fixture(autouse=True)
    def _monkeypatch(self, monkeypatch):
        self.monkeypatch = monkeypatch

    def order_harness(self, tmp_path):
        return paper_harness("okx", tmp_path, self.monkeypatch)


class _NoFaults(OrderVenueConformance):
    """A harness that gives no fault control, declaring ``declared``."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.declared: dict[str, str] = {}

    @asynccontextmanager
    async def order_harness(self, tmp_path):
        async with paper_harness("bybit", tmp_path, self.monkeypatch) as harness:
            harness.faults = None
            harness.unsupported = dict(self.declared)
            yield harness


def test_kit_fails_a_check_the_harness_lacks_without_declaring_it(tmp_path, monkeypatch):
    with pytest.raises(AssertionError, match="declare outcome_unknown unsupported"):
        _NoFaults(monkeypatch).test_outcome_unknown(tmp_path)


def test_kit_reports_a_declared_unsupported_check_with_its_reason(tmp_path, monkeypatch):
    kit = _NoFaults(monkeypatch)
    kit.declared = {"outcome_unknown": "a recording cannot lose an answer"}
    with pytest.raises(pytest.skip.Exception, match="a recording cannot lose an answer"):
        kit.test_outcome_unknown(tmp_path)


def test_kit_refuses_a_declaration_it_does_not_know(tmp_path, monkeypatch):
    kit = _NoFaults(monkeypatch)
    kit.declared = {"outcome_unknwon": "typo"}
    with pytest.raises(AssertionError, match="unknown checks"):
        kit.test_client_id_round_trip(tmp_path)


def test_docs_cover_every_check_and_paper_setting():
    from perpcarry.config.settings import PaperConfig

    root = Path(__file__).parents[1]
    guide = (root / "docs" / "orders.md").read_text()
    example = (root / "perpcarry.example.toml").read_text()
    for check in CHECKS:
        assert f"`{check}`" in guide, f"docs/orders.md does not explain {check}"
    for name in PaperConfig.model_fields:
        assert name in guide and name in example, f"[paper] {name} is undocumented"
    assert "(orders.md)" in (root / "docs" / "writing-a-plugin.md").read_text()
