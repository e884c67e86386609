"""Each fault a websocket stream can have, injected by the local server (tests/ws_server.py)
replaying real captured pushes: what the stream reports, what is re-polled over REST, and
that nothing a decision could read (what a hub listener, the stream risk, hears) came from
a stale feed."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from support import until
from venue_server import LOCAL_ONLY
from ws_server import Faults, WsVenueServer

from perpcarry.config.settings import StreamsConfig
from perpcarry.domain.types import MarketKind
from perpcarry.plugins.manager import load_registry
from perpcarry.streams.hub import FeedState, StreamHub
from perpcarry.venues.protocol import VenueContext
from perpcarry.venues.streams import StreamKind

ROOT = Path(__file__).parents[1]
VENUES = ("binance", "bybit", "okx")
PERP, SPOT = "BTC/USDT:USDT", "BTC/USDT"
# The marks the server replays (tests/ws_captures/PROVENANCE.md).
REPLAYED_MARK = {"binance": Decimal("112015.09961957"), "bybit": Decimal("51444.40"),
                 "okx": Decimal("90900.0")}
# What each venue's REST client answers from its bundled snapshot for BTC's mark.
REST_PATH = {"binance": ("fapi.binance.com", "/fapi/v1/premiumIndex"),
             "bybit": ("api.bybit.com", "/v5/market/tickers"),
             "okx": ("www.okx.com", "/api/v5/public/mark-price")}
# Quick backoffs; a watchdog that only fires on a real fault even on a loaded machine (the
# stall test, whose subject it is, uses STALLING's).
SETTINGS = StreamsConfig(stale_after_seconds={"default": 5}, backoff_base_seconds=0.05,
                         backoff_max_seconds=0.4, max_age_seconds=5)
STALLING = SETTINGS.model_copy(update={"stale_after_seconds": {"default": 0.6}})

pytestmark = pytest.mark.block_network(**LOCAL_ONLY)


@dataclass(frozen=True)
class Heard:
    source: str
    mark: Decimal
    live: bool  # the pushing feed was live when the listener heard it


@dataclass
class Listener:
    """What a hub listener (the stream risk's place) hears of BTC's perp mark."""

    hub: StreamHub | None = None
    decisions: list[Heard] = field(default_factory=list)

    @property
    def seen(self) -> int:
        return len(self.decisions)

    def __call__(self, venue, update, source) -> None:
        if update.kind is StreamKind.MARK and update.symbol == PERP:
            feed = next((f for f in self.hub.feeds if StreamKind.MARK in f.kinds), None)
            self.decisions.append(Heard(source, update.mark_price, feed is not None
                                        and feed.state is FeedState.LIVE))


@pytest.fixture(scope="module")
def server():
    served = WsVenueServer(*(ROOT / "plugins" / v / "snapshot" / "snapshot.json"
                             for v in VENUES), interval=0.02)
    served.start()
    yield served
    served.stop()


@pytest.fixture
def faults(server):
    """Fresh faults and counters per test."""
    for venue in VENUES:
        server.faults[venue] = Faults()
    for counter in (server.pushed, server.connections, server.subscribes, server.refused,
                    server.requests):
        counter.clear()
    return server.faults


async def _hub(server, venue: str, tmp_path: Path, kinds=(StreamKind.MARK,),
               keepalive_ms: int | None = None, settings: StreamsConfig = SETTINGS
               ) -> tuple[StreamHub, Listener, object]:
    """A hub of ``venue`` on the server, with a listener recording BTC's perp marks."""
    spec = load_registry().venues[venue]
    client = spec.factory(spec.config_model(enabled=True, base_url=server.url),
                          VenueContext(cache_dir=tmp_path, offline=True))
    await client.load_markets()
    hub = StreamHub(client, spec.streams, settings, jitter=lambda: 0.5,
                    keepalive_ms=keepalive_ms)
    alarm = Listener(hub)
    hub.listeners.append(alarm)
    hub.start({MarketKind.PERP: [PERP], MarketKind.SPOT: [SPOT]}, kinds)
    return hub, alarm, client


def _feed(hub: StreamHub, kind: StreamKind):
    return next(f for f in hub.feeds if kind in f.kinds)


async def _close(hub, client) -> None:
    await hub.close()
    await client.close()


async def test_disconnect_mid_stream_reconnects_and_reconciles_before_trusting(
        server, faults, tmp_path):
    faults["binance"].disconnect_after = 5
    hub, alarm, client = await _hub(server, "binance", tmp_path)
    feed = _feed(hub, StreamKind.MARK)
    states: list[FeedState] = []
    hub.status_listeners.append(lambda venue, status: states.append(status.state))
    await until(lambda: feed.counts["reconciled"] >= 1 and feed.state is FeedState.LIVE)
    await _close(hub, client)
    assert feed.counts["reconnects"] >= 1
    assert server.connections["binance"] >= 2
    # Whether ccxt saw the close while a watch waited (stale -> REST poll -> resubscribe)
    # or redialled by itself between two watches, nothing pushed on the new connection is
    # trusted before a REST reconcile.
    assert states[0] is FeedState.LIVE
    assert states[states.index(FeedState.RECONCILING) + 1] is FeedState.LIVE
    assert FeedState.LIVE not in states[1:states.index(FeedState.RECONCILING)]
    assert server.requests[REST_PATH["binance"]] >= 1
    # Pushed marks were heard only while their feed was live; REST marks are named so.
    assert {d.source for d in alarm.decisions} <= {"stream", "rest"}
    assert all(d.live for d in alarm.decisions if d.source == "stream")
    assert all(d.mark in (REPLAYED_MARK["binance"], Decimal("112015.09961957"))
               for d in alarm.decisions)


async def test_silent_stall_turns_stale_and_decisions_read_rest(server, faults, tmp_path,
                                                               caplog_info):
    faults["okx"].stall_after = 4
    hub, alarm, client = await _hub(server, "okx", tmp_path, settings=STALLING)
    feed = _feed(hub, StreamKind.MARK)
    seen_when_stale = []

    def on_status(venue, status):
        if status.state is FeedState.STALE:
            # The last pushed mark is well under a minute old, yet it may not drive anything.
            seen_when_stale.append(hub.fresh(StreamKind.MARK, PERP, max_age=60))

    hub.status_listeners.append(on_status)
    await until(lambda: feed.counts["reconciled"] >= 1 and feed.state is FeedState.LIVE)
    await _close(hub, client)
    assert seen_when_stale[0] is None
    assert feed.counts["faults"] == 1
    # Polled over REST when found stale, and again to reconcile after resubscribing.
    assert server.requests[REST_PATH["okx"]] >= 2
    assert any("watchMarkPrices perp stale (no message for 0.6s)" in line
               for line in caplog_info)
    # Pushed marks while live, REST marks named "rest"; none from the stall.
    assert {d.source for d in alarm.decisions} <= {"stream", "rest"}
    assert all(d.live for d in alarm.decisions if d.source == "stream")


async def test_malformed_push_is_skipped_and_named(server, faults, tmp_path, logged_warnings):
    faults["bybit"].malformed_at = 3
    hub, alarm, client = await _hub(server, "bybit", tmp_path)
    feed = _feed(hub, StreamKind.MARK)
    await until(lambda: feed.messages >= 8)
    await _close(hub, client)
    assert feed.counts["malformed"] == 1
    assert feed.state is FeedState.LIVE  # one bad push does not stop the stream
    assert any("watchTickers perp push for BTC/USDT:USDT skipped" in w and "markPrice" in w
               for w in logged_warnings)
    assert all(d.mark == REPLAYED_MARK["bybit"] for d in alarm.decisions)
    assert server.requests[REST_PATH["bybit"]] == 0  # a bad push is no reason to poll


async def test_out_of_order_and_duplicate_pushes_are_dropped(server, faults, tmp_path):
    faults["binance"].out_of_order_at = 4
    faults["binance"].duplicate_at = 6
    hub, alarm, client = await _hub(server, "binance", tmp_path)
    feed = _feed(hub, StreamKind.MARK)
    times = []
    hub.listeners.append(lambda venue, update, source: times.append(update.at)
                         if update.kind is StreamKind.MARK else None)
    await until(lambda: feed.messages >= 10)
    await _close(hub, client)
    assert feed.counts["out_of_order"] == 1
    assert feed.counts["duplicates"] == 1
    assert times == sorted(times)  # nothing older than what was already seen got through
    assert len(set(times)) == len(times)
    assert alarm.seen == len(times)  # the listener heard the accepted marks, not the dropped


async def test_ping_timeout_is_a_dead_connection(server, faults, tmp_path):
    faults["okx"].ignore_pings = True
    hub, _alarm, client = await _hub(server, "okx", tmp_path, keepalive_ms=150)
    feed = _feed(hub, StreamKind.MARK)
    await until(lambda: feed.counts["faults"] >= 1)
    reason = feed.reason
    # The stale feed is polled over REST (the poll follows the fault, on a loaded machine
    # a moment later).
    await until(lambda: server.requests[REST_PATH["okx"]] >= 1)
    await _close(hub, client)
    assert "ping-pong keepalive missing" in reason
    assert server.pings["okx"] >= 1


async def test_refused_resubscription_backs_off_and_polls_rest(server, faults, tmp_path):
    faults["bybit"].disconnect_after = 3
    faults["bybit"].refuse_subscriptions = 2
    hub, _alarm, client = await _hub(server, "bybit", tmp_path)
    feed = _feed(hub, StreamKind.MARK)
    reasons = []
    hub.status_listeners.append(lambda venue, status: reasons.append(status.reason))
    await until(lambda: server.refused["bybit"] == 2 and feed.state is FeedState.LIVE
                 and feed.counts["reconciled"] >= 1)
    await _close(hub, client)
    assert sum("too many requests" in r for r in reasons) == 2
    assert feed.counts["reconnects"] >= 2  # each refusal is a fault, then a new dial
    assert feed.counts["rest_polls"] >= 3  # polled on each stale turn and to reconcile
    assert server.requests[REST_PATH["bybit"]] >= 1
    assert server.connections["bybit"] >= 4


async def test_a_decision_without_a_fresh_stream_reads_rest_and_says_so(server, faults,
                                                                      tmp_path, caplog_info):
    hub, _alarm, client = await _hub(server, "binance", tmp_path, kinds=(StreamKind.SPOT_BOOK,))
    mark = await hub.current(StreamKind.MARK, PERP, max_age=5)
    await _close(hub, client)
    # The real premiumIndex row of the bundled snapshot, read over REST.
    assert mark.mark_price == Decimal("112015.09961957")
    assert "binance: mark of BTC/USDT:USDT from REST (mark not subscribed)" in caplog_info
    assert server.requests[REST_PATH["binance"]] == 1


async def test_a_failing_listener_neither_stales_the_feed_nor_blinds_the_others(
        server, faults, tmp_path):
    """One consumer's bug (here: every call raises) is logged with its traceback and
    counted; the feed stays live and the next listener still hears every push."""

    class Broken:
        def __call__(self, venue, update, source):
            raise RuntimeError("a consumer's bug")

    hub, alarm, client = await _hub(server, "binance", tmp_path)
    hub.listeners.insert(0, Broken())
    feed = _feed(hub, StreamKind.MARK)
    try:
        await until(lambda: alarm.seen >= 5)
    finally:
        await _close(hub, client)
    assert hub.listener_failures["Broken"] >= 5
    assert feed.counts["reconnects"] == 0 and feed.state is FeedState.LIVE
    assert {d.source for d in alarm.decisions} == {"stream"}
