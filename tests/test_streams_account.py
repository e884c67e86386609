"""Account streams (orders, positions, balances) over ccxt.pro against local servers that
speak each venue's private handshake: pushes parse to the same OrderState / PerpPosition /
Balance the REST path gives, REST is read after every (re)connection, and the executor
waits on fills from the stream instead of polling.

Binance runs against the fake exchange (tests/fake_binance.py) and its user-data stream
(tests/fake_binance_userdata.py), pushing the real captured USDⓈ-M events."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from decimal import Decimal

import pytest
from fake_binance import FakeBinance
from fake_binance_userdata import USERDATA
from fake_binance_wire import FAPI
from pydantic import SecretStr
from support import no_sleep

from perpcarry.config.settings import StreamsConfig, VenueConfig
from perpcarry.execution.journal import Journal
from perpcarry.execution.legs import working_orders
from perpcarry.streams.account import AccountBook
from perpcarry.streams.hub import FeedState, StreamHub
from perpcarry.venues.orders import OrderStatus, Side
from perpcarry.venues.protocol import VenueContext
from perpcarry.venues.streams import StreamKind
from perpcarry_binance.streams import STREAMS as BINANCE_STREAMS
from perpcarry_binance.venue import BinanceVenue

pytestmark = pytest.mark.block_network(allowed_hosts=[r"^127\.0\.0\.1$"])

KEY, SECRET = "fake-test-key-not-real", "fake-test-secret-not-real"
SETTINGS = StreamsConfig(stale_after_seconds={"default": 5}, backoff_base_seconds=0.05,
                         backoff_max_seconds=0.4, max_age_seconds=5)
PERP = "ETH/USDT:USDT"


def _event(name: str) -> dict:
    return json.loads((USERDATA / f"{name}.json").read_text())


REAL_FILL = _event("ORDER_TRADE_UPDATE_1")  # MARKET BUY 0.006 ETHUSDT filled at 3925.56


async def _until(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def fake():
    server = FakeBinance(prices={"ETHUSDT": Decimal(REAL_FILL["o"]["L"]),
                                 "BTCUSDT": Decimal("100000")})
    server.futures_wallet = Decimal("1000")
    server.spot_balances = {"USDT": Decimal("3000"), "ETH": Decimal(0)}
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def venue(fake, tmp_path):
    config = VenueConfig(enabled=True, api_key=SecretStr(KEY), secret=SecretStr(SECRET))
    client = BinanceVenue(config, VenueContext(cache_dir=tmp_path, sleep=no_sleep,
                                               base_url=fake.url))
    await client.load_markets()
    yield client
    await client.close()


@pytest.fixture
def journal(tmp_path):
    with Journal.open(tmp_path / "journal.sqlite", trading=True) as opened:
        yield opened


async def _account_hub(venue, journal) -> tuple[StreamHub, AccountBook]:
    book = AccountBook(venue.venue_id, venue, lambda: working_orders(journal, venue.venue_id))
    hub = StreamHub(venue, BINANCE_STREAMS, SETTINGS, jitter=lambda: 0.5, account=book)
    hub.start({}, (StreamKind.ORDERS, StreamKind.POSITIONS))
    return hub, book


def _seed_real_fill(fake: FakeBinance) -> None:
    """The captured fill as an order and a trade the fake holds (REST answers them)."""
    o = REAL_FILL["o"]
    fake.orders[(FAPI, o["c"])] = {
        "symbol": o["s"], "orderId": o["i"], "clientOrderId": o["c"], "side": o["S"],
        "type": o["o"], "origQty": Decimal(o["q"]), "price": Decimal(o["p"]),
        "executedQty": Decimal(o["z"]), "quote": Decimal(o["z"]) * Decimal(o["ap"]),
        "status": o["X"], "timeInForce": o["f"], "reduceOnly": o["R"], "time": o["T"],
        "updateTime": o["T"]}
    fake.trades.append({"symbol": o["s"], "id": o["t"], "orderId": o["i"],
                        "price": Decimal(o["L"]), "qty": Decimal(o["l"]),
                        "quoteQty": Decimal(o["l"]) * Decimal(o["L"]),
                        "commission": Decimal(o["n"]), "commissionAsset": o["N"],
                        "time": o["T"], "side": o["S"], "kind": FAPI})


async def test_real_order_push_parses_to_the_rest_state(venue, fake, journal):
    hub, book = await _account_hub(venue, journal)
    try:
        await _until(lambda: book.live)
        assert fake.sent("POST", "/fapi/v1/listenKey")
        await fake.user_data.push(REAL_FILL)
        cid = REAL_FILL["o"]["c"]
        await _until(lambda: cid in book.order_states)
        pushed = book.order_states[cid]
        _seed_real_fill(fake)
        rest = await venue.fetch_order(await venue.market(PERP), cid)
    finally:
        await hub.close()
    assert (pushed.status, pushed.side, pushed.filled_quantity, pushed.average_price) == (
        OrderStatus.FILLED, Side.BUY, Decimal("0.006"), Decimal("3925.56"))
    assert pushed.fees == rest.fees == (replace(rest.fees[0], amount=Decimal("0.01177668")),)
    # The push stamps the order with its event time, REST with its creation and update
    # times; everything else is the same state.
    assert replace(pushed, created_at=None, updated_at=None) == replace(
        rest, created_at=None, updated_at=None)


async def test_each_connection_reads_the_account_from_rest_before_it_is_live(
        venue, fake, journal):
    """Reconcile: the journal's working orders by client id and the positions are read over
    REST after the first connection and again after a cut, before the feed is live; an
    order that filled while the stream was down is known from REST."""
    intent_cid = _working_perp_order(journal, fake)
    hub, book = await _account_hub(venue, journal)
    orders_feed = next(f for f in hub.feeds if StreamKind.ORDERS in f.kinds)
    try:
        await _until(lambda: book.live)
        assert fake.sent("GET", "/fapi/v1/order")[0].params["origClientOrderId"] == intent_cid
        assert fake.sent("GET", "/fapi/v3/positionRisk")
        assert book.order_states[intent_cid].status is OrderStatus.NEW
        before = len(fake.sent("GET", "/fapi/v1/order"))
        states: list[FeedState] = []
        hub.status_listeners.append(lambda _v, status: states.append(status.state)
                                    if status is orders_feed else None)
        # The order fills while the connection is cut: no push reaches the client.
        await fake.user_data.drop()
        fake.orders[(FAPI, intent_cid)]["status"] = "FILLED"
        fake.orders[(FAPI, intent_cid)]["executedQty"] = Decimal("0.006")
        fake.orders[(FAPI, intent_cid)]["quote"] = Decimal("0.006") * Decimal("3925.56")
        fake.trades.append({"symbol": "ETHUSDT", "id": 4830037678, "orderId": 1,
                            "price": Decimal("3925.56"), "qty": Decimal("0.006"),
                            "quoteQty": Decimal("23.55336"), "commission": Decimal(
                                "0.01177668"), "commissionAsset": "USDT", "time": 0,
                            "side": "BUY", "kind": FAPI})
        await _until(lambda: orders_feed.counts["reconnects"] >= 1 and book.live)
    finally:
        await hub.close()
    # stale -> REST poll -> ... -> reconciling from REST -> live, in that order.
    assert states[0] is FeedState.STALE and states[-2:] == [FeedState.RECONCILING,
                                                            FeedState.LIVE]
    assert len(fake.sent("GET", "/fapi/v1/order")) > before
    assert book.order_states[intent_cid].status is OrderStatus.FILLED
    assert book.order_states[intent_cid].filled_quantity == Decimal("0.006")


def _working_perp_order(journal: Journal, fake: FakeBinance) -> str:
    """An open intent whose perp order the journal has as acknowledged, resting on the
    fake (NEW): what a reconnect must read by client id."""
    from perpcarry.execution.journal import Intent, JournalOrder, OrderEvent, Purpose
    from perpcarry.venues.orders import Leg, client_order_id

    cid = client_order_id("i1", Leg.PERP, 0, 0)
    journal.begin_intent(
        Intent("i1", "p1", "open", "binance", "ETH", "ETH/USDT", PERP, Decimal("0.006"),
               "perp_first", (Decimal("0.006"),)),
        [JournalOrder(cid, "i1", Leg.PERP, 0, 0, Purpose.ENTRY, "binance", PERP, Side.SELL,
                      Decimal("0.006"), False)])
    journal.mark(cid, OrderEvent.SENT)
    journal.mark(cid, OrderEvent.ACKNOWLEDGED)
    fake.orders[(FAPI, cid)] = {
        "symbol": "ETHUSDT", "orderId": 1, "clientOrderId": cid, "side": "SELL",
        "type": "LIMIT", "origQty": Decimal("0.006"), "price": Decimal("3925.56"),
        "executedQty": Decimal(0), "quote": Decimal(0), "status": "NEW",
        "timeInForce": "GTC", "reduceOnly": False, "time": 0, "updateTime": 0}
    return cid


async def test_refused_listen_key_leaves_the_feed_stale_with_binances_reason(
        venue, fake, journal, logged_warnings):
    fake.user_data.api_key = "another-key"
    hub, book = await _account_hub(venue, journal)
    orders_feed = next(f for f in hub.feeds if StreamKind.ORDERS in f.kinds)
    try:
        await _until(lambda: orders_feed.counts["faults"] >= 1)
    finally:
        await hub.close()
    assert orders_feed.state is FeedState.STALE and not book.live
    assert "Invalid API-key, IP, or permissions" in orders_feed.reason
    assert orders_feed.counts["rest_polls"] >= 1  # REST filled in
    for text in [orders_feed.reason, *logged_warnings]:
        assert KEY not in text and SECRET not in text and "signature=" not in text


async def test_malformed_and_duplicate_pushes_are_skipped_and_counted(venue, fake, journal):
    hub, book = await _account_hub(venue, journal)
    orders_feed = next(f for f in hub.feeds if StreamKind.ORDERS in f.kinds)
    broken = json.loads(json.dumps(REAL_FILL))
    broken["o"]["c"] = "pcbroken"
    broken["o"]["X"] = "HALF_FILLED"  # no status Binance documents
    try:
        await _until(lambda: book.live)
        await fake.user_data.push(broken)
        await _until(lambda: orders_feed.counts["malformed"] == 1)
        await fake.user_data.push(REAL_FILL)
        await _until(lambda: REAL_FILL["o"]["c"] in book.order_states)
        await fake.user_data.push(REAL_FILL)
        await _until(lambda: orders_feed.counts["duplicates"] == 1)
    finally:
        await hub.close()
    assert "pcbroken" not in book.order_states
    assert (orders_feed.counts["malformed"], orders_feed.counts["duplicates"]) == (1, 1)
    assert book.order_states[REAL_FILL["o"]["c"]].status is OrderStatus.FILLED
