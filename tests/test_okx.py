"""OKX plugin against real recorded responses (see cassettes/okx/PROVENANCE.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perpcarry.ccxt.replay import replaying
from perpcarry.domain.errors import ExchangeUnavailable, InvalidResponse, RateLimitError
from perpcarry.domain.parsing import MalformedField
from perpcarry.domain.types import Market, MarketKind, SkipLog
from perpcarry.venues.protocol import VenueContext, carry_pairs
from perpcarry_okx import OkxConfig
from perpcarry_okx.parsing import parse_funding_rates, parse_mark_prices, response_rows
from perpcarry_okx.venue import OkxVenue

ROOT = Path(__file__).parents[1]
CASSETTES = ROOT / "cassettes" / "okx"
SNAPSHOT = ROOT / "plugins" / "okx" / "snapshot" / "snapshot.json"
T = datetime(2026, 1, 20, 7, 0, tzinfo=UTC)


async def _no_sleep(_seconds: float) -> None:
    return None


def make_client(cache_dir: Path, offline: bool = True) -> OkxVenue:
    return OkxVenue(OkxConfig(), VenueContext(cache_dir=cache_dir, offline=offline,
                                              sleep=_no_sleep))


async def loaded_client(cache_dir: Path, offline: bool = True) -> OkxVenue:
    """A client whose markets come from the offline snapshot, request counter reset."""
    client = make_client(cache_dir, offline)
    with replaying(SNAPSHOT):
        await client.load_markets()
    client.request_count = 0
    return client


@pytest.fixture
async def venue(tmp_path):
    client = await loaded_client(tmp_path / "cache")
    yield client
    await client.close()


@pytest.fixture
async def online_venue(tmp_path):
    """As ``venue``, with the on-disk caches (offline runs cache no funding history)."""
    client = await loaded_client(tmp_path / "cache", offline=False)
    yield client
    await client.close()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- markets ---------------------------------------------------------------------------

async def test_cold_market_load_is_two_requests_and_warm_load_none(tmp_path):
    cold = make_client(tmp_path, offline=False)
    with replaying(SNAPSHOT):
        markets = await cold.load_markets()
    await cold.close()
    assert cold.request_count == 2  # instruments?instType=SPOT and ?instType=SWAP
    warm = make_client(tmp_path, offline=False)
    markets_again = await warm.load_markets()  # no cassette: any HTTP would fail
    await warm.close()
    assert warm.request_count == 0
    assert {m.symbol for m in markets_again} == {m.symbol for m in markets}


async def test_markets_are_spot_and_linear_swaps_in_contracts(venue):
    markets = {m.symbol: m for m in await venue.load_markets()}
    spots = [m for m in markets.values() if m.kind is MarketKind.SPOT]
    perps = [m for m in markets.values() if m.kind is MarketKind.PERP]
    assert len(spots) == 7
    # 255 real swaps: 236 USDT + 2 USDC linear; 15 inverse and 1 pre-open are dropped
    assert len(perps) == 238
    assert "BTC/USD:BTC" not in markets
    assert not any(m.venue_symbol == "2Z-USDT-SWAP" for m in markets.values())
    btc = markets["BTC/USDT:USDT"]
    assert btc.venue_symbol == "BTC-USDT-SWAP"
    assert btc.contract_size == Decimal("0.01")  # ctVal: BTC per contract
    assert btc.quantity_step == Decimal("0.01")  # lotSz in contracts
    assert markets["BTC/USDC:USDC"].settle == "USDC"
    pairs = carry_pairs(list(markets.values()))
    assert [p.perp.symbol for p in pairs] == [
        "ADA/USDT:USDT", "BTC/USDT:USDT", "DOGE/USDT:USDT", "ETH/USDT:USDT",
        "LTC/USDT:USDT", "TRX/USDT:USDT", "XRP/USDT:USDT"]


# -- funding snapshot ------------------------------------------------------------------

async def test_snapshot_funding_has_real_4h_and_8h_intervals_and_marks(venue):
    with replaying(SNAPSHOT):
        snapshot = await venue.fetch_funding_snapshot()
    assert venue.request_count == 2  # funding-rate?instId=ANY and mark-price?instType=SWAP
    assert snapshot.skipped == ()
    quotes = snapshot.quotes
    assert sorted(quotes) == ["BTC/USDT:USDT", "DOGE/USDT:USDT", "ETH/USDT:USDT",
                              "HYPE/USDT:USDT", "SOL/USDT:USDT"]
    assert quotes["HYPE/USDT:USDT"].interval_hours == 4
    for symbol in ("BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "DOGE/USDT:USDT"):
        assert quotes[symbol].interval_hours == 8
    btc = quotes["BTC/USDT:USDT"]
    assert btc.rate == Decimal("0.0000861155115867")  # knx: settled 2026-01-20 08:00
    assert btc.next_funding_time == utc(2026, 1, 20, 8)
    assert btc.timestamp == T
    assert btc.is_predicted
    assert btc.rate_cap is None
    # Mark = close of the knx OKX swap candle 06:00-07:00: a real price at T.
    assert btc.mark_price == Decimal("90900")
    assert quotes["DOGE/USDT:USDT"].mark_price == Decimal("0.12679")


async def test_quotes_without_recorded_marks_have_no_mark_never_zero(venue):
    """The real 2025-10-27 funding entry has no mark price at its instant: the mark-price
    request is not in that session, and the quote keeps an unknown mark."""
    with replaying(CASSETTES / "funding_rate_btc_2025-10-27.json"):
        snapshot = await venue.fetch_funding_snapshot()
    assert venue.request_count == 2
    assert snapshot.quotes["BTC/USDT:USDT"].mark_price is None


async def test_online_funding_snapshot_spends_no_request_on_marks(online_venue):
    """Online the spot books price a position, so a warm scan stays at one request per
    data kind: no mark-price request."""
    with replaying(CASSETTES / "funding_rate_btc_2025-10-27.json"):
        snapshot = await online_venue.fetch_funding_snapshot()
    assert online_venue.request_count == 1
    assert snapshot.quotes["BTC/USDT:USDT"].mark_price is None


async def test_real_btc_funding_entry_with_caps(venue):
    with replaying(CASSETTES / "funding_rate_btc_2025-10-27.json"):
        snapshot = await venue.fetch_funding_snapshot()
    btc = snapshot.quotes["BTC/USDT:USDT"]
    assert btc.rate == Decimal("0.0000464562120794")
    assert btc.interval_hours == 8
    assert btc.next_funding_time == utc(2025, 10, 28, 0)
    assert (btc.rate_floor, btc.rate_cap) == (Decimal("-0.00375"), Decimal("0.00375"))
    assert btc.timestamp == datetime(2025, 10, 27, 16, 44, 10, 140000, tzinfo=UTC)


async def test_missing_fields_are_skipped_never_zero(venue):
    with replaying(CASSETTES / "error_missing_fields.json"):
        snapshot = await venue.fetch_funding_snapshot()
    assert sorted(snapshot.quotes) == ["BTC/USDT:USDT", "HYPE/USDT:USDT"]
    reasons = {s.symbol: s.reason for s in snapshot.skipped}
    assert len(snapshot.skipped) == 6
    assert "fundingRate is missing" in reasons["ETH/USDT:USDT"]
    assert "fundingRate is invalid value ''" in reasons["SOL/USDT:USDT"]
    assert "nextFundingTime is missing" in reasons["DOGE/USDT:USDT"]
    assert "outside the published limits" in reasons["BTC/USDC:USDC"]
    assert "3h" in reasons["ETH/USDC:USDC"]
    assert "unknown symbol" in reasons["AZTEC-USDT-SWAP"]
    assert all(q.rate != 0 for q in snapshot.quotes.values())


def test_mark_prices_keep_only_positive_numbers():
    rows = [{"instId": "BTC-USDT-SWAP", "markPx": "90900"}, {"instId": "ETH-USDT-SWAP"},
            {"instId": "SOL-USDT-SWAP", "markPx": ""}, {"instId": "DOGE-USDT-SWAP",
                                                        "markPx": "0"}, {"markPx": "1"}]
    assert parse_mark_prices(rows) == {"BTC-USDT-SWAP": Decimal("90900")}


def test_a_row_that_is_not_an_object_is_malformed_not_dropped():
    """A history page with a null row would otherwise lose a settlement in silence."""
    row = {"instId": "BTC-USDT-SWAP", "fundingRate": "0.0001", "fundingTime": "1700000000000"}
    assert response_rows("okx", {"code": "0", "data": [row]}, "x") == [row]
    with pytest.raises(MalformedField, match="public/funding-rate-history: data row 1 is "
                                             "not an object"):
        response_rows("okx", {"code": "0", "data": [row, None]},
                      "public/funding-rate-history")


def test_inverse_swaps_are_ignored_not_skipped():
    skips = SkipLog("okx")
    rows = [{"instId": "BTC-USD-SWAP", "fundingRate": "0.0001"}]
    assert parse_funding_rates("okx", rows, {}, {"BTC-USD-SWAP"}, skips) == {}
    assert skips.entries == []


# -- errors ----------------------------------------------------------------------------

async def test_rate_limit_reads_retry_after(venue):
    with replaying(CASSETTES / "error_rate_limit.json"), pytest.raises(RateLimitError) as err:
        await venue.fetch_funding_snapshot()
    assert err.value.retry_after == 2.0
    assert venue.request_count == 4  # first try + 3 retries


async def test_maintenance_is_exchange_unavailable(venue):
    with replaying(CASSETTES / "error_maintenance.json"), \
            pytest.raises(ExchangeUnavailable, match="50001"):
        await venue.fetch_funding_snapshot()
    assert venue.request_count == 1  # not retried


async def test_truncated_body_is_invalid_response(venue):
    with replaying(CASSETTES / "error_truncated.json"), pytest.raises(InvalidResponse):
        await venue.fetch_funding_snapshot()


# -- history ---------------------------------------------------------------------------

async def test_history_pages_4h_and_8h_without_gaps(venue):
    start, end = utc(2025, 12, 3), utc(2026, 3, 7, 8)
    with replaying(CASSETTES / "history_paging.json"):
        hype = await venue.fetch_funding_history("HYPE/USDT:USDT", start, end)
        assert venue.request_count == 2  # 565 settlements, 400 per page
        btc = await venue.fetch_funding_history("BTC/USDT:USDT", start, end)
        assert venue.request_count == 3
    for records, hours, count in ((hype, 4, 565), (btc, 8, 283)):
        times = [r.funding_time for r in records]
        assert len(records) == count
        assert times[0] == utc(2025, 12, 3, 8) and times[-1] == end
        assert {b - a for a, b in pairwise(times)} == {timedelta(hours=hours)}
    assert hype[-1].rate == Decimal("0.00005")


async def test_overlapping_history_fetches_only_the_new_part(online_venue):
    venue = online_venue
    with replaying(CASSETTES / "history_paging.json"):
        first = await venue.fetch_funding_history("DOGE/USDT:USDT", utc(2026, 1, 1),
                                                  utc(2026, 2, 1))
        assert venue.request_count == 1
        second = await venue.fetch_funding_history("DOGE/USDT:USDT", utc(2026, 1, 15),
                                                   utc(2026, 3, 1))
        assert venue.request_count == 2
    assert len(first) == 31 * 3 + 1  # both ends are settlements
    assert second[0].funding_time == utc(2026, 1, 15)
    assert second[-1].funding_time == utc(2026, 3, 1)
    assert len(second) == 45 * 3 + 1


async def test_offline_snapshot_holds_30_days_for_every_quoted_carry_pair(venue):
    with replaying(SNAPSHOT):
        funding = await venue.fetch_funding_snapshot()
        pairs = [p for p in carry_pairs(await venue.load_markets())
                 if p.perp.symbol in funding.quotes]
        assert [p.base for p in pairs] == ["BTC", "DOGE", "ETH"]
        for pair in pairs:
            # As the scan asks: up to the last settlement, 00:00 (T is 07:00).
            until = funding.quotes[pair.perp.symbol].last_settlement
            assert until == utc(2026, 1, 20, 0)
            records = await venue.fetch_funding_history(pair.perp.symbol,
                                                        until - timedelta(days=30), until)
            assert len(records) == 91  # 8h: 3 a day, both ends settlements
            assert records[-1].funding_time == until


# -- books -----------------------------------------------------------------------------

async def test_spot_book_from_real_ticker(venue):
    """Only a single real OKX spot ticker exists (ccxt static tests); it is served as the
    one row of a tickers?instType=SPOT response."""
    with replaying(CASSETTES / "tickers_spot_single_real.json"):
        books = await venue.fetch_book_tops(MarketKind.SPOT)
    assert venue.request_count == 1
    btc = books.books["BTC/USDT"]
    assert (btc.bid, btc.ask) == (Decimal("73384.7"), Decimal("73384.8"))
    assert (btc.bid_size, btc.ask_size) == (Decimal("0.0655768"), Decimal("0.40193728"))
    assert btc.quote_volume_24h == Decimal("1519926359.597266598")
    assert btc.timestamp == datetime(2024, 3, 13, 11, 10, 43, 709000, tzinfo=UTC)


async def test_no_fee_schedule_without_keys(venue):
    assert await venue.fetch_fee_schedule() is None


# -- invariants ------------------------------------------------------------------------

_rates = st.decimals(min_value=Decimal("-0.05"), max_value=Decimal("0.05"), places=6)


@settings(max_examples=200, deadline=None)
@given(rate=_rates, cap=_rates, span_hours=st.integers(min_value=-2, max_value=12))
def test_parsed_quotes_never_exceed_caps_or_leave_the_interval_set(rate, cap, span_hours):
    market_row = {"instId": "BTC-USDT-SWAP", "fundingRate": str(rate),
                  "fundingTime": "1772870400000",
                  "nextFundingTime": str(1772870400000 + span_hours * 3_600_000),
                  "maxFundingRate": str(abs(cap)), "minFundingRate": str(-abs(cap)),
                  "ts": "1772866800000"}
    perp = _btc_perp()
    skips = SkipLog("okx")
    quotes = parse_funding_rates("okx", [market_row], {"BTC-USDT-SWAP": perp}, set(), skips)
    assert len(quotes) + len(skips.entries) == 1
    for quote in quotes.values():
        assert quote.rate_floor <= quote.rate <= quote.rate_cap
        assert quote.interval_hours in (1, 2, 4, 8)


def _btc_perp() -> Market:
    return Market(venue="okx", symbol="BTC/USDT:USDT", venue_symbol="BTC-USDT-SWAP",
                  base="BTC", quote="USDT", settle="USDT", kind=MarketKind.PERP,
                  contract_size=Decimal("0.01"), quantity_step=Decimal("0.01"),
                  min_quantity=Decimal("0.01"), min_notional=None, price_tick=Decimal("0.1"))
