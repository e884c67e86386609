"""Venue-specific behaviour the conformance kit does not pin down: the numbers in the
recorded session (instant T = 2025-04-17 12:00 UTC, see cassettes/PROVENANCE.md)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest

from perpcarry.ccxt.replay import replaying
from perpcarry.domain.types import MarketKind
from perpcarry.plugins.manager import load_registry
from perpcarry.venues.protocol import VenueContext, carry_pairs

T = datetime(2025, 4, 17, 12, tzinfo=UTC)


async def _no_sleep(seconds: float) -> None:
    return None


def _client(cache_dir, *, offline: bool = True):
    spec = load_registry().venues["hyperliquid"]
    context = VenueContext(cache_dir=cache_dir, offline=offline, sleep=_no_sleep)
    return spec, spec.factory(spec.config_model(enabled=True), context)


def test_registered_through_the_entry_point():
    registry = load_registry()
    assert registry.venues["hyperliquid"].plugin == "hyperliquid_example"
    assert registry.fee_model("hyperliquid").perp_taker == Decimal("0.00045")


def test_snapshot_funding_is_hourly_with_real_rates(tmp_path):
    async def run():
        spec, client = _client(tmp_path)
        try:
            with replaying(spec.offline_snapshot):
                markets = await client.load_markets()
                snapshot = await client.fetch_funding_snapshot()
            return markets, snapshot, client.request_count
        finally:
            await client.close()

    markets, snapshot, requests = asyncio.run(run())
    # Two market requests (perps and spot, sent concurrently) and one for the funding of
    # every perp.
    assert requests == 3
    assert sorted(snapshot.quotes) == [
        "BTC/USDC:USDC", "DOGE/USDC:USDC", "ETH/USDC:USDC", "SOL/USDC:USDC"]
    btc = snapshot.quotes["BTC/USDC:USDC"]
    assert btc.rate == Decimal("0.000008573446666666664")
    assert btc.interval_hours == 1 and btc.is_predicted
    assert btc.timestamp == T and btc.next_funding_time == T + timedelta(hours=1)
    assert btc.mark_price == Decimal("84523") and btc.rate_cap == Decimal("0.04")
    assert [p.label for p in carry_pairs(markets)] == ["BTC/USDC", "ETH/USDC"]
    spot_btc = next(m for m in markets if m.symbol == "BTC/USDC")
    assert spot_btc.kind is MarketKind.SPOT and spot_btc.venue_symbol == "@142"
    assert spot_btc.quantity_step == Decimal("0.00001")


def test_history_pages_forward_without_gaps_and_caches(tmp_path):
    async def run():
        spec, client = _client(tmp_path, offline=False)  # offline runs cache no history
        try:
            with replaying(spec.offline_snapshot):
                await client.load_markets()
                history = client.fetch_funding_history
                first = await history("BTC/USDC:USDC", T - timedelta(days=30), T)
                after_first = client.request_count
                again = await history("ETH/USDC:USDC", T - timedelta(days=30), T)
                cached = await history("BTC/USDC:USDC", T - timedelta(days=10), T)
            return first, again, cached, after_first, client.request_count
        finally:
            await client.close()

    first, eth, cached, after_first, total = asyncio.run(run())
    assert after_first == 2 + 2  # markets (perps, spot), then two 500-row pages
    assert len(first) == len(eth) == 30 * 24 + 1
    steps = {b.funding_time - a.funding_time for a, b in pairwise(first)}
    assert steps == {timedelta(hours=1)}
    assert first[0].funding_time == T - timedelta(days=30) and first[-1].funding_time == T
    assert total == after_first + 2  # ETH's two pages; the BTC sub-range came from SQLite
    assert cached == [r for r in first if r.funding_time >= T - timedelta(days=10)]


@pytest.mark.parametrize("coin", ["BTC", "ETH"])
def test_net_apr_by_hand_for_a_1h_perp_from_the_bundled_snapshot(coin):
    """The scan's numbers for an hourly perp, recomputed here from the recorded responses:
    the 7-day mean of the settled rates, 8,760 payments a year, the tier-0 takers on both
    legs in and out over the 30-day horizon (no books on this venue: no basis, no spread)."""
    from perpcarry.config.loader import load_config
    from perpcarry.scan.engine import ScanOptions, run_scan

    result = asyncio.run(run_scan(load_config(None),
                                  ScanOptions(offline=True, venues=("hyperliquid",))))
    row = next(r for r in result.rows + result.reverse_rows
               if r.pair.perp.symbol == f"{coin}/USDC:USDC")
    settled = {}
    snapshot = json.loads(load_registry().venues["hyperliquid"].offline_snapshot.read_text())
    for interaction in snapshot["interactions"]:
        query = json.loads(interaction["request"]["body"])
        if query == {**query, "type": "fundingHistory", "coin": coin}:
            body = json.loads(interaction["response"]["body"]["string"])
            settled.update({entry["time"]: float(entry["fundingRate"]) for entry in body})
    end_ms = int(T.timestamp() * 1000)
    window = [rate for time_ms, rate in settled.items()
              if end_ms - 168 * 3_600_000 < time_ms <= end_ms]
    assert row.quote.interval_hours == 1 and len(window) == 168
    expected_apr = sum(window) / 168 * 8760
    round_trip = 2 * (0.0007 + 0.00045)
    assert row.expected_apr == pytest.approx(expected_apr, rel=1e-12)
    assert row.round_trip_cost == pytest.approx(round_trip, rel=1e-12)
    assert row.net_apr == pytest.approx(expected_apr - round_trip * 365 / 30, rel=1e-12)
    assert row.current_apr == pytest.approx(float(row.quote.rate) * 8760, rel=1e-12)


def test_missing_fields_are_skipped_not_zeroed(tmp_path):
    cassettes = Path(__file__).parents[1] / "cassettes"

    async def run():
        spec, client = _client(tmp_path)
        try:
            with replaying(spec.offline_snapshot):
                await client.load_markets()
            with replaying(cassettes / "error_missing_fields.json"):
                return await client.fetch_funding_snapshot()
        finally:
            await client.close()

    snapshot = asyncio.run(run())
    assert list(snapshot.quotes) == ["DOGE/USDC:USDC"]
    reasons = {s.symbol: s.reason for s in snapshot.skipped}
    assert reasons == {
        "BTC/USDC:USDC": "field funding is missing",
        "ETH/USDC:USDC": "field funding is missing",
        "SOL/USDC:USDC": "field funding is invalid value ''",
        "ATOM": "unknown symbol (not a listed perp)",
    }


def test_the_scan_shows_no_books_and_says_none_are_declared():
    """No bulk book endpoint: the scan does not ask for books (no "books unavailable" error
    note), every row's basis and spread are n/a, and the notes say why."""
    from perpcarry.config.loader import load_config
    from perpcarry.scan.engine import ScanOptions, run_scan

    result = asyncio.run(run_scan(load_config(None),
                                  ScanOptions(offline=True, venues=("hyperliquid",))))
    rows = result.rows + result.reverse_rows
    assert rows and all(r.basis is None and r.spread_cost is None for r in rows)
    assert result.notes == [
        "hyperliquid: no books declared: basis and spread n/a, cost is fees only"]


@pytest.mark.parametrize("field", ["wallet_address", "private_key"])
def test_credentials_come_in_pairs(field):
    from perpcarry_example_hyperliquid import HyperliquidConfig
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="missing credential"):
        HyperliquidConfig(**{field: "x"})
