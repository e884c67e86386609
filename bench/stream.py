"""Stream latency, throughput and memory, against the local websocket server replaying real
captured pushes (tests/ws_server.py, tests/ws_captures/PROVENANCE.md).

1. Latency: from a Binance markPrice push leaving the server to the stream risk's decision
   (:class:`perpcarry.risk.watch.StreamRisk`: the held short's pool margin recomputed at the
   pushed mark and found below the floor, the decision that asks the loop for a risk step),
   through ccxt.pro, the hub's parse, order and duplicate checks and listeners. The account
   state is set so that every push breaches (a 0.2 BTC short whose pool holds 1.2x its
   initial margin, floor 1.25x); the watch is re-armed after each decision, outside the
   measured span. Baseline, same run: a bare aiohttp websocket client reading and
   JSON-decoding the same pushes. Median and p99 of each, and their ratio.
2. Throughput and memory: a long replay at full speed across Binance, Bybit and OKX
   (marks, funding, spot books), ``--messages`` pushes in all (default 1,000,000); pushes
   per second, and the resident memory at the end of the first 10 % against the end.
   Baseline, same run: the bare client over a tenth as many pushes.

The server runs in a thread of this process (its sends and the client share the GIL and
two cores with everything else on the machine); the figures are for comparison, run to run.

    python bench/stream.py [--messages N] [--latency-pushes N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from ws_server import WsVenueServer  # noqa: E402

VENUES = ("binance", "bybit", "okx")
PERP, SPOT = "BTC/USDT:USDT", "BTC/USDT"
PAGE = 4096


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def hub_for(server, venue: str, cache: Path, kinds):
    from perpcarry.config.settings import StreamsConfig
    from perpcarry.domain.types import MarketKind
    from perpcarry.plugins.manager import load_registry
    from perpcarry.streams.hub import StreamHub
    from perpcarry.venues.protocol import VenueContext

    spec = load_registry().venues[venue]
    client = spec.factory(spec.config_model(enabled=True, base_url=server.url),
                          VenueContext(cache_dir=cache, offline=True))
    await client.load_markets()
    hub = StreamHub(client, spec.streams, StreamsConfig())
    hub.start({MarketKind.PERP: [PERP], MarketKind.SPOT: [SPOT]}, kinds)
    return hub, client


def breached_account(mark):
    """A risk check's report of one held 0.2 BTC short at ``mark`` whose pool holds 1.2x its
    initial margin at leverage 2 (floor 1.25x): every mark near it breaches."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from perpcarry.execution.journal import Position, PositionState
    from perpcarry.risk.monitor import MarginRule
    from perpcarry.risk.report import PerpRisk, PoolRisk, RiskReport
    from perpcarry.venues.orders import Wallet

    quantity, leverage = Decimal("0.2"), Decimal(2)
    now = datetime.now(UTC)
    position = Position("bench", "binance", "BTC", SPOT, PERP, quantity, quantity,
                        quantity * mark, quantity * mark, {}, PositionState.OPEN, now, None)
    perp = PerpRisk("binance", PERP, "USDT", True, quantity, mark, None, mark * 2,
                    Decimal(1), Decimal("0.004"), (position,))
    pool = PoolRisk("binance", "USDT", Wallet.FUTURES, Decimal("1.2") * quantity * mark
                    / leverage, Decimal(0), quantity * mark)
    report = RiskReport(now, perps=[perp], pools=[pool])
    return report, MarginRule(leverage, Decimal("1.25"), Decimal("1.5"))


async def hub_latency(server, pushes: int, cache: Path) -> list[float]:
    from datetime import UTC, datetime
    from decimal import Decimal

    from perpcarry.config.settings import RiskConfig, StrategyConfig
    from perpcarry.events import EventBus
    from perpcarry.plugins.manager import load_registry
    from perpcarry.risk.watch import StreamRisk
    from perpcarry.strategy.rules import Rules
    from perpcarry.venues.streams import StreamKind

    server.sent_at = {}
    hub, client = await hub_for(server, "binance", cache, (StreamKind.MARK,))
    events = EventBus(load_registry().pm, None, None, lambda: datetime.now(UTC))
    watch = StreamRisk(RiskConfig(), Rules.from_config(StrategyConfig()), events)
    report, rule = breached_account(Decimal("112015.09961957"))
    watch.refresh(report, rule)
    latencies: list[float] = []

    def decide(venue, update, source) -> None:
        before = len(watch.decisions)
        watch(venue, update, source)
        if len(watch.decisions) == before:
            return
        decision = watch.decisions[-1]
        sent = server.sent_at.get((venue, int(update.at.timestamp() * 1000)))
        if sent is not None and decision.source == "stream":
            latencies.append((decision.decided_at - sent) * 1000)
        watch.take()
        watch.decisions.clear()
        watch.refresh(report, rule)  # re-armed: the next push is a decision again

    hub.listeners.append(decide)
    while len(latencies) < pushes:
        await asyncio.sleep(0.05)
    await hub.close()
    await client.close()
    server.sent_at = None
    return latencies[:pushes]


async def raw_latency(server, pushes: int) -> list[float]:
    """The baseline: a bare client subscribing to the same stream and decoding each push."""
    server.sent_at = {}
    latencies: list[float] = []
    url = server.url.replace("http", "ws") + "/fstream.binance.com/market/ws"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@markPrice@1s"],
                            "id": 1})
        async for message in ws:
            push = json.loads(message.data)
            sent = server.sent_at.get(("binance", push.get("E")))
            if sent is not None:
                latencies.append((time.perf_counter() - sent) * 1000)
            if len(latencies) >= pushes:
                break
    server.sent_at = None
    return latencies


async def hub_replay(server, messages: int, cache: Path) -> tuple[float, int, float, float]:
    """Pushes per second, updates accepted, and RSS (MB) after the first 10 % and at the end."""
    from perpcarry.venues.streams import StreamKind

    kinds = (StreamKind.MARK, StreamKind.FUNDING, StreamKind.SPOT_BOOK)
    accepted = [0]
    hubs = []
    for venue in VENUES:
        hub, client = await hub_for(server, venue, cache, kinds)
        hub.listeners.append(lambda *_: accepted.__setitem__(0, accepted[0] + 1))
        hubs.append((hub, client))
    while sum(server.pushed.values()) == 0:
        await asyncio.sleep(0.01)
    start_pushed, started = sum(server.pushed.values()), time.perf_counter()
    first_tenth = None
    while (done := sum(server.pushed.values()) - start_pushed) < messages:
        if first_tenth is None and done >= messages / 10:
            first_tenth = rss_mb()
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    last = rss_mb()
    for hub, client in hubs:
        await hub.close()
        await client.close()
    return done / elapsed, accepted[0], first_tenth, last


async def raw_replay(server, messages: int) -> float:
    """The baseline: bare clients on the same three venues' streams, decoding each push."""
    subscriptions = [
        ("/fstream.binance.com/market/ws", {"method": "SUBSCRIBE", "id": 1,
                                             "params": ["btcusdt@markPrice@1s"]}),
        ("/stream.bybit.com/v5/public/linear", {"op": "subscribe",
                                                "args": ["tickers.BTCUSDT"]}),
        ("/ws.okx.com:443/ws/v5/public", {"op": "subscribe", "args": [
            {"channel": "mark-price", "instId": "BTC-USDT-SWAP"}]}),
    ]
    received = [0]

    async def read(path: str, subscribe: dict, session) -> None:
        async with session.ws_connect(server.url.replace("http", "ws") + path) as ws:
            await ws.send_json(subscribe)
            async for message in ws:
                json.loads(message.data)
                received[0] += 1
                if received[0] >= messages:
                    return

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        readers = [asyncio.create_task(read(p, s, session)) for p, s in subscriptions]
        while received[0] < messages:
            await asyncio.sleep(0.05)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return received[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--latency-pushes", type=int, default=2000)
    args = parser.parse_args()
    snapshots = [ROOT / "plugins" / v / "snapshot" / "snapshot.json" for v in VENUES]

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        server = WsVenueServer(*snapshots, interval=0.002)
        server.start()
        raw = asyncio.run(raw_latency(server, args.latency_pushes))
        hub = asyncio.run(hub_latency(server, args.latency_pushes, cache))
        server.stop()
        print(f"latency, push leaving the server -> decision, {len(hub)} Binance mark pushes "
              "every 2 ms:")
        print(f"  bare aiohttp client (baseline): median {statistics.median(raw):.3f} ms, "
              f"p99 {pct(raw, 0.99):.3f} ms")
        print(f"  ccxt.pro -> hub -> stream risk:  median {statistics.median(hub):.3f} ms, "
              f"p99 {pct(hub, 0.99):.3f} ms")
        print(f"  ratio hub/baseline: median {statistics.median(hub) / statistics.median(raw):.2f}x"
              f", p99 {pct(hub, 0.99) / pct(raw, 0.99):.2f}x; median under 5 ms: "
              f"{'yes' if statistics.median(hub) < 5 else 'NO'}")

        server = WsVenueServer(*snapshots, interval=0)
        server.start()
        baseline = asyncio.run(raw_replay(server, args.messages // 10))
        server.stop()
        server = WsVenueServer(*snapshots, interval=0)
        server.start()
        rate, accepted, first, last = asyncio.run(hub_replay(server, args.messages, cache))
        server.stop()
        print(f"replay at full speed, {args.messages:,} pushes across "
              f"{', '.join(VENUES)}:")
        print(f"  bare aiohttp client (baseline, {args.messages // 10:,} pushes): "
              f"{baseline:,.0f} pushes/s")
        print(f"  hubs: {rate:,.0f} pushes/s ({rate / baseline:.2f}x the baseline), "
              f"{accepted:,} updates accepted (ccxt folds pushes that arrive together)")
        print(f"  resident memory: {first:.1f} MB after the first 10 %, {last:.1f} MB at the "
              f"end: growth {last - first:+.1f} MB (limit 20 MB: "
              f"{'ok' if last - first < 20 else 'EXCEEDED'})")


if __name__ == "__main__":
    main()
