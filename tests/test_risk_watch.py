"""``perpcarry run`` deciding on streamed marks between cycles: a held Binance BTC pair on the
paper venue, its mark pushed by the local websocket server (tests/ws_server.py).

The captured mark (112015.09961957) scaled by a real hourly move is the push that breaches:
Binance BTCUSDT perp, the 1 h candle of 2026-02-06 00:00 UTC, low 59800.0 -> high 63812.5
(``../shared/data/knx-multivenue/candles.parquet``), +6.71 % (tests/ws_captures/
PROVENANCE.md). Every test asserts what the loop did about it, read from the journal and the
paper account."""

from __future__ import annotations

import asyncio
import copy
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import until
from venue_server import LOCAL_ONLY, Answer
from ws_server import Faults, WsVenueServer

from perpcarry.cli.run import loop_settings, stream_risk
from perpcarry.cli.trade import session
from perpcarry.config.loader import load_config
from perpcarry.config.settings import RunConfig
from perpcarry.events import EventBus
from perpcarry.run.loop import CarryLoop
from perpcarry.run.report import CycleReport
from perpcarry.run.service import Runner
from perpcarry.streams.hub import FeedState
from perpcarry.streams.market import KINDS
from perpcarry.streams.session import HubSet
from perpcarry.venues.orders import Side
from perpcarry.venues.streams import StreamKind

ROOT = Path(__file__).parents[1]
PERP, SPOT = "BTC/USDT:USDT", "BTC/USDT"
MARK_STREAM = "perp:btcusdt@markPrice@1s"
CAPTURED_MARK = Decimal("112015.09961957")
MOVE = Decimal("63812.5") / Decimal("59800.0")  # the real candle's high / low
MOVED_MARK = (CAPTURED_MARK * MOVE).quantize(Decimal("0.00000001"))
STREAMED_SPOT_ASK = Decimal("115473.70")  # tests/ws_captures/binance.json, bookTicker

pytestmark = [pytest.mark.block_network(**LOCAL_ONLY), pytest.mark.usefixtures("data_dir")]


@pytest.fixture(scope="module")
def server():
    served = WsVenueServer(ROOT / "plugins" / "binance" / "snapshot" / "snapshot.json",
                           interval=0.02, venues=("binance",))
    served.start()
    yield served
    served.stop()


@pytest.fixture
def replay(server):
    """The server as captured (faults, REST rule, mark pushes reset after the test); set
    ``moved`` to push the moved mark instead."""
    captured = copy.deepcopy(server.captures["binance"][MARK_STREAM])
    server.faults["binance"] = Faults()
    server.rule = None

    def moved(mark: Decimal = MOVED_MARK) -> None:
        pushes = copy.deepcopy(captured)
        for push in pushes:
            push["p"] = str(mark)
        server.captures["binance"][MARK_STREAM] = pushes

    yield moved
    server.captures["binance"][MARK_STREAM] = captured
    server.faults["binance"] = Faults()
    server.rule = None


class Run:
    """A paper session on Binance over the server, its loop with the stream risk wired as
    ``perpcarry run`` wires it, and a BTC carry opened before the streams start."""

    def __init__(self, config, trading, loop, hubs) -> None:
        self.config, self.trading, self.loop, self.hubs = config, trading, loop, hubs

    def start_streams(self) -> None:
        pair = self.trading._pairs[("binance", "BTC")]
        self.hubs.start({"binance": [pair]}, KINDS)

    async def live(self) -> None:
        hub = self.hubs.get("binance")
        for _ in range(500):
            if hub.fresh(StreamKind.MARK, PERP, 5.0) is not None:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("no fresh streamed mark")

    def events(self, kind: str) -> list[dict]:
        """The journal's events of ``kind`` (their details)."""
        return [e["detail"] for e in self.trading.journal.events(limit=100_000)
                if e["kind"] == kind]

    def transfers(self) -> list[dict]:
        return self.events("transfer_done")


@pytest.fixture
async def run(server, replay, write_config, tmp_path):
    async def build(extra: str = "", streams: str = "") -> Run:
        path = write_config(
            f'cache_dir = "{tmp_path / "cache"}"\n'
            "[paper]\nquote_max_age_seconds = 0\n"
            "[streams]\nstale_after_seconds = {default = 1.5}\nbackoff_base_seconds = 0.05\n"
            f"{streams}{extra}"
            f'[venues.binance]\nenabled = true\nbase_url = "{server.url}"\n')
        config = load_config(path)
        trading = await stack.enter_async_context(
            session(config, ["binance"], paper=True, offline=False, trading=True))
        settings = loop_settings(config, trading, None, 1)
        events = EventBus(config.registry.pm, trading.journal, None, lambda: datetime.now(UTC))
        loop = CarryLoop(trading, None, settings, lambda: datetime.now(UTC), events)
        clients = {v: h.market_data for v, h in trading.venues.items()}
        hubs = HubSet(config, clients)
        stack.push_async_callback(hubs.close)
        loop.watch = stream_risk(config, trading, hubs, settings.rules, events)
        await trading.open("binance", "BTC", notional=Decimal(20_000), quantity=None,
                           executor=settings.executor, slices=1)
        # The check a cycle makes: the stream risk watches what it read.
        await loop.risk_check(CycleReport(datetime.now(UTC)))
        return Run(config, trading, loop, hubs)

    async with AsyncExitStack() as stack:
        yield build


async def _one_risk_step(run: Run) -> list[CycleReport]:
    """What the Runner does between two cycles, until its first risk step (a full cycle
    would fail the test)."""
    reports: list[CycleReport] = []

    async def no_cycle():
        raise AssertionError("a full cycle ran")

    def report(step, wake) -> None:
        reports.append(step)
        run.loop.stop.set()

    run.loop.cycle = no_cycle
    runner = Runner(run.loop, RunConfig(), report, lambda: datetime.now(UTC))
    await asyncio.wait_for(runner.between(datetime.now(UTC) + timedelta(hours=1)), 60)
    return reports


async def test_a_streamed_margin_breach_is_decided_on_its_push_and_topped_up_by_a_risk_step(
        run, replay):
    replay()
    r = await run("[strategy]\nmargin_floor = 1.4\n")
    watch = r.loop.watch
    assert watch.decisions == []  # at the captured mark the pool is above the floor
    heard: list = []

    def after_watch(venue, update, source) -> None:
        # The next listener on the same push: the decision is already made.
        if update.kind is StreamKind.MARK and source == "stream" and not heard:
            heard.append((update, list(watch.decisions)))

    r.hubs.listeners.append(after_watch)
    r.start_streams()
    await until(lambda: heard)
    update, decided = heard[0]
    assert update.mark_price == MOVED_MARK
    (decision,) = decided
    assert (decision.what, decision.action, decision.venue, decision.symbol) == \
        ("margin_floor", "risk_step", "binance", PERP)
    assert (decision.mark, decision.source, decision.at) == (MOVED_MARK, "stream", update.at)
    assert "(floor 1.4x)" in decision.why
    transfers_before = len(r.transfers())

    (step,) = await _one_risk_step(r)

    assert step.step == "risk"
    assert decision.line() in step.notes
    top_ups = [n for n in step.notes if "moved" in n and "to the futures wallet" in n]
    assert len(top_ups) == 1, step.notes
    assert len(r.transfers()) > transfers_before
    stream_alarm = [e for e in r.events("event")
                    if e["data"].get("risk_kind") == "stream_margin_floor"]
    assert len(stream_alarm) == 1  # told once, not on every push
    assert [e for e in r.events("event") if e["data"].get("risk_kind") == "top_up"]
    assert [e["step"] for e in r.events("risk_step")] == ["risk"]
    # The top-up restored the pool: the next pushes of the same mark decide nothing more.
    watch.decisions.clear()
    await asyncio.sleep(0.3)
    assert [d.what for d in watch.decisions if d.what == "margin_floor"] == []


async def test_with_the_feed_stale_nothing_is_decided_and_the_next_check_acts_on_rest(
        run, replay, server):
    r = await run("[strategy]\nmargin_floor = 1.4\n")
    # The feed stalls after its first push and every resubscription is refused: it stays
    # stale. Meanwhile the venue's REST mark is the moved one.
    server.faults["binance"] = Faults(stall_after=1, refuse_subscriptions=1000)
    recorded = server.recorded
    premium = next(a for k, a in recorded.items() if k[1] == "/fapi/v1/premiumIndex")
    moved_body = premium.body.replace(str(CAPTURED_MARK), str(MOVED_MARK))
    assert moved_body != premium.body
    server.rule = lambda host, path, query, answer: (
        Answer(answer.status, moved_body) if path == "/fapi/v1/premiumIndex" else None)
    r.start_streams()
    feed = next(f for f in r.hubs.get("binance").feeds if StreamKind.MARK in f.kinds)
    await until(lambda: feed.state is FeedState.STALE and feed.counts["rest_polls"] >= 1)
    assert feed.state is FeedState.STALE
    assert r.loop.watch.decisions == []  # the REST poll's moved mark decides nothing here
    assert not r.loop.watch.wake.is_set()

    # The next cycle's REST check (the step every cycle runs) tops up.
    report = CycleReport(datetime.now(UTC))
    await r.loop.risk_check(report)
    assert any("to the futures wallet" in n and "floor 1.4x" in n for n in report.notes), \
        report.notes
    assert r.loop.watch.decisions == []


async def test_a_spike_rest_does_not_confirm_closes_nothing(run, replay):
    replay()
    r = await run("[strategy]\nspike_exit = 0.05\n")
    r.start_streams()
    await until(lambda: r.loop.watch.wake.is_set())
    (decision,) = [d for d in r.loop.watch.decisions if d.what == "spike_exit"]
    assert decision.mark == MOVED_MARK and decision.action == "exit"

    (step,) = await _one_risk_step(r)

    assert [a for a in step.actions if a.kind == "close"] == []
    (note,) = [n for n in step.notes if n.startswith("spike exit of BTC on binance")]
    assert note.startswith(f"spike exit of BTC on binance not confirmed: REST mark "
                           f"{CAPTURED_MARK} moved 0.0")
    assert len(r.trading.journal.positions()) == 1


async def test_a_spike_rest_confirms_closes_the_pair(run, replay, server):
    replay()
    r = await run("[strategy]\nspike_exit = 0.05\n")
    premium = next(a for k, a in server.recorded.items() if k[1] == "/fapi/v1/premiumIndex")
    moved_body = premium.body.replace(str(CAPTURED_MARK), str(MOVED_MARK))
    r.start_streams()
    await until(lambda: r.loop.watch.wake.is_set())
    server.rule = lambda host, path, query, answer: (
        Answer(answer.status, moved_body) if path == "/fapi/v1/premiumIndex" else None)

    (step,) = await _one_risk_step(r)

    (close,) = [a for a in step.actions if a.kind == "close"]
    assert close.state == "done"
    assert close.reason.startswith("exit: price moved 6.")
    assert f"REST mark {MOVED_MARK}" in close.reason
    assert r.trading.journal.positions() == []


async def test_paper_fills_and_orders_use_the_fresh_streamed_book_and_mark_and_say_so(
        run, replay, caplog_info):
    replay()  # the streamed mark is the moved one; REST keeps the captured one
    r = await run(streams="max_age_seconds = 0.5\n")
    r.start_streams()
    hub = r.hubs.get("binance")
    await until(lambda: hub.fresh(StreamKind.SPOT_BOOK, SPOT, 5.0) is not None)
    await r.live()
    view = r.trading.venues["binance"].orders.view
    markets = await view.markets()
    spot, perp = markets[SPOT], markets[PERP]
    assert await view.fill_price(spot, Side.BUY) == (STREAMED_SPOT_ASK, "stream book ask")
    # No perp book is streamed or in the snapshot: the fresh streamed mark, less 2 bps, down
    # to the 0.1 tick (119531.16295107 x 0.9998 = 119507.256...).
    assert await view.fill_price(perp, Side.SELL) == (Decimal("119507.2"), "stream mark-2bps")

    # The executor sizes and checks orders at the fresh streamed mark.
    pair = await r.trading.pair("binance", "BTC")
    assert await r.trading.reference_price(pair) == MOVED_MARK
    # A real order through the run's session: the spot leg fills at the streamed ask.
    result = await r.trading.open("binance", "BTC", notional=Decimal(5_000), quantity=None,
                                  executor=r.loop.settings.executor, slices=1)
    assert result.state.value == "done"
    fills = [row.state for row in r.trading.venues["binance"].orders.store.orders(SPOT, None)
             if row.state.price_source is not None]
    assert fills[-1].price_source == "stream book ask"
    assert fills[-1].average_price == STREAMED_SPOT_ASK

    # Streams gone quiet past max_age (0.5 s): REST, and said so.
    await r.hubs.close()
    await asyncio.sleep(0.6)
    price, source = await view.fill_price(spot, Side.BUY)
    assert source == "perp mark+2bps"  # no book in the snapshot: the REST mark, named
    assert CAPTURED_MARK < price < MOVED_MARK
    assert await r.trading.reference_price(pair) == CAPTURED_MARK
    assert any(line.startswith("binance: mark of BTC/USDT:USDT from REST (watchMarkPrices "
                               "perp ") for line in caplog_info), caplog_info


# -- the arithmetic, on any path of marks ---------------------------------------------------

def _watched(mark: Decimal, quantity: Decimal, margin: Decimal, floor: Decimal):
    """A StreamRisk watching one journal short of ``quantity`` at ``mark`` whose pool holds
    ``margin`` times its initial margin (leverage 2, target 1.5x, ``floor``)."""
    from perpcarry.config.settings import RiskConfig, StrategyConfig
    from perpcarry.execution.journal import Position, PositionState
    from perpcarry.plugins.manager import load_registry
    from perpcarry.risk.monitor import MarginRule
    from perpcarry.risk.report import PerpRisk, PoolRisk, RiskReport
    from perpcarry.risk.watch import StreamRisk
    from perpcarry.strategy.rules import Rules
    from perpcarry.venues.orders import Wallet

    now = datetime.now(UTC)
    position = Position("p1", "binance", "BTC", SPOT, PERP, quantity, quantity,
                        quantity * mark, quantity * mark, {}, PositionState.OPEN, now, None)
    perp = PerpRisk("binance", PERP, "USDT", True, quantity, mark, None, None, None, None,
                    (position,))
    pool = PoolRisk("binance", "USDT", Wallet.FUTURES, margin * quantity * mark / 2,
                    Decimal(0), quantity * mark)
    watch = StreamRisk(RiskConfig(), Rules.from_config(StrategyConfig()),
                       EventBus(load_registry().pm, None, None, lambda: datetime.now(UTC)))
    watch.refresh(RiskReport(now, perps=[perp], pools=[pool]),
                  MarginRule(Decimal(2), floor, Decimal("1.5")))
    return watch, pool


@given(moves=st.lists(st.decimals(min_value=Decimal("0.9"), max_value=Decimal("1.1"),
                                  places=4), min_size=1, max_size=30),
       quantity=st.decimals(min_value=Decimal("0.001"), max_value=Decimal("50"), places=3),
       floor=st.decimals(min_value=Decimal("1.1"), max_value=Decimal("1.5"), places=2))
@settings(max_examples=60, deadline=None)
def test_the_streamed_margin_is_the_checks_moved_by_the_last_mark_whatever_the_path(
        moves, quantity, floor):
    from perpcarry.risk.sizing import margin_top_up
    from perpcarry.venues.streams import MarkTick

    watch, pool = _watched(CAPTURED_MARK, quantity, Decimal("1.5"), floor)
    breached_at = None
    for n, move in enumerate(moves):
        mark = CAPTURED_MARK * move
        watch("binance", MarkTick(PERP, datetime.now(UTC), mark), "stream")
        equity = pool.equity - quantity * (mark - CAPTURED_MARK)
        # Path independence: what the pool holds depends on the last mark only.
        assert watch.readings[("binance", PERP)].pool_equity == equity
        if breached_at is None and margin_top_up(equity, quantity * mark, Decimal(2), floor,
                                                 Decimal("1.5")) > 0:
            breached_at = n
            # Decided on this very push, and asking for a risk step.
            assert [d.what for d in watch.decisions] == ["margin_floor"]
            assert watch.decisions[0].mark == mark and watch.wake.is_set()
    if breached_at is None:
        assert watch.decisions == [] and not watch.wake.is_set()
    else:  # told once per check, however many pushes breach after
        assert len(watch.decisions) == 1


@given(move=st.decimals(min_value=Decimal("1.05"), max_value=Decimal("1.5"), places=3))
@settings(max_examples=20, deadline=None)
def test_a_rest_value_decides_nothing(move):
    from perpcarry.venues.streams import MarkTick

    watch, _ = _watched(CAPTURED_MARK, Decimal(1), Decimal("1.3"), Decimal("1.25"))
    watch("binance", MarkTick(PERP, datetime.now(UTC), CAPTURED_MARK * move), "rest")
    assert watch.decisions == [] and watch.readings == {} and not watch.wake.is_set()


async def test_risk_steps_come_at_most_every_danger_check_seconds_and_rest_has_the_last_word(
        run):
    """The stream risk asks again on the next breaching push after each step; the Runner
    spaces the steps by ``danger_check_seconds``. The pushes are handed to the listener as
    the hub would (no stream: the paper account's marks stay REST's, unmoved)."""
    import time

    from perpcarry.venues.streams import MarkTick

    r = await run("[strategy]\nmargin_floor = 1.4\n[risk]\ndanger_check_seconds = 0.4\n")
    watch = r.loop.watch
    steps: list[tuple[float, CycleReport]] = []

    def push() -> None:
        watch("binance", MarkTick(PERP, datetime.now(UTC), MOVED_MARK), "stream")

    def report(step, wake) -> None:
        steps.append((time.monotonic(), step))
        if len(steps) == 2:
            r.loop.stop.set()
        else:
            push()  # breaches again: the check (at REST's mark) re-armed the watch

    async def no_cycle():
        raise AssertionError("a full cycle ran")

    r.loop.cycle = no_cycle
    push()
    runner = Runner(r.loop, RunConfig(), report, lambda: datetime.now(UTC))
    await asyncio.wait_for(runner.between(datetime.now(UTC) + timedelta(hours=1)), 30)

    (first_at, first), (second_at, second) = steps
    assert second_at - first_at >= 0.4
    for step in (first, second):
        assert step.step == "risk" and step.notes[0].startswith(
            "stream risk: binance BTC/USDT:USDT margin_floor at mark 119531.16295107")
        # REST (the paper account at the captured mark) shows no breach: nothing is moved.
        assert not [n for n in step.notes if "to the futures wallet" in n]
    assert [d.what for d in watch.decisions] == ["margin_floor", "margin_floor"]
