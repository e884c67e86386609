"""Binance's order half on cassettes built from ccxt's real static captures
(cassettes/binance/PROVENANCE.md, "Order half"). Requests that Binance signs in the body
(orders, transfers, account settings) cannot be matched by a recording; they are tested
against the fake exchange (tests/test_fake_binance_faults.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from support import no_sleep, recorded_requests

from perpcarry.ccxt.replay import replaying
from perpcarry.domain.errors import InvalidResponse
from perpcarry.domain.types import MarketKind
from perpcarry.venues.orders import MarginMode, OrderStatus, OrderType, OrderVenue, Side
from perpcarry.venues.protocol import VenueContext
from perpcarry_binance import BinanceConfig
from perpcarry_binance.venue import BinanceVenue

REPO = Path(__file__).parents[1]
CASSETTES = REPO / "cassettes" / "binance"


def sent(cassette: str) -> list[dict]:
    return recorded_requests(CASSETTES / cassette)


@pytest.fixture
async def venue(tmp_path):
    config = BinanceConfig(enabled=True, api_key=SecretStr("fake-test-key-not-real"),
                           secret=SecretStr("fake-test-secret-not-real"))
    client = BinanceVenue(config, VenueContext(cache_dir=tmp_path, offline=True,
                                               sleep=no_sleep))
    with replaying(CASSETTES / "markets_full.json"):
        await client.load_markets()
    yield client
    await client.close()


async def test_open_swap_order_by_orig_client_order_id(venue):
    market = await venue.market("LTC/USDT:USDT")
    with replaying(CASSETTES / "orders_fetch_open_swap_ccxt_static.json"):
        state = await venue.fetch_order(market, "x-xcKtGhcu68f8383451844295b3e8b9")
    assert (state.status, state.type, state.side) == (OrderStatus.NEW, OrderType.LIMIT,
                                                      Side.BUY)
    assert (state.quantity, state.filled_quantity, state.fees) == (Decimal("0.2"),
                                                                   Decimal(0), ())
    assert state.venue_order_id == "664082074"
    [query] = sent("orders_fetch_open_swap_ccxt_static.json")
    assert query["uri"].startswith("https://fapi.binance.com/fapi/v1/order?")
    assert "origClientOrderId=x-xcKtGhcu68f8383451844295b3e8b9" in query["uri"]
    assert "signature" not in query["uri"]  # recordings hold no signed query


async def test_positions_from_position_risk(venue):
    with replaying(CASSETTES / "orders_positions_ccxt_static.json"):
        [position] = await venue.fetch_positions()
    assert (position.symbol, position.side, position.quantity) == (
        "BTC/USDT:USDT", Side.BUY, Decimal("0.009"))
    assert position.entry_price == Decimal("67445.9")
    assert position.mark_price == Decimal("67502.68519858")
    assert position.unrealised_pnl == Decimal("0.51106678")
    assert position.liquidation_price == Decimal("64846.9875379")
    assert position.maintenance_margin == Decimal("2.43009666")
    assert position.margin_mode is MarginMode.CROSS  # isolatedMargin 0
    assert position.leverage is None  # /fapi/v3/positionRisk no longer reports it
    assert position.liquidation_distance.quantize(Decimal("0.0001")) == Decimal("0.0393")


async def test_funding_payment_paid_is_negative(venue):
    with replaying(CASSETTES / "orders_funding_ccxt_static.json"):
        [payment] = await venue.fetch_funding_payments(datetime(2024, 2, 9, tzinfo=UTC),
                                                       datetime(2024, 2, 10, tzinfo=UTC))
    assert (payment.symbol, payment.amount, payment.currency) == (
        "BTC/USDT:USDT", Decimal("-0.04618913"), "USDT")
    assert payment.time == datetime(2024, 2, 9, 8, tzinfo=UTC)
    assert payment.payment_id == "8082457372019390060"
    [request] = sent("orders_funding_ccxt_static.json")
    assert "incomeType=FUNDING_FEE" in request["uri"] and "limit=1000" in request["uri"]


async def test_market_limits_come_from_lot_size_and_market_lot_size(venue):
    perps = await venue.markets_by_venue_symbol(MarketKind.PERP)
    btc = perps["BTCUSDT"]
    assert (btc.max_quantity, btc.max_market_quantity) == (Decimal("1000"), Decimal("120"))


def test_sandbox_is_binance_demo_trading(tmp_path):
    config = BinanceConfig(enabled=True, sandbox=True)
    client = BinanceVenue(config, VenueContext(cache_dir=tmp_path, offline=True))
    urls = client.exchange.urls["api"]
    assert urls["fapiPrivate"].startswith("https://demo-fapi.binance.com/")
    assert urls["private"].startswith("https://demo-api.binance.com/")


# -- funding ledger paging, as an invariant -------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(times=st.lists(st.integers(0, 50), min_size=0, max_size=60),
       page=st.integers(1, 9))
def test_every_income_record_is_returned_once_whatever_the_page_size(tmp_path_factory,
                                                                     times, page):
    """Records sharing a millisecond across a page boundary are neither lost nor doubled;
    a page's worth of them at one instant is a clear error, never a silent gap."""
    import asyncio

    import perpcarry_binance.orders as binance_orders

    base = 1_707_465_600_000
    rows = [{"symbol": "BTCUSDT", "incomeType": "FUNDING_FEE", "income": f"-0.0{i + 1}",
             "asset": "USDT", "time": base + t * 3_600_000, "tranId": i}
            for i, t in enumerate(times)]

    async def income(params):
        chosen = sorted((r for r in rows if params["startTime"] <= r["time"]
                         <= params["endTime"]), key=lambda r: (r["time"], r["tranId"]))
        return chosen[:params["limit"]]

    async def run():
        config = BinanceConfig(enabled=True, api_key=SecretStr("fake-test-key-not-real"),
                               secret=SecretStr("fake-test-secret-not-real"))
        client = BinanceVenue(config, VenueContext(cache_dir=tmp_path_factory.mktemp("c"),
                                                   offline=True, sleep=no_sleep))
        with replaying(CASSETTES / "markets_full.json"):
            await client.load_markets()
        client.exchange.fapiPrivateGetIncome = income
        original = binance_orders.INCOME_PAGE_LIMIT
        binance_orders.INCOME_PAGE_LIMIT = page
        try:
            return await client.fetch_funding_payments(
                datetime.fromtimestamp(base / 1000, UTC),
                datetime.fromtimestamp((base + 51 * 3_600_000) / 1000, UTC))
        finally:
            binance_orders.INCOME_PAGE_LIMIT = original
            await client.close()

    crowded = max((times.count(t) for t in set(times)), default=0)
    if crowded >= page:
        with pytest.raises(InvalidResponse, match="cannot page past them"):
            asyncio.run(run())
        return
    payments = asyncio.run(run())
    assert sorted(int(p.payment_id) for p in payments) == list(range(len(rows)))
    assert sum(p.amount for p in payments) == sum(Decimal(r["income"]) for r in rows)
    assert [p.time for p in payments] == sorted(p.time for p in payments)


def test_the_client_is_an_order_venue(venue):
    assert isinstance(venue, OrderVenue)
