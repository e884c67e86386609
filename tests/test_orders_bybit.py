"""Bybit's order half on cassettes built from ccxt's real static captures
(cassettes/bybit/PROVENANCE.md, "Order half"): what is parsed and what is sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from support import no_sleep, recorded_requests

from perpcarry.ccxt.replay import replaying
from perpcarry.domain.errors import OutcomeUnknown, UsageError
from perpcarry.venues.orders import (
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderVenue,
    Side,
    TimeInForce,
    Wallet,
)
from perpcarry.venues.protocol import VenueContext
from perpcarry_bybit import BybitConfig
from perpcarry_bybit.venue import BybitVenue

REPO = Path(__file__).parents[1]
CASSETTES = REPO / "cassettes" / "bybit"
STATIC = REPO.parent / "shared" / "fixtures" / "ccxt-static" / "bybit.json"


def static_request(description: str) -> dict:
    methods = json.loads(STATIC.read_text())["request"]["methods"]
    return next(e for entries in methods.values() for e in entries
                if e["description"] == description)


def sent(cassette: str) -> list[dict]:
    return recorded_requests(CASSETTES / cassette)


@pytest.fixture
async def venue(tmp_path):
    config = BybitConfig(enabled=True, api_key=SecretStr("fake-test-key-not-real"),
                         secret=SecretStr("fake-test-secret-not-real"))
    client = BybitVenue(config, VenueContext(cache_dir=tmp_path, offline=True, sleep=no_sleep))
    with replaying(CASSETTES / "markets_full.json"):
        await client.load_markets()
    yield client
    await client.close()


async def test_spot_post_only_sends_our_order_link_id_and_no_broker(venue):
    market = await venue.market("LTC/USDT")
    request = OrderRequest(market, Side.BUY, Decimal("0.1"), "1609920528444036608",
                           OrderType.LIMIT, Decimal("60"), TimeInForce.POST_ONLY)
    with replaying(CASSETTES / "orders_place_spot_ccxt_static.json"), \
            pytest.raises(OutcomeUnknown, match="accepted as 1609920528435648000 but not found"):
        await venue.place_order(request)
    create, realtime, history = sent("orders_place_spot_ccxt_static.json")
    body = json.loads(create["body"])
    # ccxt's own request for the same order, plus our client id and nothing of ccxt's.
    expected = json.loads(static_request("Spot limit buy with postOnly")["output"])
    assert body == expected | {"orderLinkId": "1609920528444036608"}
    assert create["headers"] == {}  # no Referer broker header recorded
    # The acknowledgement is followed by a query by orderLinkId: open orders, then history.
    assert "/v5/order/realtime?" in realtime["uri"] and "/v5/order/history?" in history["uri"]
    assert all("orderLinkId=1609920528444036608" in r["uri"] for r in (realtime, history))


async def test_spot_buy_reports_the_fill_net_of_the_fee_in_base(venue):
    market = await venue.market("BTC/USDT")
    with replaying(CASSETTES / "orders_fetch_spot_ccxt_static.json"):
        state = await venue.fetch_order(market, "1609602210852247041")
    # A market buy for 50 USDT (qty in quote) filled 0.001614 BTC, then Bybit canceled the
    # rest (PartiallyFilledCanceled); the 0.1 % fee was taken in BTC.
    assert state.status is OrderStatus.CANCELED
    assert state.filled_quantity == Decimal("0.001614")
    assert state.average_price == Decimal("30966.41")
    assert [(f.amount, f.currency) for f in state.fees] == [(Decimal("0.000001614"), "BTC")]
    assert state.delivered_quantity == Decimal("0.001612386")
    assert state.venue_order_id == "1609602210852247040"


async def test_linear_order_not_open_is_found_in_the_history(venue):
    market = await venue.market("BTC/USDT:USDT")
    with replaying(CASSETTES / "orders_fetch_linear_closed_ccxt_static.json"):
        state = await venue.fetch_order(market, "pcbybitfill1p00000")
    assert (state.status, state.filled_quantity) == (OrderStatus.FILLED, Decimal("0.001"))
    assert state.average_price == Decimal("123498")
    assert [(f.amount, f.currency) for f in state.fees] == [(Decimal("0.0679239"), "USDT")]
    assert state.delivered_quantity == Decimal("0.001")  # a perp's fee is not in base
    realtime, history = sent("orders_fetch_linear_closed_ccxt_static.json")
    assert "category=linear" in realtime["uri"] and "orderLinkId=pcbybitfill1p00000" \
        in history["uri"]


async def test_positions_of_both_settle_coins(venue):
    with replaying(CASSETTES / "orders_positions_ccxt_static.json"):
        [position] = await venue.fetch_positions()
    assert (position.symbol, position.side, position.quantity) == (
        "LTC/USDT:USDT", Side.BUY, Decimal("1.2"))
    assert (position.entry_price, position.mark_price) == (Decimal("64.59947917"),
                                                            Decimal("71.1"))
    assert position.unrealised_pnl == Decimal("7.800625")
    assert position.leverage == Decimal("6")
    assert position.maintenance_margin == Decimal("0.81072399")
    assert position.liquidation_price is None  # "" on the account: unknown, never zero
    # A unified account sets the margin mode account-wide; the position does not say.
    assert position.margin_mode is None
    uris = [r["uri"] for r in sent("orders_positions_ccxt_static.json")]
    assert ["settleCoin=USDT" in uris[0], "settleCoin=USDC" in uris[1]] == [True, True]


async def test_funding_payments_are_positive_when_received(venue):
    with replaying(CASSETTES / "orders_funding_ccxt_static.json"):
        payments = await venue.fetch_funding_payments(datetime(2024, 3, 14, tzinfo=UTC),
                                                      datetime(2024, 3, 20, 12, tzinfo=UTC))
    rows = json.loads(json.loads((CASSETTES / "orders_funding_ccxt_static.json").read_text())
                      ["interactions"][0]["response"]["body"]["string"])["result"]["list"]
    # execFee is what the account paid: -0.00708126 means 0.00708126 received.
    assert {p.payment_id: p.amount for p in payments} == {
        r["execId"]: -Decimal(r["execFee"]) for r in rows}
    assert all(p.currency == "USDT" and p.symbol == "LTC/USDT:USDT" for p in payments)
    assert len(payments) == 14 and sum(p.amount for p in payments) == Decimal("0.05866659")
    assert [p.time for p in payments] == sorted(p.time for p in payments)
    [request] = sent("orders_funding_ccxt_static.json")
    assert "execType=Funding" in request["uri"] and "category=linear" in request["uri"]


async def test_unified_account_needs_no_spot_perp_transfer(venue):
    with pytest.raises(UsageError, match="unified"):
        await venue.transfer("USDT", Decimal("10"), Wallet.SPOT, Wallet.FUTURES)


def test_sandbox_is_bybit_demo_trading(tmp_path):
    client = BybitVenue(BybitConfig(enabled=True, sandbox=True),
                        VenueContext(cache_dir=tmp_path, offline=True))
    assert client.exchange.urls["api"]["private"].startswith("https://api-demo.")


async def test_cancel_of_an_order_that_filled_first_reports_it_filled(venue):
    market = await venue.market("BTC/USDT:USDT")
    with replaying(CASSETTES / "orders_cancel_filled_docs-example.json"):
        state = await venue.cancel_order(market, "pcbybitfill1p00000")
    assert (state.status, state.filled_quantity) == (OrderStatus.FILLED, Decimal("0.001"))
    cancel, *queries = sent("orders_cancel_filled_docs-example.json")
    assert json.loads(cancel["body"]) == {"symbol": "BTCUSDT", "category": "linear",
                                          "orderLinkId": "pcbybitfill1p00000"}
    assert [q["method"] for q in queries] == ["GET", "GET"]


def test_the_client_is_an_order_venue(venue):
    assert isinstance(venue, OrderVenue)


async def test_reduce_only_perp_order_body_is_ccxts_plus_our_id(venue):
    market = await venue.market("ADA/USDT:USDT")
    request = OrderRequest(market, Side.SELL, Decimal("81"), "pcreduce1p00000",
                           reduce_only=True)
    with replaying(CASSETTES / "orders_place_reduce_only_ccxt_static.json"), \
            pytest.raises(OutcomeUnknown, match="not found yet"):
        await venue.place_order(request)
    create = sent("orders_place_reduce_only_ccxt_static.json")[0]
    expected = json.loads(static_request("swap market sell reduceOnly order")["output"])
    assert json.loads(create["body"]) == expected | {"orderLinkId": "pcreduce1p00000"}


async def test_balances_of_the_unified_and_funding_wallets(venue):
    with replaying(CASSETTES / "orders_balances_ccxt_static.json"):
        balances = await venue.fetch_balances()
    assert set(balances) == {Wallet.UNIFIED, Wallet.FUNDING}
    usdt = balances[Wallet.UNIFIED]["USDT"]
    assert (usdt.free, usdt.used, usdt.total) == (
        Decimal("3229.64065465"), Decimal("92.61831144"), Decimal("3322.25896609"))
    assert usdt.free + usdt.used == usdt.total
    assert sorted(balances[Wallet.UNIFIED]) == ["ADA", "BTC", "ETH", "LTC", "USDC", "USDT",
                                                "XRP"]
    assert balances[Wallet.FUNDING] == {}  # the documented example holds 0 USDC


async def test_perp_market_order_maximum_comes_from_the_instrument(venue):
    perp = await venue.market("BTC/USDT:USDT")
    raw = venue.raw_markets["BTC/USDT:USDT"]["info"]["lotSizeFilter"]
    assert perp.max_market_quantity == Decimal(raw["maxMktOrderQty"])
    assert perp.max_quantity == Decimal(raw["maxOrderQty"])
    assert perp.max_market_quantity < perp.max_quantity
    assert (await venue.market("BTC/USDT")).max_market_quantity is None  # spot publishes none


async def test_funding_pages_by_seven_day_windows_and_cursor(venue, monkeypatch):
    """The paging logic, answered from the real capture's 14 executions (one week): every
    request asks at most 7 days, cursors are followed, and each execution comes back once."""
    import perpcarry_bybit.orders as bybit_orders

    body = json.loads(json.loads((CASSETTES / "orders_funding_ccxt_static.json").read_text())
                      ["interactions"][0]["response"]["body"]["string"])
    rows = sorted(body["result"]["list"], key=lambda r: int(r["execTime"]))
    asked: list[dict] = []

    async def execution_list(params):
        asked.append(dict(params))
        inside = [r for r in rows if params["startTime"] <= int(r["execTime"])
                  <= params["endTime"]][::-1]  # newest first, as Bybit answers
        start = int(params.get("cursor", 0))
        page = inside[start:start + params["limit"]]
        more = start + params["limit"] < len(inside)
        return {"retCode": 0, "result": {"list": page, "nextPageCursor":
                                         str(start + params["limit"]) if more else ""}}

    monkeypatch.setattr(bybit_orders, "EXECUTION_PAGE_LIMIT", 3)
    venue.exchange.privateGetV5ExecutionList = execution_list
    payments = await venue.fetch_funding_payments(datetime(2024, 3, 1, tzinfo=UTC),
                                                  datetime(2024, 3, 25, tzinfo=UTC))
    assert sorted(p.payment_id for p in payments) == sorted(r["execId"] for r in rows)
    assert all(a["endTime"] - a["startTime"] < 7 * 86_400_000 for a in asked)
    assert any("cursor" in a for a in asked)
    assert asked[0]["startTime"] == int(datetime(2024, 3, 1, tzinfo=UTC).timestamp() * 1000)
    assert asked[-1]["endTime"] == int(datetime(2024, 3, 25, tzinfo=UTC).timestamp() * 1000)


async def test_account_setup_already_in_place_is_not_an_error(venue):
    market = await venue.market("LTC/USDT:USDT")
    with replaying(CASSETTES / "orders_setup_docs-example.json"):
        await venue.setup_account(market, Decimal(6))  # 110025 and 110043: nothing to change
    bodies = [json.loads(r["body"]) for r in sent("orders_setup_docs-example.json")]
    mode = json.loads(static_request("Set position mode to one-way mode")["output"])
    assert bodies[0] == mode | {"symbol": "LTCUSDT"}
    assert bodies[1] == json.loads(static_request("Set margin mode to cross margin")["output"])
    assert bodies[2] == json.loads(static_request("Set leverage swap linear")["output"])
