"""The live order path (ccxt over HTTP) against a local fake Binance, fault by fault: what
the caller is told, what is queried, and that nothing is ever re-sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from fake_binance import FakeBinance, Fault
from pydantic import SecretStr
from support import no_sleep

import perpcarry_binance.orders as binance_orders
from perpcarry.config.settings import VenueConfig
from perpcarry.domain.errors import (
    AuthenticationError,
    ClockSkew,
    ConfigError,
    DuplicateClientOrderId,
    InsufficientFunds,
    InvalidOrder,
    NetworkError,
    OutcomeUnknown,
    RateLimitError,
    UsageError,
)
from perpcarry.venues.orders import (
    Leg,
    MarginMode,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    Wallet,
    client_order_id,
    resolve_outcome,
)
from perpcarry.venues.protocol import VenueContext
from perpcarry_binance.venue import BinanceVenue

# The fake listens on 127.0.0.1 only; every other host stays blocked.
pytestmark = pytest.mark.block_network(allowed_hosts=["127.0.0.1"])

USERDATA = (Path(__file__).resolve().parents[2] / "shared" / "data" / "raw-responses"
            / "binance" / "private-usdm-userdata_2024-12-12_eduDorus-arkin")
ADEE = Path(__file__).resolve().parents[2] / "shared" / "data" / "adee-binance" / "data"
PERP, SPOT = "ETH/USDT:USDT", "ETH/USDT"


def _event(name: str) -> dict:
    return json.loads((USERDATA / f"{name}.json").read_text())


# The real account of 2024-12-12: a MARKET BUY of 0.006 ETHUSDT filled at 3925.56, fee
# 0.01177668 USDT, leaving a wallet of 199.98822332 USDT.
REAL_FILL = _event("ORDER_TRADE_UPDATE_1")["o"]
ETH_PRICE = Decimal(REAL_FILL["L"])
REAL_FEE = Decimal(REAL_FILL["n"])
WALLET_AFTER = Decimal(_event("ACCOUNT_UPDATE_0")["a"]["B"][0]["wb"])


def credentials() -> VenueConfig:
    return VenueConfig(enabled=True, api_key=SecretStr("fake-test-key-not-real"),
                       secret=SecretStr("fake-test-secret-not-real"))


@pytest.fixture
async def fake():
    server = FakeBinance(prices={"ETHUSDT": ETH_PRICE, "BTCUSDT": Decimal("100000")})
    server.futures_wallet = WALLET_AFTER + REAL_FEE
    server.spot_balances = {"USDT": Decimal("3000"), "ETH": Decimal(0)}
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def venue(fake, tmp_path):
    client = BinanceVenue(credentials(), VenueContext(cache_dir=tmp_path, sleep=no_sleep,
                                                      base_url=fake.url))
    client.exchange.timeout = 300  # ms: a timed-out request fails fast
    await client.load_markets()
    yield client
    await client.close()


def order(market, side=Side.BUY, quantity="0.006", attempt=0, **extra) -> OrderRequest:
    return OrderRequest(market, side, Decimal(quantity),
                        client_order_id("i1", Leg.PERP if ":" in market.symbol else Leg.SPOT,
                                        0, attempt), **extra)


async def resolved(venue, market, client_id):
    return await resolve_outcome(venue, market, client_id, sleep=no_sleep)


# -- the happy path ------------------------------------------------------------------------


async def test_perp_market_buy_fills_at_the_set_price_with_the_real_fee(venue, fake):
    market = await venue.market(PERP)
    state = await venue.place_order(order(market, quantity=REAL_FILL["q"]))
    assert state.status is OrderStatus.FILLED
    assert (state.filled_quantity, state.average_price) == (Decimal("0.006"), ETH_PRICE)
    # USDⓈ-M order answers carry no fee. place_order does not spend a round trip on it
    # (a perp fee is never in base): the fee is read from the order's fills on a query.
    assert state.fees_pending and state.fees == () and not fake.sent("GET", "/fapi/v1/userTrades")
    queried = await venue.fetch_order(market, state.client_order_id)
    assert not queried.fees_pending
    assert [(f.amount, f.currency) for f in queried.fees] == [(REAL_FEE, REAL_FILL["N"])]
    sent = fake.sent("POST", "/fapi/v1/order")
    assert len(sent) == 1
    assert sent[0].params["newClientOrderId"] == "pci1pe00000"  # ours, no ccxt broker prefix
    assert (sent[0].params["type"], sent[0].params["quantity"]) == ("MARKET", "0.006")
    balances = await venue.fetch_balances()
    assert balances[Wallet.FUTURES]["USDT"].total == WALLET_AFTER  # the real wallet after
    assert set(balances) == {Wallet.SPOT, Wallet.FUTURES, Wallet.FUNDING}


async def test_spot_buy_delivers_the_fill_less_the_fee_taken_in_base(venue, fake):
    market = await venue.market(SPOT)
    state = await venue.place_order(order(market, quantity="0.5"))
    assert state.status is OrderStatus.FILLED
    assert [(f.amount, f.currency) for f in state.fees] == [(Decimal("0.0005"), "ETH")]
    assert state.delivered_quantity == Decimal("0.4995")
    # The query path (no fills in GET /api/v3/order) finds the same fee from myTrades.
    again = await venue.fetch_order(market, state.client_order_id)
    assert again.delivered_quantity == Decimal("0.4995")
    assert fake.sent("GET", "/api/v3/myTrades")[0].params["orderId"] == str(state.venue_order_id)
    spot = (await venue.fetch_balances())[Wallet.SPOT]
    assert spot["ETH"].total == Decimal("0.4995")


async def test_unknown_client_id_is_none_not_an_error(venue, fake):
    market = await venue.market(PERP)
    assert await venue.fetch_order(market, "pcnever00000") is None
    assert await venue.cancel_order(market, "pcnever00000") is None
    assert fake.sent("GET", "/fapi/v1/order")[0].params["origClientOrderId"] == "pcnever00000"


async def test_post_only_and_reduce_only_reach_the_venue(venue, fake):
    market = await venue.market(PERP)
    resting = order(market, type=OrderType.LIMIT, price=Decimal("3500"),
                    time_in_force=TimeInForce.POST_ONLY)
    state = await venue.place_order(resting)
    assert state.status is OrderStatus.NEW
    await venue.place_order(order(market, attempt=1))
    await venue.place_order(order(market, side=Side.SELL, attempt=2, reduce_only=True))
    posted = fake.sent("POST", "/fapi/v1/order")
    assert posted[0].params["timeInForce"] == "GTX"
    assert posted[2].params["reduceOnly"] == "true"
    assert [o.client_order_id for o in await venue.fetch_open_orders()] == ["pci1pe00000"]
    canceled = await venue.cancel_order(market, "pci1pe00000")
    assert canceled.status is OrderStatus.CANCELED


# -- outcome unknown: accepted, then no clear answer ---------------------------------------


@pytest.mark.parametrize("fault", [Fault.TIMEOUT_AFTER_ACCEPT, Fault.ERROR_5XX_AFTER_ACCEPT,
                                   Fault.UNKNOWN_STATUS_1007])
async def test_unclear_answer_is_outcome_unknown_then_found_by_client_id(venue, fake, fault):
    market = await venue.market(PERP)
    fake.inject("POST /fapi/v1/order", fault)
    request = order(market)
    with pytest.raises(OutcomeUnknown) as err:
        await venue.place_order(request)
    assert "signature" not in str(err.value) and "timestamp=" not in str(err.value)
    state = await resolved(venue, market, request.client_order_id)
    assert state.status is OrderStatus.FILLED
    assert state.filled_quantity == Decimal("0.006")
    assert len(fake.sent("POST", "/fapi/v1/order")) == 1  # never re-sent
    queried = fake.sent("GET", "/fapi/v1/order")
    assert queried[0].params["origClientOrderId"] == request.client_order_id


async def test_query_that_keeps_failing_keeps_the_outcome_unknown(venue, fake):
    market = await venue.market(PERP)
    fake.inject("POST /fapi/v1/order", Fault.TIMEOUT_AFTER_ACCEPT)
    fake.inject("GET /fapi/v1/order", *[Fault.ERROR_5XX_AFTER_ACCEPT] * 40)
    with pytest.raises(OutcomeUnknown):
        await venue.place_order(order(market))
    with pytest.raises(OutcomeUnknown) as err:
        await resolved(venue, market, "pci1pe00000")
    assert "outcome still unknown" in str(err.value)
    assert len(fake.sent("POST", "/fapi/v1/order")) == 1


async def test_query_timeouts_are_retried_and_never_leak_the_signed_url(venue, fake):
    market = await venue.market(PERP)
    fake.inject("GET /fapi/v1/order", *[Fault.TIMEOUT_AFTER_ACCEPT] * 4)
    with pytest.raises(NetworkError) as err:
        await venue.fetch_order(market, "pci1pe00000")
    # A timed-out read is retried once (TIMEOUT_RETRIES): a hung endpoint is not waited on
    # four times over.
    assert len(fake.sent("GET", "/fapi/v1/order")) == 2
    assert "signature" not in str(err.value)


# -- definite refusals: told why, nothing executed, nothing re-sent ------------------------


@pytest.mark.parametrize(("fault", "retry_after"), [(Fault.RATE_LIMIT_RETRY_AFTER, 7.0),
                                                   (Fault.RATE_LIMIT, None)])
async def test_rate_limited_order_is_refused_with_retry_after(venue, fake, fault, retry_after):
    market = await venue.market(PERP)
    fake.inject("POST /fapi/v1/order", fault)
    with pytest.raises(RateLimitError) as err:
        await venue.place_order(order(market))
    assert err.value.retry_after == retry_after
    assert len(fake.sent("POST", "/fapi/v1/order")) == 1
    assert await venue.fetch_order(market, "pci1pe00000") is None  # nothing executed


async def test_spot_buy_beyond_the_balance_is_insufficient_funds(venue, fake):
    market = await venue.market(SPOT)
    with pytest.raises(InsufficientFunds):
        await venue.place_order(order(market, quantity="1"))  # 3925.56 USDT > 3000
    assert len(fake.sent("POST", "/api/v3/order")) == 1
    assert await venue.fetch_order(market, order(market).client_order_id) is None


@pytest.mark.parametrize(("symbol", "route", "fault", "error"), [
    (PERP, "POST /fapi/v1/order", Fault.INSUFFICIENT_MARGIN, InsufficientFunds),
    (PERP, "POST /fapi/v1/order", Fault.PRECISION, InvalidOrder),
    (SPOT, "POST /api/v3/order", Fault.PRECISION, InvalidOrder),
    (PERP, "POST /fapi/v1/order", Fault.MIN_NOTIONAL, InvalidOrder),
    (SPOT, "POST /api/v3/order", Fault.MIN_NOTIONAL, InvalidOrder),
])
async def test_refusal_is_its_error_and_sent_once(venue, fake, symbol, route, fault, error):
    market = await venue.market(symbol)
    fake.inject(route, fault)
    with pytest.raises(error):
        await venue.place_order(order(market))
    assert len(fake.sent(*route.split())) == 1
    assert await venue.fetch_order(market, order(market).client_order_id) is None


async def test_timestamp_refusal_resyncs_then_the_same_id_goes_through(venue, fake):
    market = await venue.market(PERP)
    fake.clock_offset_ms = 60_000  # the venue's clock a minute ahead of ours
    request = order(market)
    with pytest.raises(ClockSkew):
        await venue.place_order(request)
    assert fake.sent("GET", "/api/v3/time")  # offset read back from the venue
    assert await venue.fetch_order(market, request.client_order_id) is None
    state = await venue.place_order(request)  # same client id: the first was never accepted
    assert state.status is OrderStatus.FILLED
    assert len([o for o in fake.orders if o[1] == request.client_order_id]) == 1


async def test_query_with_rejected_timestamp_resyncs_and_answers(venue, fake):
    market = await venue.market(PERP)
    fake.inject("GET /fapi/v1/order", Fault.TIMESTAMP_OUTSIDE_RECV_WINDOW)
    assert await venue.fetch_order(market, "pci1pe00000") is None
    assert len(fake.sent("GET", "/fapi/v1/order")) == 2
    assert fake.sent("GET", "/api/v3/time")


@pytest.mark.parametrize(("symbol", "route"), [(PERP, "POST /fapi/v1/order"),
                                               (SPOT, "POST /api/v3/order")])
async def test_duplicate_client_id_while_open_is_refused(venue, fake, symbol, route):
    market = await venue.market(symbol)
    resting = order(market, type=OrderType.LIMIT, price=Decimal("3500"),
                    time_in_force=TimeInForce.POST_ONLY)
    await venue.place_order(resting)
    with pytest.raises(DuplicateClientOrderId):
        await venue.place_order(resting)
    assert len(fake.sent(*route.split())) == 2
    assert len(await venue.fetch_open_orders(market)) == 1


# -- partial fills -------------------------------------------------------------------------


async def test_partial_fill_of_an_ioc_expires_the_rest(venue, fake):
    market = await venue.market(SPOT)
    fake.inject("POST /api/v3/order", Fault.PARTIAL_FILL)
    request = order(market, quantity="0.0100", type=OrderType.LIMIT, price=Decimal("3930"),
                    time_in_force=TimeInForce.IOC)
    state = await venue.place_order(request)
    assert (state.status, state.filled_quantity) == (OrderStatus.EXPIRED, Decimal("0.005"))
    assert state.delivered_quantity == Decimal("0.005") - Decimal("0.000005")  # fee in ETH
    # A post-only order that would cross is not placed: spot refuses it, USDⓈ-M expires it.
    crossing = order(market, quantity="0.0100", attempt=1, type=OrderType.LIMIT,
                     price=Decimal("3930"), time_in_force=TimeInForce.POST_ONLY)
    with pytest.raises(InvalidOrder, match="post-only order would have taken liquidity"):
        await venue.place_order(crossing)
    perp = await venue.market(PERP)
    expired = await venue.place_order(order(perp, quantity="0.010", attempt=2,
                                            type=OrderType.LIMIT, price=Decimal("3930"),
                                            time_in_force=TimeInForce.POST_ONLY))
    assert (expired.status, expired.filled_quantity) == (OrderStatus.EXPIRED, Decimal(0))


async def test_partially_filled_resting_order_is_reported_then_canceled(venue, fake):
    market = await venue.market(PERP)
    fake.inject("POST /fapi/v1/order", Fault.PARTIAL_FILL)
    request = order(market, quantity="0.010", type=OrderType.LIMIT, price=Decimal("3900"),
                    time_in_force=TimeInForce.POST_ONLY)
    placed = await venue.place_order(request)
    assert (placed.status, placed.filled_quantity) == (OrderStatus.PARTIALLY_FILLED,
                                                       Decimal("0.005"))
    [open_order] = await venue.fetch_open_orders(market)
    assert open_order.status is OrderStatus.PARTIALLY_FILLED
    canceled = await venue.cancel_order(market, request.client_order_id)
    assert (canceled.status, canceled.filled_quantity) == (OrderStatus.CANCELED,
                                                           Decimal("0.005"))
    assert canceled.average_price == Decimal("3900")
    assert fake.sent("DELETE", "/fapi/v1/order")[0].params["origClientOrderId"] \
        == request.client_order_id


# -- account -------------------------------------------------------------------------------


async def test_setup_account_is_idempotent(venue, fake):
    market = await venue.market(PERP)
    fake.position_side_dual = True
    await venue.setup_account(market, Decimal(3))
    await venue.setup_account(market, Decimal(3))  # -4059 and -4046 now: already in place
    assert fake.position_side_dual is False and fake.leverage == {"ETHUSDT": 3}
    assert [r.params["marginType"] for r in fake.sent("POST", "/fapi/v1/marginType")] \
        == ["CROSSED", "CROSSED"]
    await venue.setup_account(market, Decimal(2), MarginMode.ISOLATED)
    assert fake.margin_type == {"ETHUSDT": "ISOLATED"}
    with pytest.raises(UsageError, match="whole number"):
        await venue.setup_account(market, Decimal("2.5"))


async def test_key_without_futures_permission_is_one_sentence(venue, fake):
    market = await venue.market(PERP)
    fake.inject("POST /fapi/v1/positionSide/dual", Fault.NO_FUTURES_PERMISSION)
    with pytest.raises(AuthenticationError, match="Enable Futures") as err:
        await venue.setup_account(market, Decimal(2))
    assert "\n" not in str(err.value)


async def test_missing_credentials_name_the_env_vars(fake, tmp_path):
    client = BinanceVenue(VenueConfig(enabled=True),
                          VenueContext(cache_dir=tmp_path, base_url=fake.url))
    with pytest.raises(ConfigError) as err:
        await client.fetch_balances()
    await client.close()
    assert "PERPCARRY_VENUES__BINANCE__API_KEY and PERPCARRY_VENUES__BINANCE__SECRET" \
        in str(err.value)
    assert not fake.requests


async def test_transfer_spot_to_futures_and_positions(venue, fake):
    transfer = await venue.transfer("USDT", Decimal("100"), Wallet.SPOT, Wallet.FUTURES)
    assert (transfer.transfer_id, transfer.amount) == ("13526853623", Decimal("100"))
    assert fake.sent("POST", "/sapi/v1/asset/transfer")[0].params["type"] == "MAIN_UMFUTURE"
    assert fake.spot_balances["USDT"] == Decimal("2900")
    with pytest.raises(UsageError):
        await venue.transfer("USDT", Decimal("1"), Wallet.UNIFIED, Wallet.FUTURES)
    market = await venue.market(PERP)
    await venue.place_order(order(market, side=Side.SELL))
    fake.prices["ETHUSDT"] = Decimal("3915.03")  # the real account's exit price that day
    [position] = await venue.fetch_positions()
    assert (position.side, position.quantity) == (Side.SELL, Decimal("0.006"))
    assert position.entry_price == ETH_PRICE and position.mark_price == Decimal("3915.03")
    assert position.unrealised_pnl == (Decimal("3915.03") - ETH_PRICE) * Decimal("-0.006")
    assert position.margin_mode is MarginMode.CROSS


def _eth_income() -> list[dict]:
    """Funding of a 0.006 ETH short from real ETHUSDT settlements (adee fundingRate dump):
    rate x mark x size, received when the rate is positive."""
    records = json.loads((ADEE / "ETHUSDT_funding.json").read_text())[:60]
    rows = []
    for i, record in enumerate(records):
        for symbol in ("ETHUSDT", "BTCUSDT"):  # two symbols settle at the same millisecond
            amount = Decimal(record["fundingRate"]) * Decimal(record["markPrice"]) \
                * Decimal("0.006")
            rows.append({"symbol": symbol, "incomeType": "FUNDING_FEE",
                         "income": format(amount.quantize(Decimal("1e-8")), "f"),
                         "asset": "USDT", "time": record["fundingTime"], "info": "FUNDING_FEE",
                         "tranId": f"{symbol}{i}", "tradeId": ""})
    return rows


async def test_funding_payments_page_through_shared_milliseconds(venue, fake, monkeypatch):
    fake.income = _eth_income()
    monkeypatch.setattr(binance_orders, "INCOME_PAGE_LIMIT", 7)  # pages end mid-millisecond
    times = sorted(int(r["time"]) for r in fake.income)
    since = datetime.fromtimestamp(times[0] / 1000, UTC)
    until = datetime.fromtimestamp(times[-1] / 1000, UTC)
    payments = await venue.fetch_funding_payments(since, until)
    assert sorted(p.payment_id for p in payments) == sorted(r["tranId"] for r in fake.income)
    assert sum(p.amount for p in payments) == sum(Decimal(r["income"]) for r in fake.income)
    assert [p.time for p in payments] == sorted(p.time for p in payments)
    assert {p.symbol for p in payments} == {"ETH/USDT:USDT", "BTC/USDT:USDT"}
    assert len(fake.sent("GET", "/fapi/v1/income")) > len(fake.income) // 7


# -- every state-changing call is sent once ------------------------------------------------


async def test_cancel_and_transfer_timeouts_are_outcome_unknown_and_not_resent(venue, fake):
    market = await venue.market(PERP)
    resting = order(market, type=OrderType.LIMIT, price=Decimal("3500"),
                    time_in_force=TimeInForce.POST_ONLY)
    await venue.place_order(resting)
    fake.inject("DELETE /fapi/v1/order", Fault.TIMEOUT_AFTER_ACCEPT)
    with pytest.raises(OutcomeUnknown):
        await venue.cancel_order(market, resting.client_order_id)
    assert len(fake.sent("DELETE", "/fapi/v1/order")) == 1
    state = await venue.fetch_order(market, resting.client_order_id)
    assert state.status is OrderStatus.CANCELED  # it did land
    fake.inject("POST /sapi/v1/asset/transfer", Fault.ERROR_5XX_AFTER_ACCEPT)
    with pytest.raises(OutcomeUnknown):
        await venue.transfer("USDT", Decimal("10"), Wallet.SPOT, Wallet.FUTURES)
    assert len(fake.sent("POST", "/sapi/v1/asset/transfer")) == 1
    assert fake.spot_balances["USDT"] == Decimal("2990")  # moved: read balances, not retry


async def test_rate_limited_query_waits_retry_after_and_retries(fake, tmp_path):
    slept: list[float] = []

    async def record_sleep(seconds: float) -> None:
        slept.append(seconds)

    client = BinanceVenue(credentials(), VenueContext(cache_dir=tmp_path, sleep=record_sleep,
                                                      base_url=fake.url))
    client.exchange.timeout = 300
    try:
        market = await client.market(PERP)
        fake.inject("GET /fapi/v1/order", Fault.RATE_LIMIT_RETRY_AFTER)
        assert await client.fetch_order(market, "pcabsent0p00000") is None
    finally:
        await client.close()
    assert len(slept) == 1 and slept[0] >= 7.0  # Retry-After, plus the helper's jitter
    assert len(fake.sent("GET", "/fapi/v1/order")) == 2


async def test_open_orders_of_every_market_are_one_request_per_kind(venue, fake):
    spot, perp = await venue.market(SPOT), await venue.market(PERP)
    for market in (spot, perp):
        await venue.place_order(order(market, quantity="0.010", type=OrderType.LIMIT,
                                      price=Decimal("3000"),
                                      time_in_force=TimeInForce.POST_ONLY))
    states = await venue.fetch_open_orders()
    assert sorted(s.symbol for s in states) == sorted([PERP, SPOT])
    assert len(fake.sent("GET", "/api/v3/openOrders")) == 1
    assert len(fake.sent("GET", "/fapi/v1/openOrders")) == 1
    assert "symbol" not in fake.sent("GET", "/fapi/v1/openOrders")[0].params
    recent = await venue.fetch_recent_orders(perp)
    assert [s.client_order_id for s in recent] == ["pci1pe00000"]


async def test_filled_order_whose_fills_are_not_listed_yet_is_not_fee_free(venue, fake):
    market = await venue.market(SPOT)
    state = await venue.place_order(order(market, quantity="0.5"))
    fake.trades.clear()  # the venue's trade list lags its order state
    with pytest.raises(NetworkError, match="fills are not listed yet: fee unknown"):
        await venue.fetch_order(market, state.client_order_id)
    assert len(fake.sent("GET", "/api/v3/myTrades")) == 4  # the query and its 3 retries
    # After an unclear placement the caller keeps the outcome unknown, never fee-free.
    with pytest.raises(OutcomeUnknown, match="outcome still unknown"):
        await resolved(venue, market, state.client_order_id)
