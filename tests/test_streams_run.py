"""``perpcarry run`` on streams: each cycle's snapshot takes the freshest streamed marks
where a venue streams them and keeps REST otherwise (and says which), and a held perp's
mark moving between cycles wakes the loop early."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from venue_server import LOCAL_ONLY
from ws_server import Faults, WsVenueServer

from perpcarry.config.loader import load_config
from perpcarry.config.settings import RunConfig
from perpcarry.run.market import ScanMarket
from perpcarry.run.service import Runner
from perpcarry.scan.engine import ScanOptions
from perpcarry.streams.alarm import MarkAlarm
from perpcarry.streams.hub import FeedState
from perpcarry.streams.market import StreamMarket
from perpcarry.streams.session import HubSet
from perpcarry.venues.protocol import VenueContext
from perpcarry.venues.streams import MarkTick, StreamKind

ROOT = Path(__file__).parents[1]
VENUES = ("binance", "bybit", "okx")
OKX_STREAMED_MARK = Decimal("90900.0")  # tests/ws_captures/okx.json, mark-price push

pytestmark = pytest.mark.block_network(**LOCAL_ONLY)


@pytest.fixture(scope="module")
def server():
    served = WsVenueServer(*(ROOT / "plugins" / v / "snapshot" / "snapshot.json"
                             for v in VENUES), interval=0.02)
    served.start()
    yield served
    served.stop()


@pytest.fixture
async def market(server, write_config, tmp_path):
    """A StreamMarket over OKX's BTC pair on the server: (market, hubs, alarm); the test
    closes ``hubs`` (and the fixture the REST client)."""
    server.faults["okx"] = Faults()
    path = write_config(f'cache_dir = "{tmp_path}"\n[streams]\nstale_after_seconds = '
                        '{default = 1.5}\nbackoff_base_seconds = 0.05\n'
                        f'[venues.okx]\nenabled = true\nbase_url = "{server.url}"\n')
    config = load_config(path)
    clients = {"okx": config.registry.venues["okx"].factory(
        config.venues["okx"], VenueContext(cache_dir=tmp_path))}
    polled = ScanMarket(config, clients, ScanOptions(venues=("okx",), symbols=("BTC",)))
    hubs = HubSet(config, clients)
    alarm = MarkAlarm(config.settings.streams.wake_on_mark_move)
    yield StreamMarket(polled, hubs, 5.0, alarm, lambda: {("okx", "BTC")}), hubs, alarm
    await clients["okx"].close()


async def _live(hubs: HubSet) -> None:
    hub = hubs.get("okx")
    for _ in range(500):
        if hub.fresh(StreamKind.MARK, "BTC/USDT:USDT", 5.0) is not None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no fresh streamed mark")


async def test_cycle_prices_with_the_fresh_streamed_mark_and_says_so(market):
    stream_market, hubs, alarm = market
    first = await stream_market.snapshot(datetime.now(UTC))  # subscribes
    await _live(hubs)
    second = await stream_market.snapshot(datetime.now(UTC))
    await hubs.close()
    (btc,) = second.candidates
    assert btc.price == OKX_STREAMED_MARK
    assert second.pairs.mark[0] == float(OKX_STREAMED_MARK)
    assert "okx: 1 of 1 marks streamed and fresh, the rest from REST (streams)" in second.notes
    assert "okx: 0 of 1 marks streamed and fresh, the rest from REST (streams)" in first.notes
    assert alarm.references[("okx", "BTC/USDT:USDT")] == OKX_STREAMED_MARK  # held: watched


async def test_a_stale_stream_leaves_the_cycle_on_rest(market, server):
    stream_market, hubs, _ = market
    await stream_market.snapshot(datetime.now(UTC))
    await _live(hubs)
    server.faults["okx"].stall_after = 1 + server.pushed["okx"]
    hub = hubs.get("okx")
    feed = next(f for f in hub.feeds if StreamKind.MARK in f.kinds)
    for _ in range(300):
        if feed.state is FeedState.STALE:
            break
        await asyncio.sleep(0.01)
    assert feed.state is FeedState.STALE
    snapshot = await stream_market.snapshot(datetime.now(UTC))
    await hubs.close()
    # The REST poll the watchdog made is the truth now; no streamed mark was used.
    assert "okx: 0 of 1 marks streamed and fresh, the rest from REST (streams)" in \
        snapshot.notes


async def test_a_mark_move_between_cycles_wakes_the_runner_early():
    alarm = MarkAlarm(0.02)
    alarm.watch("okx", "BTC/USDT:USDT", Decimal("100000"))

    class Loop:  # what Runner reads of a loop while it waits
        stop = asyncio.Event()

        def kill_requested(self) -> bool:
            return False

    runner = Runner(Loop(), RunConfig(), lambda *_: None, lambda: datetime.now(UTC),
                    sooner=alarm.sooner)
    started = time.monotonic()
    waiting = asyncio.create_task(runner._sleep_until(datetime.now(UTC) + timedelta(hours=1)))
    await asyncio.sleep(0.1)
    alarm("okx", MarkTick("BTC/USDT:USDT", datetime.now(UTC), Decimal("101000")), "stream")
    assert not alarm.decisions  # 1 % is under the 2 % threshold
    alarm("okx", MarkTick("BTC/USDT:USDT", datetime.now(UTC), Decimal("97500")), "stream")
    await asyncio.wait_for(waiting, 3)
    assert time.monotonic() - started < 2.5  # an hour's wait, cut short within seconds
    (decision,) = alarm.decisions
    assert decision.move == Decimal("-0.025")
    assert not alarm.sooner.is_set()  # consumed by the wake
