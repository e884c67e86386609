"""Bybit plugin against recorded sessions built from real data (cassettes/bybit/PROVENANCE.md)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perpcarry.ccxt.replay import cassette_vcr, replaying
from perpcarry.config.settings import VenueConfig
from perpcarry.domain.errors import ExchangeUnavailable, InvalidResponse, RateLimitError
from perpcarry.domain.parsing import MalformedField
from perpcarry.domain.types import Market, MarketKind
from perpcarry.venues.protocol import VenueContext, carry_pairs
from perpcarry_bybit.parsing import funding_terms, parse_funding_tickers
from perpcarry_bybit.venue import BybitVenue

CASSETTES = Path(__file__).parents[1] / "cassettes" / "bybit"
SNAPSHOT = Path(__file__).parents[1] / "plugins" / "bybit" / "snapshot" / "snapshot.json"
T = datetime(2026, 2, 7, tzinfo=UTC)  # the test cassettes' instant
S = datetime(2026, 1, 20, 8, tzinfo=UTC)  # the offline snapshot's instant


async def _no_sleep(_: float) -> None:
    return None


def make_client(cache_dir: Path, *, offline: bool = True, clock=None) -> BybitVenue:
    context = VenueContext(cache_dir=cache_dir, offline=offline, sleep=_no_sleep,
                           **({"clock": clock} if clock else {}))
    return BybitVenue(VenueConfig(), context)


def recorded(path: Path):
    """Like ``replaying`` but yields the cassette, whose ``play_count`` counts HTTP calls."""
    return cassette_vcr().use_cassette(str(path), allow_playback_repeats=True)


@pytest.fixture
async def client(tmp_path):
    venue = make_client(tmp_path)
    yield venue
    await venue.close()


@pytest.fixture
async def loaded(client):
    """A client whose markets come from the offline snapshot (a separate replay)."""
    with replaying(SNAPSHOT):
        await client.load_markets()
    client.request_count = 0
    return client


# -- funding snapshot -----------------------------------------------------------------


async def test_snapshot_quotes_carry_real_intervals_and_next_funding(client):
    with recorded(SNAPSHOT) as cassette:
        await client.load_markets()
        markets_http = cassette.play_count
        snapshot = await client.fetch_funding_snapshot()

    assert markets_http == 3  # instruments-info spot, linear, linear PreLaunch
    assert client.request_count == cassette.play_count == 4  # every HTTP request is counted
    assert cassette.play_count - markets_http == 1  # one bulk request for all perps
    assert len(snapshot.quotes) == 22
    assert snapshot.skipped == ()

    btc = snapshot.quotes["BTC/USDT:USDT"]
    assert btc.rate == Decimal("-0.00001587")  # zushen rate_raw settled at S
    assert btc.interval_hours == 8
    assert btc.next_funding_time == datetime(2026, 1, 20, 16, tzinfo=UTC)
    assert btc.mark_price == Decimal("91124.9")  # knx Bybit perp candle 07:00-08:00 close
    assert btc.index_price is None
    assert (btc.rate_floor, btc.rate_cap) == (Decimal("-0.005"), Decimal("0.005"))
    assert btc.is_predicted is True
    assert btc.timestamp == S

    for symbol in ("ORDI/USDT:USDT", "TIA/USDT:USDT", "TON/USDT:USDT", "WIF/USDT:USDT"):
        assert snapshot.quotes[symbol].interval_hours == 4
        assert snapshot.quotes[symbol].next_funding_time == datetime(2026, 1, 20, 12, tzinfo=UTC)
    apt = snapshot.quotes["APT/USDT:USDT"]
    assert (apt.interval_hours, apt.mark_price, apt.rate) == (8, None, Decimal("-0.00007064"))
    assert Counter(q.interval_hours for q in snapshot.quotes.values()) == {8: 18, 4: 4}
    # A real price exists only for the five knx coins; every other perp's is unknown.
    priced = {s.split("/")[0] for s, q in snapshot.quotes.items() if q.mark_price is not None}
    assert priced == {"BTC", "ETH", "SOL", "DOGE", "HYPE"}


async def test_snapshot_history_for_every_carry_pair(client):
    with replaying(SNAPSHOT):
        markets = await client.load_markets()
        snapshot = await client.fetch_funding_snapshot()
        t = max(q.timestamp for q in snapshot.quotes.values())
        pairs = [p for p in carry_pairs(markets) if p.perp.symbol in snapshot.quotes]
        histories = {p.perp.symbol: await client.fetch_funding_history(
            p.perp.symbol, t - timedelta(days=30), t) for p in pairs}

    # Every quoted USDT perp but HYPE has a spot instrument in the 2024-08 spot list.
    assert sorted(p.base for p in pairs) == [
        "APT", "ARB", "AVAX", "BNB", "BTC", "DOGE", "ETH", "INJ", "LINK", "LTC", "NEAR", "OP",
        "ORDI", "SEI", "SOL", "SUI", "TIA", "TON", "TRX", "WIF", "XRP"]
    for symbol, records in histories.items():
        hours = snapshot.quotes[symbol].interval_hours
        assert len(records) == 30 * 24 // hours + 1  # every settlement, both ends included
        assert records[-1].funding_time == S
    assert histories["BTC/USDT:USDT"][-1].rate == snapshot.quotes["BTC/USDT:USDT"].rate


# -- markets ----------------------------------------------------------------------------


async def test_markets_cold_load_then_warm_from_disk_cache(tmp_path):
    cold = make_client(tmp_path, offline=False)
    with recorded(CASSETTES / "markets_full.json") as cassette:
        markets = await cold.load_markets()
    await cold.close()
    assert cassette.play_count == 3  # spot, linear, linear PreLaunch
    kinds = Counter(m.kind for m in markets)
    assert kinds == {MarketKind.PERP: 555, MarketKind.SPOT: 7}

    warm = make_client(tmp_path, offline=False)
    with recorded(CASSETTES / "markets_full.json") as cassette:
        assert len(await warm.load_markets()) == 562
        instruments = warm._raw_instruments()
    await warm.close()
    assert warm.request_count == 0 and cassette.play_count == 0
    # The funding terms survive the on-disk cache with the markets.
    hours = {s: funding_terms(instruments[s]).interval_hours
             for s in ("0GUSDT", "AVLUSDT", "1000BONKUSDT", "BTCUSDT")}
    assert hours == {"0GUSDT": 1, "AVLUSDT": 2, "1000BONKUSDT": 4, "BTCUSDT": 8}
    assert Counter(funding_terms(i).interval_hours for i in instruments.values()) == {
        4: 284, 8: 162, 1: 95, 2: 14}


# -- funding history ------------------------------------------------------------------


async def test_history_pages_backward_without_gaps(client):
    with replaying(CASSETTES / "history_paging.json"):
        await client.load_markets()
        before = client.request_count
        inj = await client.fetch_funding_history(
            "INJ/USDT:USDT", datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC))
        inj_requests = client.request_count - before
        ordi = await client.fetch_funding_history(
            "ORDI/USDT:USDT", datetime(2025, 12, 1, tzinfo=UTC), T)

    assert inj_requests == 2  # more than one 200-row page
    steps = Counter(b.funding_time - a.funding_time for a, b in pairwise(inj))
    # INJUSDT really switched from 8h to 1h funding on 2026-02-19 and back on 2026-02-27.
    assert steps == {timedelta(hours=8): 74, timedelta(hours=1): 170, timedelta(hours=6): 1}
    assert len(inj) == 246  # every real settlement in the window
    assert inj[0].funding_time == datetime(2026, 2, 1, tzinfo=UTC)
    assert inj[-1].funding_time == datetime(2026, 3, 5, tzinfo=UTC)

    assert len(ordi) == 68 * 6 + 1
    assert {b.funding_time - a.funding_time for a, b in pairwise(ordi)} == {
        timedelta(hours=4)}


async def test_history_second_overlapping_request_fetches_only_the_new_part(tmp_path):
    client = make_client(tmp_path, offline=False)  # offline runs cache no history
    with replaying(CASSETTES / "history_paging.json"):
        await client.load_markets()
        before = client.request_count
        first = await client.fetch_funding_history(
            "BTC/USDT:USDT", T - timedelta(days=90), T - timedelta(days=30))
        after_first = client.request_count
        second = await client.fetch_funding_history(
            "BTC/USDT:USDT", T - timedelta(days=60), T)

    await client.close()
    assert after_first - before == 1
    assert client.request_count - after_first == 1  # only (T-30d, T] was missing
    assert len(first) == 181 and len(second) == 181
    assert second[0].funding_time == T - timedelta(days=60)
    assert second[-1].funding_time == T


# -- errors ---------------------------------------------------------------------------


async def test_rate_limit_reads_retry_after(loaded):
    with replaying(CASSETTES / "error_rate_limit.json"), pytest.raises(RateLimitError) as err:
        await loaded.fetch_funding_snapshot()
    assert err.value.retry_after == 7.0
    assert loaded.request_count == 4  # first try and three retries


async def test_rate_limit_10006_without_retry_after(loaded):
    with replaying(CASSETTES / "error_rate_limit_10006.json"), \
            pytest.raises(RateLimitError) as err:
        await loaded.fetch_funding_snapshot()
    assert err.value.retry_after is None
    assert "Too many visits" in str(err.value)


@pytest.mark.parametrize("cassette", ["error_maintenance.json", "error_system_10016.json"])
async def test_maintenance_is_exchange_unavailable(loaded, cassette):
    with replaying(CASSETTES / cassette), pytest.raises(ExchangeUnavailable):
        await loaded.fetch_funding_snapshot()
    assert loaded.request_count == 1  # not retried


async def test_truncated_body_is_invalid_response(loaded):
    with replaying(CASSETTES / "error_truncated.json"), pytest.raises(InvalidResponse):
        await loaded.fetch_funding_snapshot()


async def test_missing_fields_are_skipped_never_zero(loaded):
    with replaying(CASSETTES / "error_missing_fields.json"):
        snapshot = await loaded.fetch_funding_snapshot()

    reasons = {s.symbol: s.reason for s in snapshot.skipped}
    assert set(reasons) == {"ETH/USDT:USDT", "SOL/USDT:USDT", "XRP/USDT:USDT",
                            "DOGE/USDT:USDT", "BTC/USDT:USDT", "AAPLUSDT"}
    assert "fundingRate is missing" in reasons["ETH/USDT:USDT"]
    assert "nextFundingTime is missing" in reasons["SOL/USDT:USDT"]
    assert "fundingRate is invalid value ''" in reasons["XRP/USDT:USDT"]
    assert "markPrice" in reasons["DOGE/USDT:USDT"]
    assert "below the floor -0.005" in reasons["BTC/USDT:USDT"]
    assert "unknown symbol" in reasons["AAPLUSDT"]
    assert len(snapshot.quotes) == 22 - 5
    assert not set(reasons) & set(snapshot.quotes)


# -- books ----------------------------------------------------------------------------


async def test_linear_book_and_funding_share_one_real_ticker_request(loaded):
    """Only a single real linear ticker exists (ccxt static tests, 2024-02-14)."""
    now = datetime(2026, 11, 1, tzinfo=UTC)
    loaded.context = VenueContext(cache_dir=loaded.context.cache_dir, offline=True,
                                  sleep=_no_sleep, clock=lambda: now)
    with replaying(CASSETTES / "tickers_linear_btcusdt_ccxt_static.json"):
        books = await loaded.fetch_book_tops(MarketKind.PERP)
        funding = await loaded.fetch_funding_snapshot()
    assert loaded.request_count == 1

    book = books.books["BTC/USDT:USDT"]
    assert (book.bid, book.ask) == (Decimal("51444.30"), Decimal("51444.40"))
    assert (book.bid_size, book.ask_size) == (Decimal("55.841"), Decimal("491.691"))
    assert book.quote_volume_24h == Decimal("2352063794.0035")
    assert book.timestamp == datetime(2024, 2, 14, 10, 12, 29, 267000, tzinfo=UTC)
    assert books.skipped == ()

    quote = funding.quotes["BTC/USDT:USDT"]
    assert quote.rate == Decimal("-0.00046295")
    assert quote.interval_hours == 8
    assert quote.next_funding_time == datetime(2024, 2, 14, 16, tzinfo=UTC)
    assert (quote.mark_price, quote.index_price) == (Decimal("51444.40"), Decimal("51469.95"))


async def test_linear_tickers_are_refetched_after_the_reuse_window(loaded):
    moments = iter([datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 1, 0, 0, 10, tzinfo=UTC)])
    current = {"now": next(moments)}
    loaded.context = VenueContext(cache_dir=loaded.context.cache_dir, offline=True,
                                  sleep=_no_sleep, clock=lambda: current["now"])
    with replaying(CASSETTES / "tickers_linear_btcusdt_ccxt_static.json"):
        await loaded.fetch_funding_snapshot()
        current["now"] = next(moments)
        await loaded.fetch_funding_snapshot()
    assert loaded.request_count == 2


# -- parsing --------------------------------------------------------------------------


def test_funding_interval_string_or_number_and_unknown_values():
    assert funding_terms({"fundingInterval": "480"}).interval_hours == 8
    assert funding_terms({"fundingInterval": 60, "upperFundingRate": "0.01",
                          "lowerFundingRate": "-0.01"}).rate_cap == Decimal("0.01")
    for bad in (30, "", None, "abc", 90):
        with pytest.raises(MalformedField):
            funding_terms({"fundingInterval": bad})


def _perp(symbol: str) -> Market:
    return Market("bybit", f"{symbol[:-4]}/USDT:USDT", symbol, symbol[:-4], "USDT", "USDT",
                  MarketKind.PERP, Decimal(1), Decimal("0.001"), Decimal("0.001"), None,
                  Decimal("0.1"))


@given(rate=st.decimals(min_value=Decimal("-0.1"), max_value=Decimal("0.1"), places=8),
       cap=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("0.05"), places=5))
def test_caps_are_never_exceeded(rate, cap):
    response = {"result": {"list": [{"symbol": "BTCUSDT", "fundingRate": str(rate),
                                     "nextFundingTime": "1770451200000"}]}, "time": 1770422400000}
    snapshot = parse_funding_tickers(
        "bybit", response, {"BTCUSDT": _perp("BTCUSDT")},
        {"BTCUSDT": {"fundingInterval": 480, "upperFundingRate": str(cap),
                     "lowerFundingRate": str(-cap)}}, ["BTCUSDT"], T)
    for quote in snapshot.quotes.values():
        assert -cap <= quote.rate <= cap
    assert len(snapshot.quotes) + len(snapshot.skipped) == 1


async def test_no_fee_schedule_without_credentials(client):
    assert await client.fetch_fee_schedule() is None


async def test_offline_snapshot_has_no_perp_books(loaded):
    """The rebuilt tickers hold funding only: perp books are reported unavailable, once."""
    with replaying(SNAPSHOT):
        funding, books = await asyncio.gather(
            loaded.fetch_funding_snapshot(), loaded.fetch_book_tops(MarketKind.PERP),
            return_exceptions=True)
    assert len(funding.quotes) == 22
    assert isinstance(books, InvalidResponse) and "no best bid/ask" in str(books)
    assert loaded.request_count == 1  # funding and perp books share one tickers request
