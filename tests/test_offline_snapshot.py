"""What `scan --offline` and `plan --offline` show from the bundled real snapshots: how many
rows each venue has, which rows have a real reference price, and that the plan spreads
capital over all three venues (cassettes/bybit/PROVENANCE.md, cassettes/okx/PROVENANCE.md)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from perpcarry.config.loader import load_config
from perpcarry.scan.engine import ScanOptions, run_scan


@pytest.fixture(scope="module")
def offline():
    return asyncio.run(run_scan(load_config(None), ScanOptions(offline=True)))


def test_every_venue_has_carry_rows_at_its_instant(offline):
    assert Counter(r.venue for r in offline.rows) == {"binance": 72, "bybit": 18, "okx": 3}
    assert Counter(r.venue for r in offline.reverse_rows) == {"binance": 7, "bybit": 3}
    assert offline.snapshot_times == {
        "binance": datetime(2025, 9, 9, tzinfo=UTC),
        "bybit": datetime(2026, 1, 20, 8, tzinfo=UTC),
        "okx": datetime(2026, 1, 20, 7, tzinfo=UTC)}


def test_bybit_spot_legs_come_from_the_real_2024_spot_list(offline):
    bybit = {r.pair.base: r.pair.spot for r in offline.rows + offline.reverse_rows
             if r.venue == "bybit"}
    assert len(bybit) == 21  # every quoted USDT perp but HYPE (listed on spot after 2024-08)
    # BTCUSDT of the 2024-08-20 list: minOrderQty 0.000048, basePrecision 0.000001 (the
    # ccxt static object the snapshot used before has 0.000011).
    assert bybit["BTC"].min_quantity == Decimal("0.000048")
    assert bybit["BTC"].quantity_step == Decimal("0.000001")


def test_reference_prices_exist_exactly_where_real_prices_do(offline):
    priced = {(r.venue, r.pair.base): r.reference_price
              for r in offline.rows + offline.reverse_rows if r.reference_price is not None}
    assert {key for key in priced if key[0] != "binance"} == {
        ("bybit", "BTC"), ("bybit", "ETH"), ("bybit", "SOL"), ("bybit", "DOGE"),
        ("okx", "BTC"), ("okx", "ETH"), ("okx", "DOGE")}
    assert sum(venue == "binance" for venue, _ in priced) == 79  # every Binance row
    # Perp prices an hour apart on the two venues (knx 1h candle closes).
    assert priced["bybit", "BTC"] == Decimal("91124.9")
    assert priced["okx", "BTC"] == Decimal("90900")


def test_bybit_and_okx_show_the_rates_that_settle_at_the_same_instant(offline):
    quotes = {(r.venue, r.pair.base): r.quote for r in offline.rows + offline.reverse_rows}
    settlement = datetime(2026, 1, 20, 8, tzinfo=UTC)
    assert quotes["bybit", "BTC"].last_settlement == settlement  # the rate settled at 08:00
    assert quotes["okx", "BTC"].next_funding_time == settlement  # the rate settling at 08:00


def test_plan_allocates_on_all_three_venues_and_leaves_nothing_idle(run_cli):
    result = run_cli("plan", "--offline", "--capital", "100000", "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    per_venue = Counter()
    for position in plan["positions"]:
        per_venue[position["venue"]] += float(position["capital"])
    assert set(per_venue) == {"binance", "bybit", "okx"}
    assert per_venue["binance"] == pytest.approx(50_000, abs=1)
    assert per_venue["okx"] == pytest.approx(40_000, abs=10)
    assert per_venue["bybit"] == pytest.approx(10_000, abs=10)
    assert plan["unused"]["caps"] == pytest.approx(0, abs=1e-6)
    unpriced = [s for s in plan["scan_skipped"]
                if s["reason"] == "no reference price (no book, no mark)"]
    assert len(unpriced) == 14 and {s["venue"] for s in unpriced} == {"bybit"}
