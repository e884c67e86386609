"""The conformance suite every venue plugin runs against its own recordings.

Subclass :class:`VenueConformance` in a test module, say what your recordings hold, and
pytest collects the whole suite::

    class TestConformance(VenueConformance):
        venue_id = "hyperliquid"
        cassette_dir = Path(__file__).parents[1] / "cassettes"
        snapshot_requests = 1
        history_cases = (HistoryCase("BTC/USDC:USDC", T - timedelta(days=30), T, 1),)

Markets, funding and the whole offline scan come from the plugin's registered offline
snapshot, replayed with the clock pinned to its ``offline_instant``. ``cassette_dir`` holds
the recordings of the request(s) ``fetch_funding_snapshot()`` makes under failure:
``error_rate_limit*.json`` (HTTP 429 or the venue's rate-limit code, with or without
Retry-After), ``error_maintenance.json``, ``error_truncated.json`` (a cut-off body) and
``error_missing_fields.json`` (entries with missing, null or empty fields, an unknown symbol,
or a rate outside the caps); plus what ``book_cassettes`` and ``history_cases`` name.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import ClassVar

import pytest

from perpcarry.ccxt.ratelimit import backoff_delay
from perpcarry.ccxt.replay import replaying
from perpcarry.ccxt.venue import MAX_RETRIES, SETTLEMENT_PUBLISH_LAG
from perpcarry.domain.errors import ExchangeUnavailable, InvalidResponse, RateLimitError, VenueError
from perpcarry.domain.parsing import to_ms
from perpcarry.domain.types import FundingSnapshot, Market, MarketKind
from perpcarry.plugins.manager import load_registry
from perpcarry.testing.support import CallSpy, HistoryCase, SleepRecorder
from perpcarry.venues.protocol import (
    MarketDataVenue,
    VenueContext,
    VenueSpec,
    carry_pairs,
    fixed_clock,
    offline_context,
)

SPOT_SYMBOL = re.compile(r"^[A-Z0-9]+/[A-Z0-9]+$")
PERP_SYMBOL = re.compile(r"^[A-Z0-9]+/([A-Z0-9]+):\1$")

ERROR_CASSETTES = {
    "error_maintenance.json": ExchangeUnavailable,
    "error_truncated.json": InvalidResponse,
}
# What a capability declared False promises core never calls.
CAPABILITY_METHODS = {
    "bulk_books": ("fetch_book_tops",),
    "funding_history": ("prefetch_funding_history", "fetch_funding_history"),
}


@dataclass
class Recorded:
    markets: list[Market]
    snapshot: FundingSnapshot


class VenueConformance:
    venue_id: ClassVar[str]
    cassette_dir: ClassVar[Path]
    # HTTP requests one fetch_funding_snapshot() sends once markets are loaded (offline: no
    # response cache), as the plugin documents it; the kit counts what is really sent.
    snapshot_requests: ClassVar[int]
    # Market kind -> cassette (in cassette_dir) answering fetch_book_tops(kind), markets
    # from the offline snapshot. Required when the venue declares bulk_books.
    book_cassettes: ClassVar[dict[MarketKind, str]] = {}
    # Recorded history runs; required when the venue declares funding_history, and one of
    # them must span more than one page.
    history_cases: ClassVar[tuple[HistoryCase, ...]] = ()

    # -- plumbing -------------------------------------------------------------------

    @classmethod
    def spec(cls) -> VenueSpec:
        registry = load_registry()
        assert cls.venue_id in registry.venues, f"no installed plugin registers {cls.venue_id}"
        return registry.venues[cls.venue_id]

    @classmethod
    def client(cls, cache_dir: Path, sleep: SleepRecorder | None = None,
               clock_at: datetime | None = None) -> MarketDataVenue:
        """A client replaying recordings: offline, clock pinned to the snapshot's instant
        (or ``clock_at``), retries sleeping instantly."""
        spec = cls.spec()
        context = offline_context(spec, cache_dir, sleep=sleep or SleepRecorder())
        if clock_at is not None:
            context = replace(context, clock=fixed_clock(clock_at))
        return spec.factory(spec.config_model(enabled=True), context)

    @classmethod
    async def _load_markets(cls, client: MarketDataVenue, cassette: Path | None = None):
        snapshot = cls.spec().offline_snapshot
        assert snapshot is not None, f"{cls.venue_id} registers no offline snapshot"
        with replaying(cassette or snapshot):
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

    def _funding_under(self, cassette: Path, tmp_path: Path, sleep: SleepRecorder):
        async def run():
            client = self.client(tmp_path, sleep)
            try:
                await self._load_markets(client)
                with replaying(cassette):
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

    def test_market_load_charges_each_request_sent(self, tmp_path: Path):
        """ccxt's fetch_markets may send several requests: each one sent is counted and
        charged to its budget at the weight ``market_requests`` declares for its path."""
        charged: dict[str, float] = defaultdict(float)

        async def run():
            client = self.client(tmp_path)
            for name, budget in client.budgets.items():
                async def acquire(weight, name=name, real=budget.acquire):
                    charged[name] += weight
                    await real(weight)
                budget.acquire = acquire
            try:
                with replaying(self.spec().offline_snapshot) as cassette:
                    await client.load_markets()
                played = [request for index, (request, _) in enumerate(cassette.data)
                          for _ in range(cassette.play_counts[index])]
                return client, played
            finally:
                await client.close()

        client, played = asyncio.run(run())
        assert client.request_count == len(played) > 0
        expected: dict[str, float] = defaultdict(float)
        for request in played:
            weight, budget = next(cost for path, cost in client.market_requests.items()
                                  if request.path.endswith(path))
            expected[budget] += weight
        assert {k: v for k, v in charged.items() if v} == dict(expected)

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

    def test_snapshot_sends_the_declared_number_of_requests(self, tmp_path: Path):
        async def run() -> int:
            client = self.client(tmp_path)
            try:
                await self._load_markets(client)
                with replaying(self.spec().offline_snapshot) as cassette:
                    await client.fetch_funding_snapshot()
                return cassette.play_count
            finally:
                await client.close()

        assert asyncio.run(run()) == self.snapshot_requests

    def test_snapshot_read_while_the_markets_load_is_the_same(self, recorded: Recorded,
                                                              tmp_path: Path):
        """The scan asks a fresh client for its funding snapshot while its markets are still
        loading: the snapshot must be the one read after the markets, so a plugin reads its
        markets only after awaiting them."""
        async def run() -> FundingSnapshot:
            client = self.client(tmp_path)
            try:
                with replaying(self.spec().offline_snapshot):
                    _, snapshot = await asyncio.gather(client.load_markets(),
                                                       client.fetch_funding_snapshot())
                return snapshot
            finally:
                await client.close()

        assert asyncio.run(run()) == recorded.snapshot

    # -- capabilities ---------------------------------------------------------------

    def test_core_calls_no_method_a_capability_declares_missing(self):
        """The whole offline scan of this venue, through core, with a spy on the client:
        nothing a capability declared False stands for is called, and the snapshot replays
        completely (every quoted carry pair gets its history) with the clock reading the
        snapshot's instant, so on any day."""
        from perpcarry.config.loader import load_config
        from perpcarry.scan.engine import ScanOptions, run_scan

        config = load_config(None)
        spec = config.registry.venues[self.venue_id]
        spies: list[CallSpy] = []

        clocks: list[datetime] = []

        def spied(venue_config, context: VenueContext):
            clocks.append(context.clock())
            spies.append(CallSpy(spec.factory(venue_config, context)))
            return spies[-1]

        config.registry.venues[self.venue_id] = replace(spec, factory=spied)
        result = asyncio.run(run_scan(config, ScanOptions(offline=True,
                                                          venues=(self.venue_id,))))
        assert result.failures == {}
        assert clocks == [spec.offline_instant], "the replay's clock is not the snapshot's"
        (spy,) = spies
        for capability, methods in CAPABILITY_METHODS.items():
            if not getattr(spec.capabilities, capability):
                assert not spy.called & set(methods), (capability, spy.called)
        no_history = [s for s in result.skipped if s.reason.startswith("no funding history")]
        assert not no_history, no_history[:3]
        if not spec.capabilities.bulk_books:
            assert any("no books declared" in note for note in result.notes)

    def test_declared_books_work(self, recorded: Recorded, tmp_path: Path):
        """Declared bulk books come back for every recorded kind: both sides present,
        bid <= ask, for listed markets of that kind."""
        if not self.spec().capabilities.bulk_books:
            assert not self.book_cassettes, "books recorded for a venue declaring none"
            return
        assert self.book_cassettes, "bulk_books is declared: name the book_cassettes"

        async def run():
            client = self.client(tmp_path)
            try:
                await self._load_markets(client)
                snapshots = {}
                for kind, cassette in self.book_cassettes.items():
                    with replaying(self.cassette_dir / cassette):
                        snapshots[kind] = await client.fetch_book_tops(kind)
                return snapshots
            finally:
                await client.close()

        snapshots = asyncio.run(run())
        assert any(snapshot.books for snapshot in snapshots.values()), "no book at all"
        for kind, snapshot in snapshots.items():
            listed = {m.symbol for m in recorded.markets if m.kind is kind}
            assert snapshot.venue == self.venue_id and snapshot.kind is kind
            for symbol, top in snapshot.books.items():
                assert symbol in listed, symbol
                assert top.bid is not None and top.ask is not None, top
                assert 0 < top.bid <= top.ask, top

    # -- funding history ------------------------------------------------------------

    def _history(self, case: HistoryCase, tmp_path: Path, ignore_window: bool = False):
        """Run ``case`` with a spy on each page; with ``ignore_window`` the spy answers every
        page request with the case's recorded first page, whatever window was asked."""
        pages: list[list] = []

        async def run():
            # The case was recorded once its last settlement was published.
            client = self.client(tmp_path, clock_at=case.end + SETTLEMENT_PUBLISH_LAG)
            fetch_page = client.fetch_history_page

            async def page(market, start_ms, end_ms):
                if ignore_window:
                    start_ms, end_ms = to_ms(case.start), to_ms(case.end)
                pages.append(await fetch_page(market, start_ms, end_ms))
                return pages[-1]

            client.fetch_history_page = page
            try:
                markets = self.cassette_dir / case.markets if case.markets else None
                await self._load_markets(client, markets)
                with replaying(self.cassette_dir / case.cassette):
                    if ignore_window:  # a window entirely before the recorded one
                        return await client.fetch_funding_history(
                            case.symbol, case.start - timedelta(days=730),
                            case.start - timedelta(days=365))
                    return await client.fetch_funding_history(case.symbol, case.start, case.end)
            finally:
                await client.close()

        return asyncio.run(run()), pages

    def test_history_pages_without_gap_or_duplicate(self, tmp_path: Path):
        if not self.spec().capabilities.funding_history:
            assert not self.history_cases, "history recorded for a venue declaring none"
            return
        assert self.history_cases, "funding_history is declared: name the history_cases"
        most_pages = 0
        for number, case in enumerate(self.history_cases):
            records, pages = self._history(case, tmp_path / str(number))
            most_pages = max(most_pages, len(pages))
            times = [r.funding_time for r in records]
            assert records and times == sorted(set(times)), f"{case}: unordered or duplicated"
            assert case.start <= times[0] and times[-1] <= case.end, case
            # A minute of slack: some venues stamp settlements a few milliseconds late.
            step = timedelta(hours=case.interval_hours, minutes=1)
            gaps = [(a, b) for a, b in pairwise(times) if b - a > step]
            assert not gaps, f"{case.symbol}: gaps {gaps[:3]}"
            in_window = {r.funding_time for page in pages for r in page
                         if case.start <= r.funding_time <= case.end}
            assert set(times) == in_window, f"{case.symbol}: pages and result differ"
            assert all(r.symbol == case.symbol and r.venue == self.venue_id for r in records)
        assert most_pages > 1, "no history case spans more than one page"

    def test_history_page_outside_the_window_is_an_error(self, tmp_path: Path):
        """A venue (or a request) that ignores the window asked, answering with records
        that all lie outside it, is an InvalidResponse: never an empty history."""
        if not self.spec().capabilities.funding_history:
            assert not self.history_cases
            return
        with pytest.raises(InvalidResponse, match="none inside"):
            self._history(self.history_cases[0], tmp_path, ignore_window=True)

    # -- errors ---------------------------------------------------------------------

    @pytest.mark.parametrize("cassette", sorted(ERROR_CASSETTES))
    def test_error_cassettes_translate(self, cassette: str, tmp_path: Path):
        sleep = SleepRecorder()
        with pytest.raises(VenueError) as caught:
            self._funding_under(self.cassette_dir / cassette, tmp_path, sleep)
        assert type(caught.value) is ERROR_CASSETTES[cassette], caught.value
        assert caught.value.venue == self.venue_id

    def test_rate_limits_back_off_and_raise(self, tmp_path: Path):
        """Every ``error_rate_limit*.json``: retried MAX_RETRIES times, then a RateLimitError.
        With Retry-After each wait is at least that long; without it, the default backoff."""
        cassettes = sorted(self.cassette_dir.glob("error_rate_limit*.json"))
        assert cassettes, f"no error_rate_limit*.json in {self.cassette_dir}"
        for number, cassette in enumerate(cassettes):
            sleep = SleepRecorder()
            with pytest.raises(RateLimitError) as caught:
                self._funding_under(cassette, tmp_path / str(number), sleep)
            assert caught.value.venue == self.venue_id
            assert len(sleep.delays) == MAX_RETRIES, (cassette.name, sleep.delays)
            retry_after = caught.value.retry_after
            for attempt, delay in enumerate(sleep.delays):
                low = backoff_delay(attempt, retry_after, rng=lambda: 0.0)
                high = backoff_delay(attempt, retry_after, rng=lambda: 1.0)
                assert low <= delay <= high, (cassette.name, attempt, delay, retry_after)

    def test_missing_fields_skip_symbols_and_never_zero(self, tmp_path: Path):
        snapshot = self._funding_under(self.cassette_dir / "error_missing_fields.json",
                                       tmp_path, SleepRecorder())
        assert snapshot.skipped, "malformed entries must be skipped and reported"
        skipped = {s.symbol for s in snapshot.skipped}
        assert not skipped & set(snapshot.quotes)
        for s in snapshot.skipped:
            assert s.venue == self.venue_id and s.reason
