"""The conformance suite every venue plugin runs against its own recordings.

Subclass :class:`VenueConformance` in a test module, set ``venue_id`` and
``cassette_dir``, and pytest collects the whole suite::

    class TestConformance(VenueConformance):
        venue_id = "hyperliquid"
        cassette_dir = Path(__file__).parents[1] / "cassettes"

Markets and the funding snapshot come from the plugin's registered offline snapshot.
``cassette_dir`` holds four recordings of the request(s) ``fetch_funding_snapshot()`` makes:
``error_rate_limit.json`` (HTTP 429 with Retry-After), ``error_maintenance.json``,
``error_truncated.json`` (a cut-off body) and ``error_missing_fields.json`` (entries with
missing, null or empty fields, an unknown symbol, or a rate outside the caps).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from perpcarry.ccxt.replay import replaying
from perpcarry.domain.errors import ExchangeUnavailable, InvalidResponse, RateLimitError, VenueError
from perpcarry.domain.types import FundingSnapshot, Market, MarketKind
from perpcarry.plugins.manager import load_registry
from perpcarry.venues.protocol import MarketDataVenue, VenueContext, VenueSpec, carry_pairs

SPOT_SYMBOL = re.compile(r"^[A-Z0-9]+/[A-Z0-9]+$")
PERP_SYMBOL = re.compile(r"^[A-Z0-9]+/([A-Z0-9]+):\1$")

ERROR_CASSETTES = {
    "error_rate_limit.json": RateLimitError,
    "error_maintenance.json": ExchangeUnavailable,
    "error_truncated.json": InvalidResponse,
}


@dataclass
class Recorded:
    markets: list[Market]
    snapshot: FundingSnapshot


class SleepRecorder:
    """Stands in for asyncio.sleep so retries are instant and their delays visible."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class VenueConformance:
    venue_id: ClassVar[str]
    cassette_dir: ClassVar[Path]

    # -- plumbing -------------------------------------------------------------------

    @classmethod
    def spec(cls) -> VenueSpec:
        registry = load_registry()
        assert cls.venue_id in registry.venues, f"no installed plugin registers {cls.venue_id}"
        return registry.venues[cls.venue_id]

    @classmethod
    def client(cls, cache_dir: Path, sleep: SleepRecorder | None = None) -> MarketDataVenue:
        spec = cls.spec()
        context = VenueContext(cache_dir=cache_dir, offline=True, sleep=sleep or SleepRecorder())
        return spec.factory(spec.config_model(enabled=True), context)

    @classmethod
    async def _load_markets(cls, client: MarketDataVenue) -> list[Market]:
        snapshot = cls.spec().offline_snapshot
        assert snapshot is not None, f"{cls.venue_id} registers no offline snapshot"
        with replaying(snapshot):
            return await client.load_markets()

    @pytest.fixture(scope="class")
    @classmethod
    def recorded(cls, tmp_path_factory) -> Recorded:
        async def run() -> Recorded:
            client = cls.client(tmp_path_factory.mktemp("conformance"))
            try:
                markets = await cls._load_markets(client)
                with replaying(cls.spec().offline_snapshot):
                    snapshot = await client.fetch_funding_snapshot()
                return Recorded(markets, snapshot)
            finally:
                await client.close()

        return asyncio.run(run())

    def _funding_under(self, cassette: str, tmp_path: Path, sleep: SleepRecorder):
        async def run():
            client = self.client(tmp_path, sleep)
            try:
                await self._load_markets(client)
                with replaying(self.cassette_dir / cassette):
                    return await client.fetch_funding_snapshot()
            finally:
                await client.close()

        return asyncio.run(run())

    # -- markets --------------------------------------------------------------------

    def test_markets_parse_into_market(self, recorded: Recorded):
        kinds = {m.kind for m in recorded.markets}
        assert kinds == {MarketKind.SPOT, MarketKind.PERP}
        for m in recorded.markets:
            assert isinstance(m, Market) and m.venue == self.venue_id
            assert m.quantity_step > 0 and m.price_tick > 0 and m.contract_size > 0
            assert m.min_quantity > 0

    def test_symbols_are_ccxt_unified(self, recorded: Recorded):
        for m in recorded.markets:
            pattern = SPOT_SYMBOL if m.kind is MarketKind.SPOT else PERP_SYMBOL
            assert pattern.match(m.symbol), m.symbol
            assert m.symbol.startswith(f"{m.base}/{m.quote}")

    def test_carry_pairs_found(self, recorded: Recorded):
        pairs = carry_pairs(recorded.markets)
        assert pairs, "no perp has a spot market in its settle currency"
        for pair in pairs:
            assert pair.spot.base == pair.perp.base and pair.spot.quote == pair.perp.settle

    # -- funding --------------------------------------------------------------------

    def test_every_perp_has_a_declared_interval(self, recorded: Recorded):
        declared = set(self.spec().capabilities.funding_intervals_hours)
        assert recorded.snapshot.quotes
        for quote in recorded.snapshot.quotes.values():
            assert quote.interval_hours in declared, (quote.symbol, quote.interval_hours)

    def test_quotes_are_for_listed_perps(self, recorded: Recorded):
        perps = {m.symbol for m in recorded.markets if m.kind is MarketKind.PERP}
        for symbol, quote in recorded.snapshot.quotes.items():
            assert symbol == quote.symbol and symbol in perps and quote.venue == self.venue_id

    def test_rates_lie_within_caps(self, recorded: Recorded):
        for q in recorded.snapshot.quotes.values():
            assert q.rate_cap is None or q.rate <= q.rate_cap, q
            assert q.rate_floor is None or q.rate >= q.rate_floor, q

    def test_next_funding_is_after_snapshot_and_on_interval_grid(self, recorded: Recorded):
        for q in recorded.snapshot.quotes.values():
            assert q.next_funding_time > q.timestamp, q
            seconds = round(q.next_funding_time.timestamp())
            assert seconds % (q.interval_hours * 3600) == 0, (q.symbol, q.next_funding_time)

    # -- errors ---------------------------------------------------------------------

    @pytest.mark.parametrize("cassette", sorted(ERROR_CASSETTES))
    def test_error_cassettes_translate(self, cassette: str, tmp_path: Path):
        sleep = SleepRecorder()
        with pytest.raises(VenueError) as caught:
            self._funding_under(cassette, tmp_path, sleep)
        assert type(caught.value) is ERROR_CASSETTES[cassette], caught.value
        assert caught.value.venue == self.venue_id
        if isinstance(caught.value, RateLimitError):
            assert caught.value.retry_after is not None, "Retry-After was not read"
            assert sleep.delays and min(sleep.delays) >= caught.value.retry_after

    def test_missing_fields_skip_symbols_and_never_zero(self, tmp_path: Path):
        snapshot = self._funding_under("error_missing_fields.json", tmp_path, SleepRecorder())
        assert snapshot.skipped, "malformed entries must be skipped and reported"
        skipped = {s.symbol for s in snapshot.skipped}
        assert not skipped & set(snapshot.quotes)
        for s in snapshot.skipped:
            assert s.venue == self.venue_id and s.reason
