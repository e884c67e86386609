"""Binance plugin against recorded real responses (see cassettes/binance/PROVENANCE.md)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from support import no_sleep

from perpcarry.ccxt.cache_warnings import NOT_CACHING
from perpcarry.ccxt.replay import cassette_vcr, replaying
from perpcarry.config.settings import VenueConfig
from perpcarry.domain.errors import ExchangeUnavailable, InvalidResponse, RateLimitError
from perpcarry.domain.parsing import to_ms
from perpcarry.domain.types import Market, MarketKind, SkipLog
from perpcarry.venues.protocol import VenueContext, carry_pairs
from perpcarry_binance import parsing
from perpcarry_binance.venue import BinanceVenue

REPO = Path(__file__).parents[1]
CASSETTES = REPO / "cassettes" / "binance"
SNAPSHOT = REPO / "plugins" / "binance" / "snapshot" / "snapshot.json"
T = datetime(2025, 9, 9, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def make_venue(cache_dir: Path, *, offline: bool = True, clock=None) -> BinanceVenue:
    extra = {"clock": clock} if clock else {}
    context = VenueContext(cache_dir=cache_dir, offline=offline, sleep=no_sleep, **extra)
    return BinanceVenue(VenueConfig(enabled=True), context)


@pytest.fixture
async def full_venue(tmp_path):
    """Markets from the full real exchangeInfo dumps (fapi 2025-08-22, spot 2023-09-08);
    online, so funding history is cached (offline runs cache none)."""
    venue = make_venue(tmp_path, offline=False, clock=lambda: utc(2026, 9, 1))
    with replaying(CASSETTES / "markets_full.json"):
        await venue.load_markets()
    venue.request_count = 0  # count only what the test itself sends
    yield venue
    await venue.close()


@pytest.fixture
async def snapshot_venue(tmp_path):
    venue = make_venue(tmp_path)
    with replaying(SNAPSHOT):
        await venue.load_markets()
    venue.request_count = 0  # count only what the test itself sends
    yield venue
    await venue.close()


# -- markets ---------------------------------------------------------------------------


async def test_cold_market_load_is_two_requests_and_warm_load_none(tmp_path):
    cold = make_venue(tmp_path, offline=False)
    with cassette_vcr().use_cassette(str(CASSETTES / "markets_full.json")) as cassette:
        markets = await cold.load_markets()
    await cold.close()
    # api/v3/exchangeInfo + fapi/v1/exchangeInfo; no currency or margin calls
    assert cassette.play_count == 2
    kinds = {kind: sum(m.kind is kind for m in markets) for kind in MarketKind}
    assert kinds == {MarketKind.PERP: 508, MarketKind.SPOT: 362}

    warm = make_venue(tmp_path, offline=False)
    with cassette_vcr().use_cassette(str(CASSETTES / "markets_full.json")) as cassette:
        again = await warm.load_markets()
        # ccxt's unified methods load markets first; they get the cached ones, no request.
        ccxt_markets = await warm.exchange.load_markets()
    await warm.close()
    assert cassette.play_count == 0 and warm.request_count == 0
    assert {m.symbol for m in again} == {m.symbol for m in markets}
    assert warm.exchange.market("BTC/USDT:USDT")["id"] == "BTCUSDT"
    assert set(ccxt_markets) == set(warm.raw_markets)


async def test_market_fields_from_real_exchange_info(full_venue):
    btc = await full_venue.market("BTC/USDT:USDT")
    assert (btc.venue_symbol, btc.settle, btc.price_tick, btc.quantity_step) == (
        "BTCUSDT", "USDT", Decimal("0.10"), Decimal("0.001"))
    assert btc.min_notional == Decimal("100")
    assert (await full_venue.market("BTC/USDT")).kind is MarketKind.SPOT


# -- funding snapshot -------------------------------------------------------------------


async def test_full_real_premium_index_has_per_symbol_intervals(full_venue):
    with replaying(CASSETTES / "funding_full_2025-06-17.json"):
        snap = await full_venue.fetch_funding_snapshot()
    assert full_venue.request_count == 2  # premiumIndex + fundingInfo
    assert len(snap.quotes) == 468 and len(snap.skipped) == 53
    assert len(snap.quotes) + len(snap.skipped) == 521
    expected = {  # symbol: (interval h, next funding hour, rate)
        "AXL/USDT:USDT": (1, 9, "-0.00014066"),
        "RVN/USDT:USDT": (1, 9, "-0.00049224"),
        "FLM/USDT:USDT": (2, 10, "0.00002500"),
        "DIA/USDT:USDT": (4, 12, "0.00005000"),
        "KAVA/USDT:USDT": (8, 16, "0.00010000"),
        "SUI/USDC:USDC": (8, 16, "0.00010000"),
    }
    for symbol, (hours, next_hour, rate) in expected.items():
        quote = snap.quotes[symbol]
        assert quote.interval_hours == hours, symbol
        assert quote.next_funding_time == utc(2025, 6, 17, next_hour), symbol
        assert quote.rate == Decimal(rate) and quote.is_predicted
    btc = snap.quotes["BTC/USDT:USDT"]
    assert (btc.rate_cap, btc.rate_floor) == (Decimal("0.003"), Decimal("-0.003"))
    assert btc.mark_price == Decimal("106599.9") and btc.index_price == Decimal("106647.69847826")
    assert snap.quotes["DIA/USDT:USDT"].rate_cap is None  # rebuilt entry: caps not known
    counts = {h: sum(q.interval_hours == h for q in snap.quotes.values()) for h in (1, 2, 4, 8)}
    assert counts == {1: 11, 2: 1, 4: 286, 8: 170}
    skipped = {s.symbol: s.reason for s in snap.skipped}
    assert skipped["BTCUSDT_250926"] == "not a listed perpetual"  # delivery contract
    assert skipped["MATICUSDT"] == "not a listed perpetual"  # delisted before 2025-08


async def test_offline_snapshot_is_coherent_at_t(tmp_path):
    venue = make_venue(tmp_path)
    with replaying(SNAPSHOT):
        markets = await venue.load_markets()
        snap = await venue.fetch_funding_snapshot()
        t = max(q.timestamp for q in snap.quotes.values())
        pairs = [p for p in carry_pairs(markets) if p.perp.symbol in snap.quotes]
        histories = {p.perp.symbol: await venue.fetch_funding_history(
            p.perp.symbol, t - timedelta(days=30), t) for p in pairs}
    await venue.close()
    assert t == T
    assert len(snap.quotes) == 79 and [s.symbol for s in snap.skipped] == ["BTCSTUSDT"]
    assert len(pairs) == 79
    assert {q.interval_hours for q in snap.quotes.values()} == {4, 8}
    flm = snap.quotes["FLM/USDT:USDT"]
    assert flm.interval_hours == 4 and flm.next_funding_time == utc(2025, 9, 9, 4)
    assert flm.index_price is None  # not known at T, left out of the rebuilt entry
    btc = snap.quotes["BTC/USDT:USDT"]
    assert btc.next_funding_time == utc(2025, 9, 9, 8) and btc.rate == Decimal("0.00003799")
    for symbol, records in histories.items():
        quote = snap.quotes[symbol]
        assert records[-1].funding_time.replace(microsecond=0) == T
        assert records[-1].rate == quote.rate  # lastFundingRate is the rate settled at T
        assert len(records) == 30 * 24 // quote.interval_hours + 1, symbol


# -- history ---------------------------------------------------------------------------


def assert_no_gaps(records, hours: int) -> None:
    gaps = {round((b.funding_time - a.funding_time).total_seconds() / 3600)
            for a, b in itertools.pairwise(records)}
    assert gaps == {hours}


async def test_history_pages_forward_without_gaps_and_caches(full_venue):
    with replaying(CASSETTES / "history_paging.json"):
        btc = await full_venue.fetch_funding_history("BTC/USDT:USDT", utc(2024, 1, 1),
                                                     utc(2025, 1, 1))
        assert full_venue.request_count == 2  # 1,098 settlements, 1,000 per page
        assert len(btc) == 1098 and btc[0].funding_time == utc(2024, 1, 1)
        assert_no_gaps(btc, 8)
        overlap = await full_venue.fetch_funding_history(
            "BTC/USDT:USDT", utc(2024, 7, 1), utc(2025, 7, 1))
        assert full_venue.request_count == 3  # only 2025-01-01 → 2025-07-01 was fetched
        assert len(overlap) == 1095
        assert_no_gaps(overlap, 8)

        ordi = await full_venue.fetch_funding_history("ORDI/USDT:USDT", utc(2025, 8, 21),
                                                      utc(2026, 8, 21))
        assert full_venue.request_count == 6  # 2,187 settlements: three pages
        assert len(ordi) == 2187
        # 4h throughout; the one 8h step is in the source data (no 2026-06-24 04:00 row),
        # not a page boundary (pages end at the 1,000th and 2,000th settlement).
        long_steps = [b.funding_time for a, b in itertools.pairwise(ordi)
                      if b.funding_time - a.funding_time > timedelta(hours=5)]
        assert [t.replace(microsecond=0) for t in long_steps] == [utc(2026, 6, 24, 8)]
        assert_no_gaps(ordi[:1500], 4)
        await full_venue.fetch_funding_history("ORDI/USDT:USDT", utc(2026, 8, 1),
                                               utc(2026, 8, 21, 12))
        assert full_venue.request_count == 7

        flm = await full_venue.fetch_funding_history("FLM/USDT:USDT", utc(2025, 8, 10), T)
        eth = await full_venue.fetch_funding_history("ETH/USDT:USDT", utc(2025, 8, 10), T)
    assert len(flm) == 181 and len(eth) == 91
    assert_no_gaps(flm, 4)
    assert_no_gaps(eth, 8)
    assert all(r.mark_price is not None for r in flm + eth)


async def test_a_settlement_published_late_is_fetched_by_a_later_call(snapshot_venue, tmp_path):
    """The scan asks for history up to the last settlement, which reaches the venue's
    history endpoint a moment after it happens: the cache must not mark it as fetched
    before then, or that settlement would be missing for good."""
    now = T + timedelta(minutes=1)
    venue = make_venue(tmp_path / "late", offline=False, clock=lambda: now)
    with replaying(SNAPSHOT):
        real = await snapshot_venue.fetch_funding_history(
            "BTC/USDT:USDT", T - timedelta(days=30), T)
        await venue.load_markets()
    asked = []

    async def page(market, start_ms, end_ms):
        """The real settlements, each published 2 minutes after it happened."""
        asked.append((start_ms, end_ms))
        return [r for r in real if start_ms <= to_ms(r.funding_time) <= end_ms
                and r.funding_time <= now - timedelta(minutes=2)]

    venue.fetch_history_page = page
    start = T - timedelta(days=1)
    early = await venue.fetch_funding_history("BTC/USDT:USDT", start, T)
    now = T + timedelta(minutes=10)
    later = await venue.fetch_funding_history("BTC/USDT:USDT", start, T)
    again = await venue.fetch_funding_history("BTC/USDT:USDT", start, T)
    await venue.close()
    day = [r.funding_time for r in real if r.funding_time >= start]
    assert day[-1] == T and len(day) == 4
    assert [r.funding_time for r in early] == day[:-1]
    assert [r.funding_time for r in later] == [r.funding_time for r in again] == day
    assert len(asked) == 2  # the third call is answered from the cache


async def test_prefetched_history_answers_a_window_inside_it(tmp_path, monkeypatch):
    """What prefetch_funding_history read answers a window inside it, with the records the
    cache holds; a window that starts before what was read goes to the cache."""
    clock = lambda: T + timedelta(hours=1)  # noqa: E731
    first = make_venue(tmp_path, offline=False, clock=clock)
    with replaying(SNAPSHOT):
        await first.load_markets()
        cached = {s: await first.fetch_funding_history(s, T - timedelta(days=30), T)
                  for s in ("BTC/USDT:USDT", "ETH/USDT:USDT")}
    await first.close()

    venue = make_venue(tmp_path, offline=False, clock=clock)
    await venue.load_markets()  # from the disk cache: no request, no replay needed
    venue.prefetch_funding_history(["BTC/USDT:USDT", "ETH/USDT:USDT"], timedelta(days=10))
    from_cache = []
    read = venue.history_store.records
    monkeypatch.setattr(venue.history_store, "records",
                        lambda venue_id, symbol, *span: from_cache.append(symbol)
                        or read(venue_id, symbol, *span))
    btc = await venue.fetch_funding_history("BTC/USDT:USDT", T - timedelta(days=10), T)
    eth = await venue.fetch_funding_history("ETH/USDT:USDT", T - timedelta(days=20), T)
    await venue.close()
    assert venue.request_count == 0
    assert btc == [r for r in cached["BTC/USDT:USDT"] if r.funding_time >= T - timedelta(days=10)]
    assert eth == [r for r in cached["ETH/USDT:USDT"] if r.funding_time >= T - timedelta(days=20)]
    assert len(btc) == 31 and len(eth) == 61
    assert from_cache == ["ETH/USDT:USDT"]  # BTC's window came from what was read ahead


async def test_histories_fetched_at_once_are_all_in_the_cache_after_close(tmp_path):
    """A cold run's histories are written behind their answers, several to a transaction:
    after close every symbol's records and span are in the file, and a second run asks
    nothing."""
    clock = lambda: T + timedelta(hours=1)  # noqa: E731
    symbols = ["BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "XRP/USDT:USDT"]
    first = make_venue(tmp_path, offline=False, clock=clock)
    with replaying(SNAPSHOT):
        await first.load_markets()
        first.prefetch_funding_history(symbols, timedelta(days=30))
        fetched = await asyncio.gather(*(first.fetch_funding_history(
            s, T - timedelta(days=30), T) for s in symbols))
    await first.close()

    second = make_venue(tmp_path, offline=False, clock=clock)
    cached = [await second.fetch_funding_history(s, T - timedelta(days=30), T)
              for s in symbols]
    await second.close()
    assert second.request_count == 0
    assert cached == fetched and [len(r) for r in cached] == [91, 91, 91, 91]
    assert all(r.symbol == s for s, records in zip(symbols, cached, strict=True)
               for r in records)


@pytest.mark.parametrize("prefetch", [False, True])
async def test_an_unreadable_history_cache_is_one_warning_and_the_history_is_fetched(
        tmp_path, prefetch, logged_warnings):
    cache = tmp_path / "funding_history.sqlite"
    cache.write_bytes(b"not a database, " * 512)
    venue = make_venue(tmp_path, offline=False, clock=lambda: T + timedelta(hours=1))
    with replaying(SNAPSHOT):
        await venue.load_markets()
        venue.request_count = 0
        if prefetch:
            venue.prefetch_funding_history(["BTC/USDT:USDT", "ETH/USDT:USDT"],
                                           timedelta(days=30))
        btc = await venue.fetch_funding_history("BTC/USDT:USDT", T - timedelta(days=30), T)
        eth = await venue.fetch_funding_history("ETH/USDT:USDT", T - timedelta(days=30), T)
    await venue.close()
    assert len(btc) == len(eth) == 91 and venue.request_count == 2
    assert logged_warnings == [f"cache {cache}: file is not a database; {NOT_CACHING}"]
    assert cache.read_bytes() == b"not a database, " * 512  # left for the user to delete


async def test_offline_history_is_never_cached(snapshot_venue, tmp_path):
    snapshot_venue.prefetch_funding_history(["BTC/USDT:USDT"], timedelta(days=30))
    with replaying(SNAPSHOT):
        records = await snapshot_venue.fetch_funding_history(
            "BTC/USDT:USDT", T - timedelta(days=30), T)
    assert len(records) == 91 and snapshot_venue.request_count == 1
    assert list(tmp_path.iterdir()) == []


# -- errors ----------------------------------------------------------------------------


async def test_rate_limit_reads_retry_after(snapshot_venue):
    with replaying(CASSETTES / "error_rate_limit.json"), pytest.raises(RateLimitError) as err:
        await snapshot_venue.fetch_funding_snapshot()
    assert err.value.retry_after == 7
    # premiumIndex: first try + 3 retries; fundingInfo, fetched alongside, once
    assert snapshot_venue.request_count == 5


async def test_ip_ban_418_is_a_rate_limit(snapshot_venue):
    with replaying(CASSETTES / "error_rate_limit_1003.json"), pytest.raises(RateLimitError) as err:
        await snapshot_venue.fetch_funding_snapshot()
    assert err.value.retry_after == 120 and "IP banned" in str(err.value)


async def test_maintenance_is_exchange_unavailable(snapshot_venue):
    with replaying(CASSETTES / "error_maintenance.json"), pytest.raises(ExchangeUnavailable):
        await snapshot_venue.fetch_funding_snapshot()


async def test_truncated_body_is_invalid_response(snapshot_venue):
    with replaying(CASSETTES / "error_truncated.json"), pytest.raises(InvalidResponse) as err:
        await snapshot_venue.fetch_funding_snapshot()
    assert str(err.value).startswith("binance: invalid response: truncated JSON (")
    assert str(err.value).endswith(" characters) from /fapi/v1/premiumIndex")


async def test_missing_fields_are_skipped_never_zero(snapshot_venue):
    with replaying(CASSETTES / "error_missing_fields.json"):
        snap = await snapshot_venue.fetch_funding_snapshot()
    skipped = {s.symbol: s.reason for s in snap.skipped}
    assert skipped == {
        "AAVEUSDT": "field lastFundingRate is missing",  # null
        "ADAUSDT": "field lastFundingRate is missing",  # key absent
        "ALGOUSDT": "field lastFundingRate is invalid value ''",
        "ATOMUSDT": "field nextFundingTime is missing",
        "BANDUSDT": "fundingInfo: field fundingIntervalHours is missing",
        "BTCSTUSDT": "not a listed perpetual",
        "SKLUSDT": "rate -0.00575028 outside [-0.00300, 0.00300]",
        "MATICUSDT": "not a listed perpetual",
        "?": "premiumIndex entry without a symbol",
    }
    assert len(snap.quotes) == 73
    bad = {"AAVE", "ADA", "ALGO", "ATOM", "BAND", "SKL"}
    assert not any(q.symbol.split("/")[0] in bad for q in snap.quotes.values())
    assert snap.quotes["AVAX/USDT:USDT"].mark_price is None  # optional field, quote kept


# -- books -----------------------------------------------------------------------------


async def test_spot_books_one_request_per_scan_once_volumes_are_cached(tmp_path):
    venue = make_venue(tmp_path, offline=False)  # online: the disk caches are used
    with replaying(CASSETTES / "markets_full.json", CASSETTES / "books_spot_2024-01-05.json"):
        await venue.load_markets()
        venue.request_count = 0
        snap = await venue.fetch_book_tops(MarketKind.SPOT)
        assert venue.request_count == 2  # bookTicker + the 24h volumes, cold
        again = await venue.fetch_book_tops(MarketKind.SPOT)
        assert venue.request_count == 3  # bookTicker only: volumes from the cache
    await venue.close()
    def tops(books):
        return {s: (b.bid, b.ask, b.quote_volume_24h) for s, b in books.items()}

    assert tops(again.books) == tops(snap.books)
    btc = snap.books["BTC/USDT"]
    assert (btc.bid, btc.ask) == (Decimal("43714.03"), Decimal("43714.04"))
    assert btc.quote_volume_24h is not None and btc.quote_volume_24h > 0
    assert len(snap.books) == 353
    assert all(s.reason.startswith("empty book (bid 0") for s in snap.skipped)
    assert all(b.bid <= b.ask for b in snap.books.values())


async def test_perp_books_are_two_bulk_requests_cold(full_venue):
    # No real fapi bookTicker dump exists: the cassette holds the docs example (LTCBTC,
    # not a perp, so no book) next to the real 2024-03-31 fapi 24hr ticker.
    with replaying(CASSETTES / "books_perp_docs-example.json"):
        snap = await full_venue.fetch_book_tops(MarketKind.PERP)
    assert full_venue.request_count == 2 and snap.books == {}


def test_book_parser_on_docs_example():
    # The Binance docs example (GET /api/v3/ticker/bookTicker), not market data; no real
    # bookTicker dump exists. Same object as in books_perp_docs-example.json.
    row = {"symbol": "LTCBTC", "bidPrice": "4.00000000", "bidQty": "431.00000000",
           "askPrice": "4.00000200", "askQty": "9.00000000"}
    market = Market("binance", "LTC/BTC", "LTCBTC", "LTC", "BTC", None, MarketKind.SPOT,
                    Decimal(1), Decimal("0.001"), Decimal("0.001"), None, Decimal("0.000001"))
    skips = SkipLog("binance")
    books = parsing.parse_book_tickers("binance", [row, {**row, "bidPrice": ""}],
                                       {"LTCBTC": market}, {}, utc(2026, 1, 1), skips)
    top = books["LTC/BTC"]
    assert (top.bid, top.ask, top.bid_size, top.ask_size) == (
        Decimal("4"), Decimal("4.000002"), Decimal("431"), Decimal("9"))
    assert top.timestamp == utc(2026, 1, 1)  # spot bookTicker has no time field
    assert [s.reason for s in skips.entries] == ["field bidPrice is invalid value ''"]


def test_next_funding_time_zero_is_skipped():
    perp = Market("binance", "BTC/USDT:USDT", "BTCUSDT", "BTC", "USDT", "USDT", MarketKind.PERP,
                  Decimal(1), Decimal("0.001"), Decimal("0.001"), None, Decimal("0.1"))
    skips = SkipLog("binance")
    row = {"symbol": "BTCUSDT", "lastFundingRate": "0.00000000", "nextFundingTime": 0,
           "time": 1750149488000, "markPrice": "106745.67326087"}
    quotes = parsing.parse_premium_index("binance", [row], {"BTCUSDT": perp}, {}, {}, skips)
    assert quotes == {}
    assert skips.entries[0].reason.startswith("nextFundingTime is 0")


async def test_no_fee_schedule_without_credentials(tmp_path):
    venue = make_venue(tmp_path)
    assert await venue.fetch_fee_schedule() is None
    assert venue.request_count == 0
    await venue.close()
