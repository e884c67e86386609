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
from loguru import logger
from pydantic import SecretStr
from support import no_sleep, until

from perpcarry.config.settings import StreamsConfig, VenueConfig
from perpcarry.execution.journal import Journal
from perpcarry.execution.legs import working_orders
from perpcarry.streams.account import AccountBook
from perpcarry.streams.hub import FeedState, StreamHub
from perpcarry.venues.orders import MarginMode, OrderStatus, Side
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
        await until(lambda: book.live)
        assert fake.sent("POST", "/fapi/v1/listenKey")
        await fake.user_data.push(REAL_FILL)
        cid = REAL_FILL["o"]["c"]
        await until(lambda: cid in book.order_states)
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
        await until(lambda: book.live)
        assert fake.sent("GET", "/fapi/v1/order")[0].params["origClientOrderId"] == intent_cid
        assert fake.sent("GET", "/fapi/v3/positionRisk")
        assert book.order_states[intent_cid].status is OrderStatus.NEW
        before = len(fake.sent("GET", "/fapi/v1/order"))
        positions_before = len(fake.sent("GET", "/fapi/v3/positionRisk"))
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
        await until(lambda: orders_feed.counts["reconnects"] >= 1 and book.live)
    finally:
        await hub.close()
    # stale -> REST poll -> ... -> reconciling from REST -> live, in that order.
    assert states[0] is FeedState.STALE and states[-2:] == [FeedState.RECONCILING,
                                                            FeedState.LIVE]
    assert len(fake.sent("GET", "/fapi/v1/order")) > before
    assert len(fake.sent("GET", "/fapi/v3/positionRisk")) > positions_before
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
        venue, fake, journal):
    fake.user_data.api_key = "another-key"
    logged: list[str] = []
    sink = logger.add(lambda message: logged.append(str(message)), level="DEBUG")
    logger.enable("perpcarry")
    hub, book = await _account_hub(venue, journal)
    orders_feed = next(f for f in hub.feeds if StreamKind.ORDERS in f.kinds)
    try:
        await until(lambda: orders_feed.counts["faults"] >= 2)
    finally:
        await hub.close()
        logger.disable("perpcarry")
        logger.remove(sink)
    assert orders_feed.state is FeedState.STALE and not book.live
    assert "Invalid API-key, IP, or permissions" in orders_feed.reason
    assert orders_feed.counts["rest_polls"] >= 1  # REST filled in
    assert any("stale" in line and "Invalid API-key" in line for line in logged)
    for text in [orders_feed.reason, *logged]:
        assert KEY not in text and SECRET not in text and "signature=" not in text


async def test_no_account_feed_without_credentials(fake, tmp_path, journal):
    client = BinanceVenue(VenueConfig(enabled=True), VenueContext(
        cache_dir=tmp_path, sleep=no_sleep, base_url=fake.url))
    await client.load_markets()
    hub, book = await _account_hub(client, journal)
    await hub.close()
    await client.close()
    assert hub.feeds == [] and not book.live
    assert not fake.sent("POST", "/fapi/v1/listenKey")
    assert BINANCE_STREAMS.mode(StreamKind.ORDERS) == "stream"
    assert BINANCE_STREAMS.mode(StreamKind.BALANCES) == "rest polling"


async def test_malformed_and_duplicate_pushes_are_skipped_and_counted(venue, fake, journal):
    hub, book = await _account_hub(venue, journal)
    orders_feed = next(f for f in hub.feeds if StreamKind.ORDERS in f.kinds)
    broken = json.loads(json.dumps(REAL_FILL))
    broken["o"]["c"] = "pcbroken"
    broken["o"]["X"] = "HALF_FILLED"  # no status Binance documents
    elsewhere = json.loads(json.dumps(REAL_FILL))  # a perp the fake (and so we) do not list
    elsewhere["o"] |= {"s": "XRPUSDT", "c": "pcelsewhere"}
    try:
        await until(lambda: book.live)
        await fake.user_data.push(broken)
        await until(lambda: orders_feed.counts["malformed"] == 1)
        await fake.user_data.push(elsewhere)
        await until(lambda: orders_feed.counts["other_markets"] == 1)
        await fake.user_data.push(REAL_FILL)
        await until(lambda: REAL_FILL["o"]["c"] in book.order_states)
        await fake.user_data.push(REAL_FILL)
        await until(lambda: orders_feed.counts["duplicates"] == 1)
    finally:
        await hub.close()
    assert "pcbroken" not in book.order_states and "pcelsewhere" not in book.order_states
    assert (orders_feed.counts["malformed"], orders_feed.counts["duplicates"]) == (1, 1)
    assert book.order_states[REAL_FILL["o"]["c"]].status is OrderStatus.FILLED


# -- fills reaching the executor as events -------------------------------------------------


async def _open_eth(venue, fake, journal, book: AccountBook | None) -> tuple[list, list]:
    """A two-leg open of 0.01 ETH through a live TradingSession on the fake, whose USDⓈ-M
    market orders fill 0.3 s after their answer. Returns the journal's orders (without
    their intent's ids) and what each REST order query answered."""
    from perpcarry.config.loader import load_config
    from perpcarry.execution.service import TradingSession, VenueHandle

    fake.user_data.fill_delay_seconds = 0.3
    answered: list[OrderStatus] = []
    query = venue.fetch_order

    async def watched_query(market, client_id):
        state = await query(market, client_id)
        answered.append(state.status if state is not None else None)
        return state

    venue.fetch_order = watched_query
    session = TradingSession(load_config(None), journal,
                             {"binance": VenueHandle(venue, venue, order_updates=book)},
                             paper=False)

    async def fill_price(_pair):  # the price the fake fills at: the real 2024-12-12 fill's
        return Decimal(REAL_FILL["o"]["L"])

    session.reference_price = fill_price
    result = await session.open("binance", "ETH", notional=None, quantity=Decimal("0.01"),
                                executor=session.executor("perp-first"), slices=1)
    orders = [(o.leg, o.purpose, o.state, o.filled, o.delivered, o.average_price, o.fees,
               o.fees_pending) for o in journal.orders(result.intent_id)]
    return orders, answered


@pytest.mark.usefixtures("data_dir")
async def test_a_fill_pushed_on_the_stream_ends_the_wait_with_the_same_journal(
        venue, fake, journal, tmp_path):
    fake.futures_wallet = Decimal("1000")
    by_rest, rest_answers = await _open_eth(venue, fake, journal, None)
    rest_gets = len(fake.sent("GET", "/fapi/v1/order"))

    streamed_fake = FakeBinance(prices=dict(fake.prices), futures_wallet=Decimal("1000"),
                                spot_balances={"USDT": Decimal("3000"), "ETH": Decimal(0)})
    await streamed_fake.start()
    config = VenueConfig(enabled=True, api_key=SecretStr(KEY), secret=SecretStr(SECRET))
    streamed_venue = BinanceVenue(config, VenueContext(cache_dir=tmp_path / "s",
                                                       sleep=no_sleep,
                                                       base_url=streamed_fake.url))
    with Journal.open(tmp_path / "streamed.sqlite", trading=True) as streamed_journal:
        try:
            await streamed_venue.load_markets()
            hub, book = await _account_hub(streamed_venue, streamed_journal)
            await until(lambda: book.live)
            by_stream, stream_answers = await _open_eth(streamed_venue, streamed_fake,
                                                        streamed_journal, book)
            await hub.close()
        finally:
            await streamed_venue.close()
            await streamed_fake.stop()
    stream_gets = len(streamed_fake.sent("GET", "/fapi/v1/order"))
    assert by_stream == by_rest  # the same fills, prices, fees and states
    assert [o[2].value for o in by_stream] == ["filled", "filled"]
    # Without the stream the perp fill is found by a query that answers FILLED; with it,
    # every query answered NEW (before the fill): the FILLED state came from the push.
    assert OrderStatus.FILLED in rest_answers
    assert OrderStatus.FILLED not in stream_answers
    assert stream_gets < rest_gets, (stream_gets, rest_gets)
    assert any(e["o"]["X"] == "FILLED" for e in streamed_fake.user_data.pushed)


async def test_real_account_updates_open_then_flatten_the_position(venue, fake, journal):
    """ACCOUNT_UPDATE_0 (the 0.006 ETH long after the real fill) and ACCOUNT_UPDATE_2 (flat
    after the sell) as positions: the REST path's PerpPosition, then none."""
    hub, book = await _account_hub(venue, journal)
    positions_feed = next(f for f in hub.feeds if StreamKind.POSITIONS in f.kinds)
    try:
        await until(lambda: positions_feed.state is FeedState.LIVE)
        await fake.user_data.push(_event("ACCOUNT_UPDATE_0"))
        await until(lambda: PERP in book.positions)
        opened = book.positions[PERP]
        await fake.user_data.push(_event("ACCOUNT_UPDATE_2"))
        await until(lambda: PERP not in book.positions)
    finally:
        await hub.close()
    assert (opened.side, opened.quantity, opened.entry_price, opened.unrealised_pnl) == (
        Side.BUY, Decimal("0.006"), Decimal("3925.56"), Decimal("-0.000031"))
    assert opened.margin_mode is MarginMode.CROSS
    # What the push does not carry is unknown, never zero.
    assert (opened.mark_price, opened.liquidation_price, opened.maintenance_margin) == (
        None, None, None)


async def test_a_quiet_account_stays_live_and_is_read_from_rest(venue, fake, journal):
    """Silence on an open connection is not a fault: after stale_after_seconds the account
    is read from REST and the feed stays live."""
    book = AccountBook(venue.venue_id, venue, lambda: working_orders(journal, "binance"))
    quiet = SETTINGS.model_copy(update={"stale_after_seconds": {"default": 0.2}})
    hub = StreamHub(venue, BINANCE_STREAMS, quiet, jitter=lambda: 0.5, account=book)
    hub.start({}, (StreamKind.POSITIONS,))
    [feed] = hub.feeds
    try:
        await until(lambda: feed.counts["quiet_checks"] >= 2)
    finally:
        await hub.close()
    assert feed.state is FeedState.LIVE and feed.counts["faults"] == 0
    assert len(fake.sent("GET", "/fapi/v3/positionRisk")) >= 3  # connect + 2 quiet checks
    assert len(fake.sent("POST", "/fapi/v1/listenKey")) == 1


async def test_a_fill_while_the_stream_is_down_is_recorded_from_rest(venue, fake, journal):
    """The order fills while the user-data socket is cut (and its listenKey expired): the
    waiting leg is released when the feed goes stale and records the fill
    from its query by client id."""
    from perpcarry.execution.journal import Intent, JournalOrder, OrderEvent, Purpose
    from perpcarry.execution.legs import LegSender
    from perpcarry.venues.orders import Leg, client_order_id

    hub, book = await _account_hub(venue, journal)
    cid = client_order_id("i2", Leg.PERP, 0, 0)
    order = JournalOrder(cid, "i2", Leg.PERP, 0, 0, Purpose.ENTRY, "binance", PERP, Side.SELL,
                         Decimal("0.006"), False)
    journal.begin_intent(Intent("i2", "p2", "open", "binance", "ETH", "ETH/USDT", PERP,
                                Decimal("0.006"), "perp-first", (Decimal("0.006"),)), [order])
    fake.user_data.fill_delay_seconds = 0.6

    async def cut() -> None:
        await until(lambda: fake.sent("POST", "/fapi/v1/order"))
        # The key expires with the cut: ccxt reuses its cached key until its 20-minute
        # refresh, so there is no way back before the fill.
        fake.user_data.listen_key = "expired"
        await fake.user_data.drop()

    try:
        await until(lambda: book.live)
        cutting = asyncio.create_task(cut())
        result = await LegSender(journal, venue, asyncio.sleep, updates=book,
                                 poll_delays=(0.3, 0.3, 0.3, 0.3, 0.3)).send(
            order, await venue.market(PERP))
        await cutting
    finally:
        await hub.close()
    assert result.order.state is OrderEvent.FILLED
    assert journal.order(cid).filled == Decimal("0.006")
    assert not book.live
    # The fill was pushed to no one: the socket was gone.
    filled = [e for e in fake.user_data.pushed if e["o"]["c"] == cid and e["o"]["X"] == "FILLED"]
    assert filled and not fake.user_data.sockets
    assert len(fake.sent("GET", "/fapi/v1/order")) >= 1


@pytest.mark.usefixtures("data_dir")
async def test_a_live_runs_hubs_hand_each_venues_fills_to_its_executor(venue, fake, journal):
    """What `perpcarry run --live` wires (cli/run.py account_books): the run's hubs start the
    venue's account feeds, and the session's venue handle carries the same book, so the
    executor's fills come from the stream."""
    from perpcarry.cli.run import account_books
    from perpcarry.config.loader import load_config
    from perpcarry.execution.service import TradingSession, VenueHandle
    from perpcarry.streams.session import HubSet

    config = load_config(None)
    session = TradingSession(config, journal, {"binance": VenueHandle(venue, venue)},
                             paper=False)
    hubs = HubSet(config, {"binance": venue}, account_books(session))
    hubs.start({"binance": []}, ())
    try:
        book = session.venues["binance"].order_updates
        assert book is not None and hubs.get("binance").account is book
        assert {f.name for f in hubs.get("binance").feeds} >= {"watchOrders account"}
        await until(lambda: book.live)
        fills, answers = await _open_eth(venue, fake, journal, book)
    finally:
        await hubs.close()
    assert [f[2].value for f in fills] == ["filled", "filled"]
    assert OrderStatus.FILLED not in answers  # the perp's fill came from the push
