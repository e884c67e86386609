"""OKX's order half on cassettes built from ccxt's real static captures
(cassettes/okx/PROVENANCE.md, "Order half"): what is parsed and what is sent, quantities in
base units at the interface and in contracts on the wire."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from support import no_sleep, recorded_requests

from perpcarry.ccxt.replay import replaying
from perpcarry.domain.errors import InvalidOrder, OutcomeUnknown, UsageError
from perpcarry.venues.orders import (
    MarginMode,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderVenue,
    Side,
    TimeInForce,
    Wallet,
)
from perpcarry.venues.protocol import VenueContext
from perpcarry_okx import OkxConfig
from perpcarry_okx.venue import OkxVenue

REPO = Path(__file__).parents[1]
CASSETTES = REPO / "cassettes" / "okx"
SNAPSHOT = REPO / "plugins" / "okx" / "snapshot" / "snapshot.json"


def sent(cassette: str) -> list[dict]:
    return recorded_requests(CASSETTES / cassette)


@pytest.fixture
async def venue(tmp_path):
    config = OkxConfig(enabled=True, api_key=SecretStr("fake-test-key-not-real"),
                       secret=SecretStr("fake-test-secret-not-real"),
                       passphrase=SecretStr("fake-test-passphrase"))
    client = OkxVenue(config, VenueContext(cache_dir=tmp_path, offline=True, sleep=no_sleep))
    with replaying(SNAPSHOT):
        await client.load_markets()
    yield client
    await client.close()


async def test_swap_post_only_is_sent_in_contracts_with_td_mode_and_our_id(venue):
    market = await venue.market("ADA/USDT:USDT")
    assert market.contract_size == Decimal("100")  # ctVal: 100 ADA per contract
    request = OrderRequest(market, Side.BUY, Decimal("5000"), "e847386590ce4dBC28d905b5946bad5a",
                           OrderType.LIMIT, Decimal("0.2"), TimeInForce.POST_ONLY)
    with replaying(CASSETTES / "orders_place_swap_ccxt_static.json"):
        state = await venue.place_order(request)
    create, query = sent("orders_place_swap_ccxt_static.json")
    [body] = json.loads(create["body"])
    assert body == {"instId": "ADA-USDT-SWAP", "side": "buy", "ordType": "post_only",
                    "sz": "50", "tdMode": "cross", "px": "0.2",
                    "clOrdId": "e847386590ce4dBC28d905b5946bad5a"}  # no ccxt broker tag
    assert query["uri"].endswith("/trade/order?instId=ADA-USDT-SWAP"
                                 "&clOrdId=e847386590ce4dBC28d905b5946bad5a")
    # The venue's answer in contracts (sz 50) comes back in base units.
    assert (state.status, state.quantity, state.filled_quantity) == (
        OrderStatus.NEW, Decimal("5000"), Decimal(0))
    assert state.venue_order_id == "645348448086081536"


async def test_quantity_that_is_not_whole_contract_steps_is_refused_before_sending(venue):
    market = await venue.market("ADA/USDT:USDT")  # lot 0.1 contract = 10 ADA
    request = OrderRequest(market, Side.SELL, Decimal("5005"), "pcokxstep0p00000")
    with pytest.raises(InvalidOrder, match="not a multiple of the step 10"):
        await venue.place_order(request)


async def test_spot_buy_fee_in_base_is_taken_off_the_delivered_quantity(venue):
    market = await venue.market("LTC/USDT")
    with replaying(CASSETTES / "orders_fetch_spot_ccxt_static.json"):
        state = await venue.fetch_order(market, "e847386590ce4dBC6f7ae74854f6a617")
    assert (state.status, state.filled_quantity) == (OrderStatus.FILLED, Decimal("0.1"))
    assert state.average_price == Decimal("101.58")
    assert [(f.amount, f.currency) for f in state.fees] == [(Decimal("0.0001"), "LTC")]
    assert state.delivered_quantity == Decimal("0.0999")
    [query] = sent("orders_fetch_spot_ccxt_static.json")
    assert "clOrdId=e847386590ce4dBC6f7ae74854f6a617" in query["uri"]


async def test_position_in_contracts_is_reported_in_base(venue):
    with replaying(CASSETTES / "orders_positions_ccxt_static.json"):
        [position] = await venue.fetch_positions()
    assert (position.symbol, position.side, position.quantity) == (
        "LTC/USDT:USDT", Side.BUY, Decimal("1"))  # pos 1 contract x ctVal 1 LTC
    assert (position.entry_price, position.mark_price) == (Decimal("68.24"), Decimal("68.24"))
    assert position.leverage == Decimal("3")
    assert position.margin_mode is MarginMode.CROSS
    assert position.maintenance_margin == Decimal("0.00044356")
    assert position.liquidation_price is None  # liqPx "": unknown, never zero
    [query] = sent("orders_positions_ccxt_static.json")
    assert query["uri"].endswith("/account/positions?instType=SWAP")


async def test_transfer_between_trading_and_funding_accounts(venue):
    with replaying(CASSETTES / "orders_transfer_ccxt_static.json"):
        transfer = await venue.transfer("USDC", Decimal("1"), Wallet.UNIFIED, Wallet.FUNDING)
    assert (transfer.transfer_id, transfer.amount, transfer.currency) == (
        "820757608", Decimal("1"), "USDC")
    [request] = sent("orders_transfer_ccxt_static.json")
    assert json.loads(request["body"]) == {"ccy": "USDC", "amt": "1", "type": "0",
                                           "from": "18", "to": "6"}
    with pytest.raises(UsageError, match="unified"):
        await venue.transfer("USDT", Decimal("1"), Wallet.SPOT, Wallet.FUTURES)


def test_sandbox_is_okx_simulated_trading(tmp_path):
    client = OkxVenue(OkxConfig(enabled=True, sandbox=True),
                      VenueContext(cache_dir=tmp_path, offline=True))
    assert client.exchange.headers["x-simulated-trading"] == "1"


async def test_cancel_acknowledged_is_read_back_and_may_have_filled(venue):
    market = await venue.market("LTC/USDT")
    with replaying(CASSETTES / "orders_cancel_filled_docs-example.json"):
        state = await venue.cancel_order(market, "e847386590ce4dBC6f7ae74854f6a617")
    assert (state.status, state.delivered_quantity) == (OrderStatus.FILLED, Decimal("0.0999"))
    cancel, query = sent("orders_cancel_filled_docs-example.json")
    assert json.loads(cancel["body"]) == {"instId": "LTC-USDT",
                                          "clOrdId": "e847386590ce4dBC6f7ae74854f6a617"}
    assert "clOrdId=e847386590ce4dBC6f7ae74854f6a617" in query["uri"]


def test_the_client_is_an_order_venue(venue):
    assert isinstance(venue, OrderVenue)


async def test_reduce_only_swap_order_in_contracts(venue):
    market = await venue.market("ETH/USDT:USDT")  # ctVal 0.1 ETH
    request = OrderRequest(market, Side.SELL, Decimal("0.1"), "pcreduce1p00000",
                           reduce_only=True)
    with replaying(CASSETTES / "orders_place_reduce_only_ccxt_static.json"), \
            pytest.raises(OutcomeUnknown, match="not found yet"):
        await venue.place_order(request)
    [body] = json.loads(sent("orders_place_reduce_only_ccxt_static.json")[0]["body"])
    assert body == {"instId": "ETH-USDT-SWAP", "side": "sell", "ordType": "market", "sz": "1",
                    "tdMode": "cross", "clOrdId": "pcreduce1p00000", "reduceOnly": True}


async def test_balances_of_the_trading_and_funding_accounts(venue):
    with replaying(CASSETTES / "orders_balances_docs-example.json"):
        balances = await venue.fetch_balances()
    usdt = balances[Wallet.UNIFIED]["USDT"]
    # availEq free, eq total (equity includes the unrealised -7.5456), used the difference
    # (OKX's own frozenBal, 158.573, differs from it in the 13th decimal).
    assert (usdt.free, usdt.total) == (Decimal("4834.3170936228935"),
                                       Decimal("4992.890093622894"))
    assert usdt.used == usdt.total - usdt.free == Decimal("158.5730000000005")
    tusd = balances[Wallet.FUNDING]["TUSD"]
    assert (tusd.free, tusd.used, tusd.total) == (Decimal("100"), Decimal("0"), Decimal("100"))
    uris = [r["uri"] for r in sent("orders_balances_docs-example.json")]
    assert [u.split("okx.com")[1] for u in uris] == ["/api/v5/account/balance",
                                                     "/api/v5/asset/balances"]


async def test_a_market_order_above_the_market_order_maximum_is_refused_before_sending(venue):
    from perpcarry.venues.orders import check_order_size

    market = await venue.market("BTC/USDT:USDT")
    # maxMktSz 12000 contracts of 0.01 BTC (real instruments), maxLmtSz 100000000.
    assert (market.max_market_quantity, market.max_quantity) == (Decimal("12000"),
                                                                 Decimal("100000000"))
    assert check_order_size(market, Decimal("120"), Decimal("100000")) == Decimal("12000")
    with pytest.raises(InvalidOrder, match="above the maximum quantity 12000 per market"):
        check_order_size(market, Decimal("120.01"), Decimal("100000"))
    assert check_order_size(market, Decimal("120.01"), Decimal("100000"), OrderType.LIMIT) \
        == Decimal("12001")


async def test_funding_bills_page_backward_by_bill_id(venue, monkeypatch):
    """The paging logic only (no real OKX funding bill exists): type-8 bills, newest first,
    ``after`` the last bill id of each full page; balChg is already positive when received."""
    import perpcarry_okx.orders as okx_orders

    bills = [{"billId": str(900 - i), "instId": "BTC-USDT-SWAP", "ccy": "USDT",
              "balChg": "-0.01" if i % 2 else "0.02", "ts": str(1_709_251_200_000 - i * 28_800_000),
              "type": "8"} for i in range(7)]  # newest first
    asked: list[dict] = []

    async def bills_archive(params):
        asked.append(dict(params))
        older = [b for b in bills if "after" not in params or int(b["billId"])
                 < int(params["after"])]
        return {"code": "0", "data": older[:int(params["limit"])]}

    monkeypatch.setattr(okx_orders, "BILLS_PAGE_LIMIT", 3)
    venue.exchange.privateGetAccountBillsArchive = bills_archive
    payments = await venue.fetch_funding_payments(datetime(2024, 2, 1, tzinfo=UTC),
                                                  datetime(2024, 3, 2, tzinfo=UTC))
    assert [p.payment_id for p in payments] == [b["billId"] for b in reversed(bills)]
    assert sum(p.amount for p in payments) == Decimal("0.05")
    assert [a.get("after") for a in asked] == [None, "898", "895"]
    assert {a["type"] for a in asked} == {"8"}
    assert payments[0].symbol == "BTC/USDT:USDT"


async def test_open_orders_of_every_market_one_request_per_instrument_type(venue):
    with replaying(CASSETTES / "orders_open_all_ccxt_static.json"):
        [state] = await venue.fetch_open_orders()
    assert (state.symbol, state.status, state.quantity) == ("ADA/USDT:USDT", OrderStatus.NEW,
                                                            Decimal("5000"))
    assert [r["uri"].rsplit("?", 1)[1] for r in sent("orders_open_all_ccxt_static.json")] \
        == ["instType=SPOT", "instType=SWAP"]


async def test_recent_orders_read_filled_and_canceled_history(venue):
    with replaying(CASSETTES / "orders_recent_swap_ccxt_static.json"):
        [state] = await venue.fetch_recent_orders(await venue.market("LTC/USDT:USDT"))
    assert (state.client_order_id, state.status) == ("e847386590ce4dBC2f7dbb9924c2b77c",
                                                     OrderStatus.FILLED)
    assert (state.filled_quantity, state.average_price) == (Decimal("1"), Decimal("68.24"))
    assert [(f.amount, f.currency) for f in state.fees] == [(Decimal("0.00003412"), "USDT")]
    states = [r["uri"].rsplit("state=", 1)[-1] for r in
              sent("orders_recent_swap_ccxt_static.json")[1:]]
    assert states == ["filled", "canceled"]
