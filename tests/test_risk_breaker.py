"""The circuit breaker: each trigger trips it (and just short of its threshold does not),
the trip survives reopening the journal, and ``flatten`` closes every position smallest
first through the executor on the Binance paper account."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perpcarry.cli.trade import session
from perpcarry.config.loader import load_config
from perpcarry.config.settings import RiskConfig
from perpcarry.events import EventBus
from perpcarry.execution.journal import Journal
from perpcarry.execution.recovery import Finding, Reconciliation
from perpcarry.risk.breaker import CircuitBreaker, flatten
from perpcarry.risk.report import RiskEvent, RiskReport
from perpcarry.risk.state import breaker_state

T0 = datetime(2026, 12, 6, 9, tzinfo=UTC)
CONFIG = RiskConfig()


def bus(journal: Journal) -> EventBus:
    return EventBus(load_config(None).registry.pm, journal, None, journal.clock)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def naked(action: str) -> Reconciliation:
    return Reconciliation([Finding("naked_leg", "binance", "pos1",
                                   "venue holds 0.008 BTC short of 0.010 journalled", action)])


def report(seconds: float, *, pnl: str | None = None, equity: str = "10000",
           down: dict[str, str] | None = None, events=()) -> RiskReport:
    return RiskReport(at=at(seconds), events=list(events), down=down or {},
                      unrealised_pnl=None if pnl is None else Decimal(pnl),
                      equity=Decimal(equity))


UNRESOLVED = RiskEvent("floor_unresolved", "bybit", "pos2", {},
                       "BTC/USDT:USDT: rebalance of 0.002 BTC failed: insufficient margin")

# Per trigger: the cycles fed (seconds after T0, feed keywords) that trip it, the last
# feed's trip reason, and cycles just short of the threshold that must not trip it.
CASES = {
    "naked_leg": (
        [(0, {"reconciliation": naked("not closed: dust")}),
         (60, {"reconciliation": naked("not closed: dust")})],
        "naked leg of pos1 on binance not closed for 2 cycles",
        [(0, {"reconciliation": naked("not closed: dust")}),
         (60, {"reconciliation": naked("closed: sell 0.002 BTC spot")}),
         (120, {"reconciliation": naked("not closed: dust")})]),
    "order_errors": (
        [(0, {"order_errors": {"okx": 3}}), (500, {"order_errors": {"okx": 3}})],
        "6 order errors on okx within 600 s (at most 5)",
        [(0, {"order_errors": {"okx": 3}}), (601, {"order_errors": {"okx": 3}})]),
    "margin_floor": (
        [(0, {"report": report(0, events=[UNRESOLVED])})],
        "bybit pos2: margin below the floor and not restored",
        [(0, {"report": report(0, events=[RiskEvent("warning", "bybit", "x", {}, "w")])})]),
    "drawdown": (
        [(0, {"report": report(0, pnl="100")}), (60, {"report": report(60, pnl="-300")}),
         (240, {"report": report(240, pnl="-701")})],
        "unrealised PnL fell 8.01 % of equity (100.00 to -701.00) within 300 s",
        [(0, {"report": report(0, pnl="100")}), (200, {"report": report(200, pnl="-300")}),
         (301, {"report": report(301, pnl="-701")})]),
    "venue_down": (
        [(0, {"report": report(0, down={"okx": "no answer"})}),
         (601, {"report": report(601, down={"okx": "no answer"})})],
        "okx unanswered since 09:00:00 UTC, over 10 min (no answer)",
        [(0, {"report": report(0, down={"okx": "no answer"})}),
         (300, {"report": report(300)}),
         (601, {"report": report(601, down={"okx": "no answer"})})]),
    # Down in the market data while the account half still answers counts as well.
    "venue_down_market_data": (
        [(0, {"venues_down": {"okx": "no funding snapshot"}}),
         (601, {"report": report(601), "venues_down": {"okx": "no funding snapshot"}})],
        "okx unanswered since 09:00:00 UTC, over 10 min (no funding snapshot)",
        [(0, {"venues_down": {"okx": "no funding snapshot"}}),
         (300, {"venues_down": {}}),
         (601, {"venues_down": {"okx": "no funding snapshot"}})]),
}


@pytest.fixture
def journal_path(tmp_path):
    return tmp_path / "journal.sqlite"


@pytest.mark.parametrize("trigger", sorted(CASES))
def test_each_trigger_trips_and_stays_tripped_after_a_restart(trigger, journal_path):
    feeds, reason, _ = CASES[trigger]
    with Journal.open(journal_path, trading=True) as journal:
        breaker = CircuitBreaker(CONFIG, journal, bus(journal))
        states = [breaker.feed(at(seconds), **feed) for seconds, feed in feeds]
        assert states[:-1] == [None] * (len(feeds) - 1)
        tripped = states[-1]
        expected = trigger.removesuffix("_market_data")
        assert (tripped.trigger, tripped.reason.startswith(reason)) == (expected, True), \
            tripped.reason
        [event] = [e["detail"] for e in journal.events() if e["kind"] == "event"]
        assert event["kind"] == "breaker" and event["data"]["trigger"] == expected
    # A new process: the journal says tripped, and a fresh breaker agrees.
    with Journal.open(journal_path, trading=True) as journal:
        assert breaker_state(journal) == tripped
        assert CircuitBreaker(CONFIG, journal, bus(journal)).state == tripped
        # Later triggers do not replace the cause.
        again = CircuitBreaker(CONFIG, journal, bus(journal)).feed(
            at(900), report=report(900, events=[UNRESOLVED]))
        assert again == tripped


@pytest.mark.parametrize("trigger", sorted(CASES))
def test_just_short_of_each_threshold_does_not_trip(trigger, journal_path):
    _, _, feeds = CASES[trigger]
    with Journal.open(journal_path, trading=True) as journal:
        breaker = CircuitBreaker(CONFIG, journal, bus(journal))
        assert [breaker.feed(at(seconds), **feed) for seconds, feed in feeds] == \
            [None] * len(feeds)
        assert breaker_state(journal) is None


async def test_flatten_closes_every_position_smallest_first(tmp_path, monkeypatch):
    monkeypatch.setenv("PERPCARRY_DATA_DIR", str(tmp_path / "data"))
    config = load_config(None)
    async with session(config, ["binance"], paper=True, offline=True,
                       trading=True) as trading:
        opened = []
        for quantity in ("0.02", "0.01", "0.015"):
            result = await trading.open("binance", "BTC", notional=None,
                                        quantity=Decimal(quantity),
                                        executor=trading.executor(None), slices=1)
            opened.append(result.position_id)
        done = await flatten(trading)
        assert done.failed == {}
        # Smallest first: 0.01, 0.015, 0.02.
        assert [r.position_id for r in done.closed] == [opened[1], opened[2], opened[0]]
        assert [r.perp_change for r in done.closed] == [Decimal("-0.010"),
                                                        Decimal("-0.015"),
                                                        Decimal("-0.020")]
        assert trading.journal.positions() == []
        assert await trading.venues["binance"].orders.fetch_positions() == []


@given(st.lists(st.tuples(st.integers(0, 900), st.integers(0, 4)), min_size=1, max_size=12),
       st.lists(st.tuples(st.integers(0, 900), st.integers(-2000, 2000)), min_size=1,
                max_size=12))
@settings(deadline=None, max_examples=60)
def test_the_breaker_trips_exactly_when_a_window_holds_too_much(tmp_path_factory, errors,
                                                                pnls):
    """Against a brute-force count over every window: more than max_order_errors errors
    within order_error_window_seconds, or a fall of more than max_drawdown of the equity
    from the highest sample within drawdown_window_seconds."""
    errors, pnls = sorted(errors), sorted(pnls)
    path = tmp_path_factory.mktemp("journal") / "journal.sqlite"
    with Journal.open(path, trading=True) as journal:
        breaker = CircuitBreaker(CONFIG, journal, bus(journal))
        for seconds, count in errors:
            breaker.feed(at(seconds), order_errors={"okx": count})
        window = CONFIG.order_error_window_seconds
        expected = any(sum(c for s, c in errors if t - window <= s <= t)
                       > CONFIG.max_order_errors for t, _ in errors)
        assert (breaker.state is not None) == expected
    path = tmp_path_factory.mktemp("journal") / "journal.sqlite"
    with Journal.open(path, trading=True) as journal:
        breaker = CircuitBreaker(CONFIG, journal, bus(journal))
        for seconds, pnl in pnls:
            breaker.feed(at(seconds), report=report(seconds, pnl=str(pnl)))
        window = CONFIG.drawdown_window_seconds
        expected = any(
            (pnl - max(p for s, p in pnls[:i + 1] if t - window <= s)) / 10_000
            < -CONFIG.max_drawdown for i, (t, pnl) in enumerate(pnls))
        assert (breaker.state is not None) == expected


async def test_a_flatten_cancelled_mid_close_finishes_that_close_and_goes_no_further(
        tmp_path, monkeypatch):
    monkeypatch.setenv("PERPCARRY_DATA_DIR", str(tmp_path / "data"))
    config = load_config(None)
    async with session(config, ["binance"], paper=True, offline=True,
                       trading=True) as trading:
        for quantity in ("0.02", "0.01"):
            await trading.open("binance", "BTC", notional=None, quantity=Decimal(quantity),
                               executor=trading.executor(None), slices=1)
        venue = trading.venues["binance"].orders
        place = venue.place_order
        sent = []

        async def stop_requested_between_the_legs(request):
            # A stop arrives as the spot leg is about to leave, then a second, impatient
            # one; each is delivered at once.
            if request.market.kind.value == "spot":
                for _ in range(2):
                    running.cancel()
                    await asyncio.sleep(0)
            sent.append(request.market.kind.value)
            return await place(request)

        venue.place_order = stop_requested_between_the_legs
        running = asyncio.ensure_future(flatten(trading))
        with pytest.raises(asyncio.CancelledError):
            await running
        # The smallest position's close ran to its end on both legs; nothing after it.
        assert sent == ["perp", "spot"]
        [left] = trading.journal.positions()
        assert left.perp_quantity == Decimal("0.020")
        [short] = await venue.fetch_positions()
        assert short.quantity == Decimal("0.020")
