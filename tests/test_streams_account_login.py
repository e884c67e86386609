"""Bybit's and OKX's account streams against the local server's private handshakes
(tests/ws_private.py): a logged-in order feed turns live, a pushed order (rebuilt around
the real REST order of the same values, tests/ws_captures/PROVENANCE.md) parses to the
OrderState the REST path gives, and a refused login leaves the feed stale with the venue's
reason, REST filling in, and no key or signature in any message or log line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from loguru import logger
from pydantic import SecretStr
from support import no_sleep, until
from venue_server import LOCAL_ONLY
from ws_private import PrivateWsServer

from perpcarry.ccxt.replay import replaying
from perpcarry.config.settings import StreamsConfig
from perpcarry.plugins.manager import load_registry
from perpcarry.streams.account import AccountBook
from perpcarry.streams.hub import FeedState, StreamHub
from perpcarry.venues.orders import OrderStatus, Wallet
from perpcarry.venues.protocol import VenueContext
from perpcarry.venues.streams import StreamKind

ROOT = Path(__file__).parents[1]
VENUES = ("bybit", "okx")
KEY, SECRET, PASSPHRASE = "fake-test-key-not-real", "fake-test-secret-not-real", "fake-pass"
SETTINGS = StreamsConfig(stale_after_seconds={"default": 5}, backoff_base_seconds=0.05,
                         backoff_max_seconds=0.4, max_age_seconds=5)
# The real REST order each push is rebuilt around: (cassette, market, client id).
REST_ORDER = {
    "bybit": ("orders_fetch_linear_closed_ccxt_static.json", "BTC/USDT:USDT",
              "pcbybitfill1p00000"),
    "okx": ("orders_fetch_spot_ccxt_static.json", "LTC/USDT",
            "e847386590ce4dBC6f7ae74854f6a617"),
}

pytestmark = pytest.mark.block_network(**LOCAL_ONLY)


@pytest.fixture(scope="module")
def server():
    served = PrivateWsServer(
        *(ROOT / "plugins" / v / "snapshot" / "snapshot.json" for v in VENUES),
        venues=VENUES, credentials={"bybit": (KEY, SECRET, None),
                                    "okx": (KEY, SECRET, PASSPHRASE)})
    served.start()
    yield served
    served.stop()


def _config(venue: str, secret: str = SECRET, **extra):
    spec = load_registry().venues[venue]
    credentials = {"api_key": SecretStr(KEY), "secret": SecretStr(secret)}
    if venue == "okx":
        credentials["passphrase"] = SecretStr(PASSPHRASE)
    return spec, spec.config_model(enabled=True, **credentials, **extra)


async def _from_rest(venue: str, tmp_path: Path, cassette: str, read):
    """What the REST path gives for a recorded answer: ``read(client)`` replayed from
    ``cassette`` over the venue's offline markets."""
    spec, config = _config(venue)
    client = spec.factory(config, VenueContext(cache_dir=tmp_path / "rest", offline=True,
                                               sleep=no_sleep))
    try:
        with replaying(spec.offline_snapshot):
            await client.load_markets()
        with replaying(ROOT / "cassettes" / venue / cassette):
            return await read(client)
    finally:
        await client.close()


async def _rest_order(venue: str, tmp_path: Path):
    """The OrderState the REST path gives for the recorded order."""
    cassette, symbol, client_id = REST_ORDER[venue]

    async def read(client):
        return await client.fetch_order(await client.market(symbol), client_id)

    return await _from_rest(venue, tmp_path, cassette, read)


def _push(venue: str) -> dict:
    """The recorded REST order object inside the venue's private push envelope."""
    cassette = json.loads((ROOT / "cassettes" / venue / REST_ORDER[venue][0]).read_text())
    body = json.loads(cassette["interactions"][-1]["response"]["body"]["string"])
    if venue == "bybit":
        [order] = body["result"]["list"]
        return {"id": "local-1", "topic": "order", "creationTime": int(order["updatedTime"]),
                "data": [{**order, "category": body["result"]["category"]}]}
    [order] = body["data"]
    return {"arg": {"channel": "orders", "instType": "ANY", "uid": "local"},
            "data": [order]}


async def _account_hub(server, venue: str, tmp_path: Path, secret: str = SECRET,
                       kind: StreamKind = StreamKind.ORDERS):
    spec, config = _config(venue, secret, base_url=server.url)
    client = spec.factory(config, VenueContext(cache_dir=tmp_path / "ws", offline=True,
                                               sleep=no_sleep))
    await client.load_markets()
    book = AccountBook(venue, client, lambda: [])
    hub = StreamHub(client, spec.streams, SETTINGS, jitter=lambda: 0.5, account=book)
    hub.start({}, (kind,))
    return hub, book, client


@pytest.mark.parametrize("venue", VENUES)
async def test_order_push_after_login_parses_to_the_rest_state(server, venue, tmp_path):
    rest = await _rest_order(venue, tmp_path)
    hub, book, client = await _account_hub(server, venue, tmp_path)
    try:
        await until(lambda: book.live and server.topics[venue])
        assert server.logins[venue] >= 1
        await server.push(venue, _push(venue))
        await until(lambda: rest.client_order_id in book.order_states)
    finally:
        await hub.close()
        await client.close()
    pushed = book.order_states[rest.client_order_id]
    assert pushed.status is OrderStatus.FILLED and pushed.fees == rest.fees != ()
    assert replace(pushed, created_at=None, updated_at=None) == replace(
        rest, created_at=None, updated_at=None)


@pytest.mark.parametrize(("venue", "reason"), [("bybit", "error:USVC1111"),
                                               ("okx", "Invalid sign")])
async def test_refused_login_is_stale_with_the_venues_reason_and_no_secret(
        server, venue, reason, tmp_path):
    logged: list[str] = []
    sink = logger.add(lambda message: logged.append(str(message)), level="DEBUG")
    logger.enable("perpcarry")
    refused_before = server.refused_logins[venue]
    hub, book, client = await _account_hub(server, venue, tmp_path, secret="wrong-secret")
    feed = next(f for f in hub.feeds if StreamKind.ORDERS in f.kinds)
    try:
        await until(lambda: feed.counts["faults"] >= 2 and feed.state is FeedState.STALE)
    finally:
        await hub.close()
        await client.close()
        logger.disable("perpcarry")
        logger.remove(sink)
    assert server.refused_logins[venue] > refused_before
    assert reason in feed.reason and not book.live
    assert feed.counts["rest_polls"] >= 1
    for text in [feed.reason, *logged]:
        assert KEY not in text and "wrong-secret" not in text and PASSPHRASE not in text


@pytest.mark.parametrize("venue", VENUES)
async def test_a_cut_private_connection_logs_in_again_and_reconciles(server, venue, tmp_path):
    hub, book, client = await _account_hub(server, venue, tmp_path)
    feed = next(f for f in hub.feeds if StreamKind.ORDERS in f.kinds)
    states: list[FeedState] = []
    hub.status_listeners.append(lambda _v, status: states.append(status.state))
    try:
        await until(lambda: book.live and server.connected(venue) == 1)
        logins = server.logins[venue]
        await server.drop(venue)
        await until(lambda: feed.counts["reconnects"] >= 1 and book.live
                     and server.logins[venue] > logins)
    finally:
        await hub.close()
        await client.close()
    assert feed.counts["reconciled"] >= 2  # at the first connection and after the cut
    cut = states.index(FeedState.STALE)
    assert states[cut:][-2:] == [FeedState.RECONCILING, FeedState.LIVE]


# The real REST balance each wallet push is rebuilt around.
REST_BALANCE = {"bybit": "orders_balances_ccxt_static.json",
                "okx": "orders_balances_docs-example.json"}


def _balance_push(venue: str) -> dict:
    cassette = json.loads((ROOT / "cassettes" / venue / REST_BALANCE[venue]).read_text())
    body = json.loads(cassette["interactions"][0]["response"]["body"]["string"])
    if venue == "bybit":
        return {"id": "local-2", "topic": "wallet", "creationTime": int(body["time"]),
                "data": body["result"]["list"]}
    return {"arg": {"channel": "account", "uid": "local"}, "data": body["data"]}


@pytest.mark.parametrize("venue", VENUES)
async def test_wallet_push_parses_to_the_rest_balances(server, venue, tmp_path):
    async def read(client):
        return (await client.fetch_balances())[Wallet.UNIFIED]

    rest = await _from_rest(venue, tmp_path, REST_BALANCE[venue], read)
    hub, book, client = await _account_hub(server, venue, tmp_path,
                                           kind=StreamKind.BALANCES)
    [feed] = hub.feeds
    try:
        await until(lambda: feed.state is FeedState.LIVE and server.connected(venue))
        await server.push(venue, _balance_push(venue))
        await until(lambda: Wallet.UNIFIED in book.balances)
    finally:
        await hub.close()
        await client.close()
    assert book.balances[Wallet.UNIFIED] == rest and rest


REST_POSITIONS = "orders_positions_ccxt_static.json"


def _position_push(venue: str) -> dict:
    cassette = json.loads((ROOT / "cassettes" / venue / REST_POSITIONS).read_text())
    body = json.loads(cassette["interactions"][0]["response"]["body"]["string"])
    if venue == "bybit":
        rows = [{**row, "category": body["result"]["category"]}
                for row in body["result"]["list"]]
        return {"id": "local-3", "topic": "position", "creationTime": int(body["time"]),
                "data": rows}
    return {"arg": {"channel": "positions", "instType": "ANY", "uid": "local"},
            "data": body["data"]}


@pytest.mark.parametrize("venue", VENUES)
async def test_position_push_parses_to_the_rest_position(server, venue, tmp_path):
    async def read(client):
        [position] = await client.fetch_positions()
        return position

    rest = await _from_rest(venue, tmp_path, REST_POSITIONS, read)
    hub, book, client = await _account_hub(server, venue, tmp_path,
                                           kind=StreamKind.POSITIONS)
    [feed] = hub.feeds
    try:
        await until(lambda: feed.state is FeedState.LIVE and server.connected(venue))
        await server.push(venue, _position_push(venue))
        await until(lambda: rest.symbol in book.positions)
    finally:
        await hub.close()
        await client.close()
    assert book.positions[rest.symbol] == rest
