"""The dashboard shows the streamed marks ``perpcarry run`` decides on: the stream risk wired
as ``run`` wires it (``stream_risk``), over a real paper BTC short (the Binance snapshot's
mark, checked by the real risk monitor and recorded with ``record_cycle``), handed pushes as
a hub hands them; the file it leaves beside the journal, and what the API and the positions
page make of it.

The pushed marks are tests/test_risk_watch.py's: the captured mark (the snapshot's own) and
that mark moved by a real hourly candle (+6.71 %, tests/ws_captures/PROVENANCE.md)."""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest
from dashboard_support import TOKEN
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from support import until
from test_risk_watch import CAPTURED_MARK, MOVED_MARK, _watched

from perpcarry.cli.run import loop_settings, stream_risk
from perpcarry.cli.trade import session
from perpcarry.config.loader import load_config
from perpcarry.dashboard.app import create_app
from perpcarry.dashboard.documents import Book
from perpcarry.dashboard.feed import StreamFile, record_cycle, stream_path
from perpcarry.events import EventBus
from perpcarry.execution.service import journal_path
from perpcarry.risk.monitor import MarginRule, RiskMonitor
from perpcarry.streams.session import HubSet
from perpcarry.venues.streams import MarkTick

PERP = "BTC/USDT:USDT"
# The run sizes the short's margin by [allocator]: at 5x with a 5 % buffer the paper venue's
# liquidation price is 20.3 % above the captured mark (under [risk] warning_distance 25 %)
# and 12.8 % above the moved one (under floor_distance 15 %). The margin is then 95.5 %
# used: the ceiling is raised so that the check does not reduce the position away.
CONFIG = ("[allocator]\nleverage = 5\nmargin_buffer = 0.05\n[paper.venues.binance]\n"
          "balances = { USDT = 100000 }\n[strategy]\nmargin_floor = 0.1\n"
          "[risk]\nleverage_ceiling = 20\nutilisation_ceiling = 0.99\n"
          "[streams]\nmax_age_seconds = 30\n")

pytestmark = pytest.mark.usefixtures("data_dir")


class Held:
    """A held perp the stream risk watches, the page's client, and ``push``: one mark
    handed to the hub's listeners in their order, as ``StreamHub`` does."""

    def __init__(self, config, trading, monitor, hubs, watch) -> None:
        self.config, self.trading, self.monitor, self.watch = config, trading, monitor, watch
        self.hubs = hubs
        [self.writer] = [x for x in hubs.listeners if isinstance(x, StreamFile)]
        self.book = Book(journal_path(config.data_dir, True), "paper", paper=True)
        self.client = TestClient(create_app(config, self.book, TOKEN))

    def push(self, mark: Decimal, at: datetime | None = None) -> None:
        tick = MarkTick(PERP, at or datetime.now(UTC), mark)
        for listener in self.hubs.listeners:
            listener("binance", tick, "stream")

    async def check(self):
        """A cycle's check: recorded for the dashboard, watched by the stream risk."""
        report = await self.monitor.check(self.trading, datetime.now(UTC))
        record_cycle(self.trading.journal, report.at, None, [], {}, None, risk=report)
        self.watch.refresh(report, MarginRule.of(self.trading))
        return report

    def file(self) -> dict:
        return json.loads(self.writer.path.read_text())

    def margin(self) -> dict:
        [perp] = [m for m in self.client.get("/api/margins").json()["perps"]
                  if m["symbol"] == PERP]
        return perp

    def row(self) -> str:
        [position] = self.trading.journal.positions()
        page = self.client.get("/positions").text
        [row] = re.findall(rf'<tr data-position="{position.position_id}".*?</tr>', page, re.S)
        return row


@asynccontextmanager
async def held_perp(write_config):
    config = load_config(write_config(CONFIG))
    async with session(config, ["binance"], paper=True, offline=True,
                       trading=True) as trading:
        settings = loop_settings(config, trading, None, 1)
        events = EventBus(config.registry.pm, trading.journal, None, trading.journal.clock)
        hubs = HubSet(config, {v: h.market_data for v, h in trading.venues.items()})
        watch = stream_risk(config, trading, hubs, settings.rules, events)
        await trading.open("binance", "BTC", notional=None, quantity=Decimal("0.01"),
                           executor=settings.executor, slices=1)
        monitor = RiskMonitor(config.settings.risk, events)
        held = Held(config, trading, monitor, hubs, watch)
        report = await held.check()
        [perp] = [p for p in report.perps if p.symbol == PERP]
        assert perp.mark == CAPTURED_MARK and perp.liquidation_price is not None
        held.perp = perp
        yield held


def pct(value: Decimal) -> str:
    return f"{float(value) * 100:.1f}%"


# -- the writer -------------------------------------------------------------------------------

async def test_the_file_holds_what_the_stream_risk_computed_on_the_push(write_config):
    async with held_perp(write_config) as h:
        h.push(MOVED_MARK)
        reading = h.watch.readings[("binance", PERP)]
        # The stream risk's own arithmetic: the check's liquidation price against the push.
        assert reading.distance == abs(h.perp.liquidation_price - MOVED_MARK) / MOVED_MARK
        [written] = h.file()["perps"]
        assert written == {"venue": "binance", "symbol": PERP, "mark": str(MOVED_MARK),
                           "at": reading.at.isoformat(), "distance": str(reading.distance),
                           "pool_equity": str(reading.pool_equity)}
        assert Decimal(written["distance"]) == reading.distance  # every digit
        assert datetime.fromisoformat(h.file()["written_at"]).tzinfo is not None
        # The very push the risk decided on (under the floor at this distance) is in the file.
        [decision] = h.watch.decisions
        assert (decision.what, decision.mark) == ("liquidation_floor", MOVED_MARK)


async def test_pushes_inside_a_second_make_one_write_and_the_last_one_follows(write_config):
    async with held_perp(write_config) as h:
        h.push(CAPTURED_MARK)
        assert h.writer.writes == 1
        first = h.file()
        start = datetime.now(UTC)
        marks = [MOVED_MARK, CAPTURED_MARK] * 50 + [MOVED_MARK]
        for n, mark in enumerate(marks):
            h.push(mark, start + timedelta(milliseconds=n + 1))
        # Nothing awaited since: the window's write is only scheduled.
        assert h.writer.writes == 1 and h.file() == first
        await until(lambda: h.writer.writes == 2)
        [written] = h.file()["perps"]
        last = h.watch.readings[("binance", PERP)]
        assert (written["mark"], written["at"], written["distance"]) == (
            str(MOVED_MARK), last.at.isoformat(), str(last.distance))
        await asyncio.sleep(1.2)
        assert h.writer.writes == 2  # nothing new pushed: nothing rewritten


EVERY = 0.02  # the window, shortened so that many examples run in a few seconds


@given(pushes=st.lists(st.tuples(st.sampled_from([CAPTURED_MARK, MOVED_MARK]),
                                 st.sampled_from([0, 0.005, 0.012, EVERY * 1.5])),
                       min_size=1, max_size=12))
@settings(max_examples=25, deadline=None)
def test_writes_are_a_window_apart_and_the_newest_reading_always_arrives(pushes):
    """Whatever the pushes and the pauses between them: no two writes inside one window,
    and once the pushes stop the file holds the stream risk's newest reading."""
    async def scenario(folder: Path) -> None:
        watch, _ = _watched(CAPTURED_MARK, Decimal("0.01"), Decimal("1.5"), Decimal("1.1"))
        writer = StreamFile(folder / "journal.stream.json", watch, every=EVERY)
        written_at: list[float] = []
        write = writer.write

        def timed() -> None:
            written_at.append(time.monotonic())  # before: the window counts from the start
            write()

        writer.write = timed
        start = datetime.now(UTC)
        for n, (mark, pause) in enumerate(pushes):
            tick = MarkTick(PERP, start + timedelta(milliseconds=n), mark)
            watch("binance", tick, "stream")
            writer("binance", tick, "stream")
            await asyncio.sleep(pause)
        await asyncio.sleep(EVERY * 3)
        assert all(b - a > EVERY - 1e-3 for a, b in pairwise(written_at)), written_at
        [written] = json.loads(writer.path.read_text())["perps"]
        newest = watch.readings[("binance", PERP)]
        assert (written["mark"], written["at"]) == (str(newest.mark), newest.at.isoformat())

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(scenario(Path(folder)))


async def test_a_failing_write_warns_once_and_the_risk_keeps_deciding(write_config,
                                                                     logged_warnings):
    async with held_perp(write_config) as h:
        # The temporary file cannot be made (a directory in its place): every write fails,
        # whoever runs the test (a read-only folder does not stop root).
        h.writer.path.with_name(h.writer.path.name + ".partial").mkdir()
        h.writer.every = 0.01
        for _ in range(5):
            h.push(CAPTURED_MARK)
            await asyncio.sleep(0.05)
        assert not h.writer.path.exists() and h.writer.writes == 0
        h.push(MOVED_MARK)  # raises nothing: the risk decided before the write failed
        assert [d.what for d in h.watch.decisions] == ["liquidation_warning",
                                                       "liquidation_floor"]
        failed = [w for w in logged_warnings if "not written" in w]
        assert len(failed) == 1, logged_warnings
        assert str(h.writer.path) in failed[0] and "the run goes on" in failed[0]


async def test_the_file_goes_when_nothing_is_held(write_config):
    async with held_perp(write_config) as h:
        h.push(MOVED_MARK)
        assert h.writer.path.exists()
        [position] = h.trading.journal.positions()
        await h.trading.close(position, executor=h.trading.executor(None), slices=1)
        await h.check()
        assert h.watch.readings == {}
        h.push(CAPTURED_MARK)  # a mark of a perp no longer held
        await until(lambda: not h.writer.path.exists())


async def test_a_new_run_replaces_the_file_a_previous_run_left(write_config):
    async with held_perp(write_config) as h:
        h.writer.path.write_text(json.dumps({"written_at": "2025-09-09T00:00:00+00:00",
                                             "perps": []}))
        h.push(CAPTURED_MARK)
        [written] = h.file()["perps"]
        assert written["mark"] == str(CAPTURED_MARK)
        # A run that starts holding nothing removes what the last one left, on its first
        # pushed mark.
        [position] = h.trading.journal.positions()
        await h.trading.close(position, executor=h.trading.executor(None), slices=1)
        await h.check()
        next_run = StreamFile(h.writer.path, h.watch)
        next_run("binance", MarkTick(PERP, datetime.now(UTC), MOVED_MARK), "stream")
        assert not h.writer.path.exists()


# -- the read side ----------------------------------------------------------------------------

async def test_a_fresh_reading_is_shown_with_its_level_beside_the_checks(write_config):
    async with held_perp(write_config) as h:
        risk = h.config.settings.risk
        before = h.margin()
        assert before["streamed"] is None and before["level"] == "warning"
        assert 'class="streamed margin-unread">no streamed mark' in h.row()
        h.push(MOVED_MARK)
        distance = h.watch.readings[("binance", PERP)].distance
        assert distance < risk.floor_distance < Decimal(before["distance"])
        margin = h.margin()
        # The check's reading is still there, unchanged; the streamed one beside it.
        assert (margin["distance"], margin["level"]) == (before["distance"], "warning")
        streamed = margin["streamed"]
        assert (streamed["mark"], streamed["distance"], streamed["level"], streamed["stale"]) \
            == (str(MOVED_MARK), str(distance), "floor", False)
        assert 0 <= streamed["age_seconds"] < 30
        row = h.row()
        assert 'class="streamed margin-floor"' in row
        assert re.search(rf"streamed: mark {MOVED_MARK}, liquidation {pct(distance)} away, "
                         r"\d+s ago ⛔", row), row
        assert h.client.get("/api/positions").status_code == 200


async def test_a_reading_older_than_max_age_is_stale(write_config):
    async with held_perp(write_config) as h:
        h.push(MOVED_MARK, datetime.now(UTC) - timedelta(seconds=90))
        streamed = h.margin()["streamed"]
        assert streamed["stale"] is True and streamed["age_seconds"] >= 90
        row = h.row()
        assert 'class="streamed stale"' in row and 'class="streamed margin-' not in row
        assert "stale: streamed: mark" in row and "(older than 30s)" in row


@pytest.mark.parametrize("text, warned", [
    ("", False),
    ("{not json", True),
    ("[]", True),
    ('{"written_at": "x", "perps": {"binance": 1}}', True),
    ('{"perps": [{"venue": "binance", "symbol": "BTC/USDT:USDT", "mark": "abc", '
     '"at": "2026-12-06T00:00:00+00:00", "distance": null, "pool_equity": null}]}', True),
    ('{"perps": [{"venue": "binance", "symbol": "BTC/USDT:USDT", "mark": "1", '
     '"at": "2026-12-06T00:00:00", "distance": null, "pool_equity": null}]}', True),
])
async def test_a_damaged_file_leaves_the_checks_reading_alone(write_config, logged_warnings,
                                                             text, warned):
    async with held_perp(write_config) as h:
        stream_path(h.book.path).write_text(text)
        response = h.client.get("/api/margins")
        assert response.status_code == 200
        [margin] = [m for m in response.json()["perps"] if m["symbol"] == PERP]
        assert margin["streamed"] is None
        assert Decimal(margin["distance"]) == h.perp.distance
        assert margin["level"] == "warning"
        row = h.row()
        assert "no streamed mark" in row
        assert f">{pct(h.perp.distance)} ⚠ below warning 25%</td>" in row
        damaged = [w for w in logged_warnings if "damaged" in w]
        assert len(damaged) == (2 if warned else 0), logged_warnings  # one per request
