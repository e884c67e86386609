"""``perpcarry run`` on streams: each cycle's snapshot takes the freshest streamed marks
where a venue streams them and keeps REST otherwise (and says which, and when a held perp
has no fresh streamed mark to be watched on). The decisions on streamed marks between
cycles are tests/test_risk_watch.py's."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from venue_server import LOCAL_ONLY
from ws_server import Faults, WsVenueServer

from perpcarry.config.loader import load_config
from perpcarry.run.market import ScanMarket
from perpcarry.scan.engine import ScanOptions
from perpcarry.streams.hub import FeedState
from perpcarry.streams.market import StreamMarket
from perpcarry.streams.session import HubSet
from perpcarry.venues.protocol import VenueContext
from perpcarry.venues.streams import StreamKind

ROOT = Path(__file__).parents[1]
VENUES = ("binance", "bybit", "okx")
OKX_STREAMED_MARK = Decimal("90900.0")  # tests/ws_captures/okx.json, mark-price push

STALE_NOTE = ("okx: BTC/USDT:USDT has no fresh streamed mark: the stream risk decides "
              "nothing on it; the risk monitor's checks at the loop's cadence "
              "(danger_check_seconds near danger) apply")

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
    """A StreamMarket over OKX's BTC pair (held) on the server: (market, hubs); a test
    closes ``hubs`` before asserting, and the fixture closes them and the REST client."""
    server.faults["okx"] = Faults()
    path = write_config(f'cache_dir = "{tmp_path}"\n[streams]\nstale_after_seconds = '
                        '{default = 1.5}\nbackoff_base_seconds = 0.05\n'
                        f'[venues.okx]\nenabled = true\nbase_url = "{server.url}"\n')
    config = load_config(path)
    clients = {"okx": config.registry.venues["okx"].factory(
        config.venues["okx"], VenueContext(cache_dir=tmp_path))}
    polled = ScanMarket(config, clients, ScanOptions(venues=("okx",), symbols=("BTC",)))
    hubs = HubSet(config, clients)
    yield StreamMarket(polled, hubs, 5.0, lambda: {("okx", "BTC")}), hubs
    await hubs.close()  # again when the test did (a failed one may not have)
    await clients["okx"].close()


async def _live(hubs: HubSet) -> None:
    hub = hubs.get("okx")
    for _ in range(500):
        if hub.fresh(StreamKind.MARK, "BTC/USDT:USDT", 5.0) is not None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no fresh streamed mark")


async def test_cycle_prices_with_the_fresh_streamed_mark_and_says_so(market):
    stream_market, hubs = market
    first = await stream_market.snapshot(datetime.now(UTC))  # subscribes
    await _live(hubs)
    second = await stream_market.snapshot(datetime.now(UTC))
    await hubs.close()
    (btc,) = second.candidates
    assert btc.price == OKX_STREAMED_MARK
    assert second.pairs.mark[0] == float(OKX_STREAMED_MARK)
    assert "okx: 1 of 1 marks streamed and fresh, the rest from REST (streams)" in second.notes
    assert "okx: 0 of 1 marks streamed and fresh, the rest from REST (streams)" in first.notes
    # Held, and not yet streamed at the first cycle (told), streamed at the second.
    assert STALE_NOTE in first.notes
    assert STALE_NOTE not in second.notes


async def test_a_stale_stream_leaves_the_cycle_on_rest(market, server):
    stream_market, hubs = market
    await stream_market.snapshot(datetime.now(UTC))
    await _live(hubs)
    live = await stream_market.snapshot(datetime.now(UTC))
    assert STALE_NOTE not in live.notes
    hub = hubs.get("okx")
    feed = next(f for f in hub.feeds if StreamKind.MARK in f.kinds)
    faults = server.faults["okx"]
    # Resubscriptions refused: the feed stays stale while the cycle below runs.
    faults.refuse_subscriptions = 1000
    deadline = asyncio.get_running_loop().time() + 20
    while feed.state is not FeedState.STALE:
        assert asyncio.get_running_loop().time() < deadline, "the mark feed never went stale"
        if faults.stall_after is None:
            # A stall silences the first connection to reach it (OKX's feeds each have
            # their own): armed again until the mark feed's is the silent one.
            faults.stall_after = 1 + server.pushed["okx"]
        await asyncio.sleep(0.01)
    snapshot = await stream_market.snapshot(datetime.now(UTC))
    await hubs.close()
    # The REST poll the watchdog made is the truth now; no streamed mark was used.
    assert "okx: 0 of 1 marks streamed and fresh, the rest from REST (streams)" in \
        snapshot.notes
    # The held perp's stale spell is told once, not every cycle.
    assert STALE_NOTE in snapshot.notes
    again = await stream_market.snapshot(datetime.now(UTC))
    assert STALE_NOTE not in again.notes
