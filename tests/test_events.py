"""The event bus and the event hooks, through plugins registered the way a third party's
are (an entry point in the ``perpcarry`` group): what each hook receives, that every event
is journalled, and that a plugin that raises stops neither trading nor the other
listeners."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from execution_support import BTC_MARK, SNAPSHOT_TIME
from test_orders_interface import SPOT
from test_plugins import _fake_plugin

from perpcarry.alerts.alerter import build_alerter
from perpcarry.config.settings import AlertsConfig
from perpcarry.events import RISK_KINDS, Event, EventBus, EventKind, Severity
from perpcarry.execution.checks import TradeContext
from perpcarry.execution.journal import Journal
from perpcarry.plugins.manager import load_registry
from perpcarry.venues.orders import (
    Fee,
    FundingPayment,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Side,
)

# A real Binance USDⓈ-M funding payment (ccxt's static test of fetchFundingHistory,
# ../shared/fixtures/ccxt-static/binance.json): BTCUSDT, -0.04618913 USDT at 1707465600000.
PAYMENT = FundingPayment("binance", "BTC/USDT:USDT", Decimal("-0.04618913"), "USDT",
                         datetime.fromtimestamp(1707465600, UTC), "8082457372019390060")
# A perp sell filled at the Binance snapshot's BTCUSDT mark, Binance's 0.05 % taker fee.
FILL = OrderState("binance", "BTC/USDT:USDT", "BTC", "pc1abc", "v1", Side.SELL,
                  OrderType.MARKET, OrderStatus.FILLED, Decimal("0.002"), Decimal("0.002"),
                  BTC_MARK, (Fee(Decimal("0.002") * BTC_MARK * Decimal("0.0005"), "USDT"),),
                  False, SNAPSHOT_TIME, SNAPSHOT_TIME)
NEWS_START = SNAPSHOT_TIME + timedelta(hours=12, minutes=15)
NEWS_END = NEWS_START + timedelta(minutes=30)


def alarm(kind: EventKind, message: str, severity=Severity.WARNING) -> Event:
    return Event(kind, severity, message, SNAPSHOT_TIME, "binance", "BTC/USDT:USDT",
                 {"margin_ratio": "0.81"})


class NewsWindowPlugin:
    """A third party's plugin: no new positions in a news window; its own record of fills,
    funding and alarms."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.fills: list[OrderState] = []
        self.payments: list[FundingPayment] = []
        self.alarms: list[Event] = []
        self.events: list[Event] = []

    def hooks(self) -> dict:
        def pre_trade_check(order, context):
            if context.action == "open" and NEWS_START <= self.clock() < NEWS_END:
                return f"news window until {NEWS_END:%H:%M} UTC: no new positions"
            return None

        return {"pre_trade_check": pre_trade_check,
                "on_fill": lambda fill: self.fills.append(fill),
                "on_funding_payment": lambda payment: self.payments.append(payment),
                "on_risk_alarm": lambda alarm: self.alarms.append(alarm),
                "on_event": lambda event: self.events.append(event)}


@pytest.fixture
def journal(tmp_path):
    with Journal.open(tmp_path / "journal.sqlite", trading=True,
                      clock=lambda: SNAPSHOT_TIME) as journal:
        yield journal


def context(action: str) -> TradeContext:
    return TradeContext("binance", action, BTC_MARK, None, None, Decimal(1), True, None, None)


def test_a_plugin_vetoes_entries_in_its_news_window_and_only_then(monkeypatch):
    now = [SNAPSHOT_TIME]
    plugin = NewsWindowPlugin(lambda: now[0])
    _fake_plugin(monkeypatch, "news_window", **plugin.hooks())
    registry = load_registry()
    order = OrderRequest(SPOT, Side.BUY, Decimal("0.002"), "pcnews")
    assert registry.pre_trade_vetoes(order, context("open")) == []
    now[0] = NEWS_START + timedelta(minutes=5)
    assert registry.pre_trade_vetoes(order, context("open")) == [
        "news_window: news window until 12:45 UTC: no new positions"]
    # Closing is still allowed: the window stops new risk, not its removal.
    assert registry.pre_trade_vetoes(order, context("close")) == []
    now[0] = NEWS_END
    assert registry.pre_trade_vetoes(order, context("open")) == []


def test_each_hook_receives_its_object_and_every_event_is_journalled(monkeypatch, journal):
    plugin = NewsWindowPlugin(lambda: SNAPSHOT_TIME)
    _fake_plugin(monkeypatch, "news_window", **plugin.hooks())
    bus = EventBus(load_registry().pm, journal, None, lambda: SNAPSHOT_TIME)

    fill = bus.fill(FILL)
    unwind = bus.fill(FILL, unwind=True)
    funding = bus.funding_payment(PAYMENT)
    margin = alarm(EventKind.MARGIN_ALARM, "margin ratio 81 % above the 80 % ceiling")
    bus.emit(margin)

    assert plugin.fills == [FILL, FILL]
    assert plugin.payments == [PAYMENT]
    assert plugin.alarms == [margin]  # fills and funding are not risk alarms
    assert plugin.events == [fill, unwind, funding, margin]
    assert fill.message == (f"fill: sell 0.002 BTC/USDT:USDT at {BTC_MARK}, fees "
                            f"{Decimal('0.002') * BTC_MARK * Decimal('0.0005')} USDT")
    assert (unwind.kind, unwind.severity) == (EventKind.UNWIND, Severity.WARNING)
    assert funding.message == "funding paid: 0.04618913 USDT on BTC/USDT:USDT"
    assert funding.time == PAYMENT.time

    stored = [e["detail"] for e in journal.events() if e["kind"] == "event"]
    assert stored == [e.as_dict() for e in (fill, unwind, funding, margin)]
    assert stored[2]["data"] == {"amount": "-0.04618913", "currency": "USDT",
                                 "payment_id": "8082457372019390060"}


@pytest.mark.parametrize("kind", list(EventKind))
def test_on_risk_alarm_is_called_for_risk_kinds_only(kind, monkeypatch):
    plugin = NewsWindowPlugin(lambda: SNAPSHOT_TIME)
    _fake_plugin(monkeypatch, "news_window", **plugin.hooks())
    bus = EventBus(load_registry().pm, None, None, lambda: SNAPSHOT_TIME)
    bus.emit(alarm(kind, f"a {kind} event"))
    assert len(plugin.events) == 1
    assert len(plugin.alarms) == (1 if kind in RISK_KINDS else 0)


class Recording:
    """A plugin's alert channel that keeps what it is sent."""

    name = "recording"

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Event | None]] = []

    async def send(self, title, body, event):
        self.sent.append((title, body, event))


async def test_a_raising_plugin_hook_stops_neither_trading_nor_the_others(
        monkeypatch, journal, logged_warnings):
    def broken(**_):
        raise RuntimeError("the plugin's own database is down")

    _fake_plugin(monkeypatch, "broken_store", on_fill=lambda fill: broken(),
                 on_event=lambda event: broken(), on_risk_alarm=lambda alarm: broken())
    plugin = NewsWindowPlugin(lambda: SNAPSHOT_TIME)
    _fake_plugin(monkeypatch, "news_window", **plugin.hooks())
    channel = Recording()
    _fake_plugin(monkeypatch, "recorder", register_alert_channels=lambda register:
                 register(channel))
    registry = load_registry()
    alerter = build_alerter(AlertsConfig(), registry, journal, lambda: SNAPSHOT_TIME)
    bus = EventBus(registry.pm, journal, alerter, lambda: SNAPSHOT_TIME)

    bus.fill(FILL)  # on_fill and on_event raise: two failures
    bus.emit(alarm(EventKind.KILL, "kill switch engaged from the CLI", Severity.CRITICAL))
    await alerter.drain()

    assert bus.hook_failures == {"broken_store": 4}
    assert [m for m in logged_warnings if m.startswith("plugin broken_store")] == [
        f"plugin broken_store: {hook} raised RuntimeError: the plugin's own database is "
        f"down (failure {n} of this plugin; trading goes on)"
        for n, hook in enumerate(("on_fill", "on_event", "on_risk_alarm", "on_event"), 1)]
    # The other plugin, the journal and the alerts saw everything.
    assert len(plugin.fills) == 1 and len(plugin.events) == 2 and len(plugin.alarms) == 1
    assert [e["detail"]["kind"] for e in journal.events() if e["kind"] == "event"] == [
        "fill", "kill"]
    assert [title for title, _, _ in channel.sent] == [
        "perpcarry: Fill · binance · BTC/USDT:USDT",
        "perpcarry: CRITICAL Kill switch · binance · BTC/USDT:USDT"]


def test_an_event_is_one_line_of_plain_json_values():
    with pytest.raises(ValueError, match="one line"):
        Event(EventKind.BREAKER, Severity.CRITICAL, "tripped\nflattening", SNAPSHOT_TIME)
    with pytest.raises(TypeError):
        Event(EventKind.FILL, Severity.INFO, "fill", SNAPSHOT_TIME,
              data={"price": BTC_MARK})  # a Decimal travels as a string
    with pytest.raises(ValueError, match="timezone"):
        Event(EventKind.FILL, Severity.INFO, "fill", datetime(2025, 9, 9))
