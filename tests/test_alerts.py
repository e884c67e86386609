"""Alerts through apprise against a local target: a JSON webhook this test serves on
127.0.0.1 (apprise's ``json://`` scheme), reached through the real apprise and requests
stack. Titles and bodies, rate limits, failing channels, secrets, plugin channels."""

from __future__ import annotations

import itertools
import json
import socket
from collections import Counter
from datetime import timedelta

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from test_events import FILL, PAYMENT, Recording, alarm
from test_plugins import _fake_plugin
from venue_server import LOCAL_ONLY

from perpcarry.alerts.alerter import SUMMARY_FLAG, build_alerter
from perpcarry.alerts.channels import redacted_url, strip_url_parts
from perpcarry.alerts.format import LABELS, daily_summary
from perpcarry.alerts.limits import RateLimiter
from perpcarry.config.settings import AlertsConfig
from perpcarry.domain.errors import ConfigError, PluginError
from perpcarry.events import Event, EventBus, EventKind, Severity
from perpcarry.execution.journal import Journal
from perpcarry.plugins.manager import load_registry

pytestmark = pytest.mark.block_network(**LOCAL_ONLY)

START = FILL.created_at  # the Binance snapshot's instant


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self):
        return self.now


class Webhook:
    """A JSON webhook on 127.0.0.1: keeps what apprise posts; answers ``status``."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.status = 200
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        return web.json_response({}, status=self.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def url(self, path: str = "alerts") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    async def stop(self) -> None:
        await self._runner.cleanup()


@pytest.fixture
async def webhook():
    server = Webhook()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def journal(tmp_path):
    with Journal.open(tmp_path / "journal.sqlite", trading=True, clock=lambda: START) as j:
        yield j


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed on leaving: a connection is refused


def bus_for(urls, journal, clock, **alerts):
    config = AlertsConfig(urls=[SecretStr(u) for u in urls], **alerts)
    registry = load_registry()
    alerter = build_alerter(config, registry, journal, clock)
    return EventBus(registry.pm, journal, alerter, clock), alerter


def alerts_in(journal) -> list[dict]:
    return [e["detail"] for e in journal.events() if e["kind"] == "alert"]


LEDGER_ROWS = [  # the shape the ledger's per-venue pnl returns; figures from the events
    {"venue": "binance", "funding": "-0.04618913", "fees": "-0.11201510", "net": "-0.15820423",
     "realised_apr": None},
    {"venue": "okx", "funding": None, "fees": "0", "net": "0", "realised_apr": None},
]


async def test_each_alerting_kind_arrives_with_its_title_and_body(webhook, journal):
    clock = Clock()
    bus, alerter = bus_for([webhook.url()], journal, clock)
    bus.fill(FILL)
    bus.fill(FILL, unwind=True)
    bus.funding_payment(PAYMENT)  # not an alerting kind by default: the daily summary has it
    for kind, message, severity in (
            (EventKind.NAKED_LEG, "spot leg 0.002 BTC without its hedge", Severity.CRITICAL),
            (EventKind.MARGIN_ALARM, "margin ratio 81 % above the 80 % ceiling",
             Severity.WARNING),
            (EventKind.BREAKER, "breaker tripped: 3 order errors in 5 minutes",
             Severity.CRITICAL),
            (EventKind.KILL, "kill switch engaged from the CLI", Severity.CRITICAL),
            (EventKind.VENUE_DOWN, "binance has not answered for 6 minutes",
             Severity.WARNING)):
        bus.emit(alarm(kind, message, severity))
    bus.emit(daily_summary(LEDGER_ROWS, START))
    await alerter.drain()

    titles = [payload["title"] for payload in webhook.received]
    assert titles == [
        "perpcarry: Fill · binance · BTC/USDT:USDT",
        "perpcarry: Unwind · binance · BTC/USDT:USDT",
        "perpcarry: CRITICAL Naked leg · binance · BTC/USDT:USDT",
        "perpcarry: Margin alarm · binance · BTC/USDT:USDT",
        "perpcarry: CRITICAL Circuit breaker tripped · binance · BTC/USDT:USDT",
        "perpcarry: CRITICAL Kill switch · binance · BTC/USDT:USDT",
        "perpcarry: Venue down · binance · BTC/USDT:USDT",
        "perpcarry: Daily summary",
    ]  # in the order they happened
    bodies = {p["title"].split(": ", 1)[1]: p["message"] for p in webhook.received}
    fill_body = bodies["Fill · binance · BTC/USDT:USDT"].splitlines()
    assert fill_body[0].startswith("fill: sell 0.002 BTC/USDT:USDT at 112015.09961957")
    assert "quantity: 0.002" in fill_body and fill_body[-1] == "at 2025-09-09 00:00:00 UTC"
    assert "fees: 0.112015099619570 USDT" in fill_body
    assert bodies["Margin alarm · binance · BTC/USDT:USDT"].splitlines()[:3] == [
        "margin ratio 81 % above the 80 % ceiling", "", "margin_ratio: 0.81"]
    assert bodies["Daily summary"].splitlines()[:4] == [
        "daily summary: net -0.16 on 1 venue (funding -0.05, fees -0.11)", "",
        "binance: funding -0.05, fees -0.11, net -0.16, realised APR n/a",
        "okx: not summed, the ledger gave no funding"]
    assert {p["type"] for p in webhook.received} == {"info", "warning", "failure"}
    sent = alerts_in(journal)
    assert [a["status"] for a in sent] == ["sent"] * 8
    assert all(a["delivered"] == ["json://…"] and a["failed"] == [] for a in sent)
    # A delivered summary is not sent again the same day, after a restart too.
    assert journal.flag(SUMMARY_FLAG) == "2025-09-09"
    assert not alerter.summary_due(START.replace(hour=23))
    assert alerter.summary_due(START + timedelta(days=1, hours=8))
    assert not alerter.summary_due(START + timedelta(days=1, hours=7))


async def test_a_burst_of_500_margin_alarms_sends_the_limit_and_one_suppressed_notice(
        webhook, journal):
    clock = Clock()
    bus, alerter = bus_for([webhook.url()], journal, clock, per_kind_limit=5,
                           max_per_window=20, window_minutes=10)
    for n in range(500):
        clock.now = START + timedelta(milliseconds=n)
        bus.emit(alarm(EventKind.MARGIN_ALARM, f"margin ratio alarm {n}"))
    bus.emit(alarm(EventKind.KILL, "kill switch engaged", Severity.CRITICAL))
    await alerter.drain()
    assert len(webhook.received) == 6  # five alarms and the kill: its own kind's budget
    clock.now = START + timedelta(minutes=10)
    alerter.tick()  # the loop's next cycle: the window is over
    await alerter.drain()
    assert len(webhook.received) == 7
    notice = webhook.received[-1]
    assert notice["title"] == "perpcarry: 495 more alerts suppressed"
    assert notice["message"].startswith(
        "495 more alerts were not sent in the 10 minutes from 2025-09-09 00:00:00 UTC "
        "(rate limit of [alerts]): 495 margin_alarm.")
    assert [a["status"] for a in alerts_in(journal)].count("suppressed") == 1
    assert next(a for a in alerts_in(journal) if a["status"] == "suppressed")[
        "suppressed"] == {"margin_alarm": 495}
    # Every event is journalled, sent or not.
    assert sum(e["kind"] == "event" for e in journal.events(limit=10_000)) == 501
    alerter.tick()
    await alerter.aclose()
    assert len(webhook.received) == 7  # nothing more to report


async def test_what_a_window_held_back_is_reported_on_stop(webhook, journal):
    clock = Clock()
    bus, alerter = bus_for([webhook.url()], journal, clock, per_kind_limit=1)
    bus.fill(FILL)
    bus.fill(FILL)
    await alerter.aclose()
    assert [p["title"] for p in webhook.received] == [
        "perpcarry: Fill · binance · BTC/USDT:USDT", "perpcarry: 1 more alert suppressed"]


# Events of a few kinds and severities at increasing times, as the limiter sees them.
EVENTS = st.lists(st.tuples(st.sampled_from([EventKind.FILL, EventKind.MARGIN_ALARM,
                                             EventKind.KILL]),
                            st.sampled_from(list(Severity)),
                            st.integers(min_value=0, max_value=400)), max_size=300)


@settings(max_examples=200, deadline=None)
@given(EVENTS, st.integers(1, 6), st.integers(1, 12))
def test_the_rate_limits_hold_in_every_window(events, per_kind, total):
    limiter = RateLimiter(per_kind, total, timedelta(minutes=10))
    now = START
    windows, admitted, uncritical_sent = [], Counter(), []
    for kind, severity, step_seconds in events:
        now += timedelta(seconds=step_seconds)
        if (closed := limiter.close_if_over(now)) is not None:
            windows.append(closed)
        sent = limiter.admit(Event(kind, severity, "x", now), now)
        admitted[sent] += 1
        if sent and severity is not Severity.CRITICAL:
            uncritical_sent.append(now)
    if limiter.current is not None:
        windows.append(limiter.current)
    for window in windows:
        assert all(n <= per_kind for n in window.sent.values())
        assert window.end - window.start == timedelta(minutes=10)
        assert sum(window.start <= t < window.end for t in uncritical_sent) <= total
    assert sum(sum(w.sent.values()) for w in windows) == admitted[True]
    assert sum(sum(w.suppressed.values()) for w in windows) == admitted[False]
    assert all(a.end <= b.start for a, b in itertools.pairwise(windows))


def test_critical_alerts_pass_the_overall_cap_but_not_their_kind_limit():
    limiter = RateLimiter(per_kind=2, total=2, window=timedelta(minutes=10))
    fill = Event(EventKind.FILL, Severity.INFO, "fill", START)
    kill = Event(EventKind.KILL, Severity.CRITICAL, "kill", START)
    assert [limiter.admit(fill, START) for _ in range(3)] == [True, True, False]
    assert [limiter.admit(kill, START) for _ in range(3)] == [True, True, False]
    assert limiter.current.suppressed == {"fill": 1, "kill": 1}


async def test_a_failing_channel_never_raises_and_is_logged_once_per_window(
        webhook, journal, logged_warnings):
    webhook.status = 500
    clock = Clock()
    refused = f"json://127.0.0.1:{closed_port()}/alerts"
    bus, alerter = bus_for([webhook.url(), refused], journal, clock)
    for _ in range(3):
        bus.fill(FILL)  # returns at once; nothing raises into the caller
    await alerter.drain()
    assert len(webhook.received) == 3
    # Both channels are sent to at once: whichever fails first is logged first.
    assert sorted(logged_warnings) == [
        "alert channel json://… (#2): not delivered: A Connection error occurred sending JSON "
        "notification to …. (further failures of this channel are not logged until the "
        "rate-limit window ends)",
        "alert channel json://…: not delivered: Failed to send JSON POST notification: "
        "Internal server error., error=500. (further failures of this channel are not logged "
        "until the rate-limit window ends)",
    ]
    assert [a["status"] for a in alerts_in(journal)] == ["failed"] * 3
    # The next window logs a failure again.
    clock.now = START + timedelta(minutes=10)
    bus.fill(FILL)
    await alerter.drain()
    assert len(logged_warnings) == 4


async def test_a_secret_url_appears_in_no_log_event_or_error(webhook, journal, capfd):
    from loguru import logger

    secret = "s3cretT0ken9"
    logged: list[str] = []
    sink = logger.add(lambda m: logged.append(str(m)), level="DEBUG")
    logger.enable("perpcarry")
    try:
        webhook.status = 500
        urls = [f"json://alerter:{secret}@127.0.0.1:{webhook.port}/hook/{secret}?x={secret}",
                f"json://127.0.0.1:{closed_port()}/{secret}"]
        bus, alerter = bus_for(urls, journal, Clock())
        bus.emit(alarm(EventKind.BREAKER, "breaker tripped", Severity.CRITICAL))
        await alerter.aclose()
        with pytest.raises(ConfigError) as refused:
            bus_for([f"nosuchservice://{secret}@example"], journal, Clock())
    finally:
        logger.disable("perpcarry")
        logger.remove(sink)
    assert str(refused.value) == (
        "[alerts] urls #1 (nosuchservice://…): apprise does not accept this URL (unknown "
        "service or malformed); see docs/alerts.md")
    assert sum("not delivered" in line for line in logged) == 2
    captured = capfd.readouterr()
    journal_text = json.dumps(journal.events(limit=10_000))
    assert webhook.received, "the alert reached the webhook, which answered 500"
    for text in (*logged, captured.out, captured.err, journal_text, repr(bus.alerter.channels),
                 repr(AlertsConfig(urls=urls))):
        assert secret not in text


def test_config_show_redacts_alert_urls(run_cli, write_config):
    secret = "s3cretT0ken9"
    path = write_config(f'[alerts]\nurls = ["tgram://123456789:{secret}/-100123"]\n')
    result = run_cli("--config", str(path), "config", "show")
    assert result.exit_code == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    assert '"**********"' in result.stdout


async def test_a_plugin_channel_receives_the_alerts(webhook, journal, monkeypatch):
    channel = Recording()

    class Broken:
        name = "broken-pager"

        async def send(self, title, body, event):
            raise ConnectionError("pager service unreachable")

    def register_alert_channels(register):
        register(channel)
        register(Broken())

    _fake_plugin(monkeypatch, "pager", register_alert_channels=register_alert_channels)
    clock = Clock()
    bus, alerter = bus_for([webhook.url()], journal, clock)
    margin = alarm(EventKind.MARGIN_ALARM, "margin ratio 81 % above the 80 % ceiling")
    bus.emit(margin)
    await alerter.drain()
    assert [(title, event) for title, _, event in channel.sent] == [
        ("perpcarry: Margin alarm · binance · BTC/USDT:USDT", margin)]
    assert channel.sent[0][1] == webhook.received[0]["message"]
    assert alerts_in(journal)[0]["delivered"] == ["json://…", "recording"]
    assert alerts_in(journal)[0]["failed"] == ["broken-pager"]


def test_two_plugins_registering_one_channel_name_are_refused(monkeypatch):
    def register_alert_channels(register):
        register(Recording())

    _fake_plugin(monkeypatch, "pager_a", register_alert_channels=register_alert_channels)
    _fake_plugin(monkeypatch, "pager_b", register_alert_channels=register_alert_channels)
    with pytest.raises(PluginError, match="alert channel 'recording' is registered by both "
                                          "plugin pager_a and plugin pager_b"):
        load_registry()


def test_a_plugin_registering_something_else_as_a_channel_is_refused(monkeypatch):
    def register_alert_channels(register):
        register("tgram://123456789:token/-100123")

    _fake_plugin(monkeypatch, "pager_c", register_alert_channels=register_alert_channels)
    with pytest.raises(PluginError, match="plugin pager_c registered str, which is not an "
                                          "alert channel"):
        load_registry()


def test_alerts_config_is_checked(write_config, run_cli):
    path = write_config('[alerts]\nkinds = ["fill", "margin_call"]\n')
    result = run_cli("--config", str(path), "plugins")
    assert result.exit_code == 2
    assert f"{path}: alerts.kinds.1: Input should be 'fill', 'unwind'" in result.stderr


TOKENS = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126,
                                        exclude_characters="/?#@:&=%[]"),
                 min_size=6, max_size=40)


@settings(max_examples=200, deadline=None)
@given(TOKENS, TOKENS)
def test_what_apprise_says_about_a_url_keeps_none_of_its_parts(bot_token, chat):
    # Apprise's URLs carry tokens where hosts and paths would be: tgram://{token}/{chat}.
    url = f"tgram://{bot_token}/{chat}/?format=markdown"
    said = (f"Failed to send Telegram notification to {chat} via {bot_token}: "
            f"https://api.telegram.org/bot{bot_token}/sendMessage said 401")
    stripped = strip_url_parts(said, url)
    assert bot_token not in stripped and chat not in stripped
    assert redacted_url(url) == "tgram://…"


def test_every_event_kind_has_an_alert_title():
    # A kind added without one would fail in alert_text, on the trading loop.
    assert set(LABELS) == set(EventKind)
