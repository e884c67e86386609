"""The streaming capability as declared and read: what each first-party venue streams
(checked against what ccxt.pro offers), the venues' limits kept, websocket URLs rebased,
the ``[streams]`` settings validated, and the plugins' push parsers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perpcarry.ccxt.transport import rebase
from perpcarry.domain.parsing import MalformedField
from perpcarry.domain.types import MarketKind
from perpcarry.plugins.manager import load_registry
from perpcarry.streams.limits import HOUR, ConnectionBudget, chunks
from perpcarry.venues.streams import StreamKind, StreamLimits

NOW = datetime(2026, 12, 6, tzinfo=UTC)


@pytest.fixture(scope="module")
def specs():
    registry = load_registry()
    return {v: registry.venues[v] for v in ("binance", "bybit", "okx")}


def test_every_declared_feed_is_a_watch_method_ccxt_pro_offers(specs):
    import ccxt.pro

    for venue, spec in specs.items():
        exchange = getattr(ccxt.pro, venue)()
        for feed in spec.streams.feeds:
            assert exchange.has.get(feed.method), f"{venue}: {feed.method}"
            assert callable(getattr(exchange, _snake(feed.method)))


def test_what_each_venue_streams_and_what_rest_polling_fills_in(specs):
    binance, bybit, okx = (specs[v].streams for v in ("binance", "bybit", "okx"))
    # Binance has no watchFundingRates: its mark-price stream carries the funding rate.
    assert binance.feed_of(StreamKind.FUNDING).method == "watchMarkPrices"
    assert bybit.feed_of(StreamKind.FUNDING).method == "watchTickers"
    assert okx.feed_of(StreamKind.FUNDING).method == "watchFundingRates"
    for capabilities in (binance, bybit, okx):
        for kind in (StreamKind.MARK, StreamKind.FUNDING, StreamKind.SPOT_BOOK,
                     StreamKind.PERP_BOOK):
            assert capabilities.mode(kind) == "stream"
        # Account feeds (with credentials), per venue and for every symbol.
        for kind in (StreamKind.ORDERS, StreamKind.POSITIONS):
            assert capabilities.mode(kind) == "stream"
            assert capabilities.feed_of(kind).market is None
    # Binance's ACCOUNT_UPDATE has no free balance: its balances are polled.
    assert binance.mode(StreamKind.BALANCES) == "rest polling"
    assert bybit.mode(StreamKind.BALANCES) == okx.mode(StreamKind.BALANCES) == "stream"


@given(st.lists(st.text(min_size=1, max_size=12), max_size=300, unique=True),
       st.integers(1, 50))
def test_no_connection_carries_more_subscriptions_than_the_venue_allows(symbols, size):
    parts = chunks(symbols, size)
    assert all(1 <= len(part) <= size for part in parts)
    assert [s for part in parts for s in part] == symbols


@given(st.integers(1, 5), st.floats(1, 600), st.integers(1, 40), st.integers(1, 30),
       st.one_of(st.none(), st.integers(30, 200)))
async def test_connections_and_subscriptions_stay_within_the_published_limits(
        per_window, window, dials, subscriptions, per_hour):
    clock = [0.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    limits = StreamLimits(subscriptions_per_connection=subscriptions,
                          connections_per_window=per_window,
                          connection_window_seconds=window, subscriptions_per_hour=per_hour)
    budget = ConnectionBudget(limits, lambda: clock[0], sleep)
    opened = []
    for _ in range(dials):
        await budget.acquire(subscriptions)
        opened.append(clock[0])
    for t in opened:
        assert sum(t <= u < t + window for u in opened) <= per_window
        if per_hour is not None and subscriptions <= per_hour:
            assert sum(t <= u < t + HOUR for u in opened) * subscriptions <= per_hour


def test_websocket_urls_are_rebased_with_the_rest_ones():
    urls = {"rest": "https://fapi.binance.com/fapi", "ws": {
        "linear": "wss://fstream.binance.com/ws",
        "public": "wss://stream.{hostname}/v5/public/linear"}}
    assert rebase(urls, "http://127.0.0.1:8080/") == {
        "rest": "http://127.0.0.1:8080/fapi.binance.com/fapi", "ws": {
            "linear": "ws://127.0.0.1:8080/fstream.binance.com/ws",
            "public": "ws://127.0.0.1:8080/stream.{hostname}/v5/public/linear"}}
    assert rebase("wss://ws.okx.com:443/ws/v5", "https://relay.example") == \
        "wss://relay.example/ws.okx.com:443/ws/v5"


def test_a_bad_streams_setting_is_a_config_error(run_cli, write_config):
    path = write_config("[streams]\nstale_after_seconds = {mark = 0}\n")
    result = run_cli("--config", str(path), "config", "show")
    assert result.exit_code == 2
    assert "stale_after_seconds must be > 0 (got mark)" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_streams_settings_name_a_stale_limit_per_kind(write_config):
    from perpcarry.config.loader import load_config

    path = write_config("[streams]\nstale_after_seconds = {mark = 5}\n")
    streams = load_config(path).settings.streams
    assert streams.stale_after("mark") == 5
    assert streams.stale_after("spot_book") == 30  # the default


def test_a_push_missing_a_documented_field_is_malformed_never_a_zero():
    from perpcarry_binance.streams import parse_mark_price
    from perpcarry_okx.streams import parse_funding_rate

    push = {"e": "markPriceUpdate", "E": 1757376000000, "s": "BTCUSDT", "r": "0.00003799",
            "T": 1757404800000}
    with pytest.raises(MalformedField, match="field p is missing"):
        parse_mark_price({"symbol": "BTC/USDT:USDT", "info": push}, MarketKind.PERP, NOW)
    okx = {"instId": "BTC-USDT-SWAP", "fundingRate": "", "fundingTime": "1761609600000",
           "ts": "1761583450140"}
    with pytest.raises(MalformedField, match="fundingRate"):
        parse_funding_rate({"symbol": "BTC/USDT:USDT", "info": okx}, MarketKind.PERP, NOW)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


@pytest.mark.parametrize(("venue", "ws_host"), [("binance", "fstream.binancefuture.com"),
                                                ("bybit", "stream-demo.bybit.com"),
                                                ("okx", "wspap.okx.com")])
async def test_the_streams_trade_where_the_rest_client_does(specs, venue, ws_host, tmp_path):
    """``sandbox = true``: Binance's and Bybit's REST clients trade on demo trading (their
    plugins' reading), OKX's on its demo (simulated) environment; the ccxt.pro client
    follows each, so an account stream never logs in to the real account while orders go
    to the sandbox."""
    from perpcarry.streams.client import pro_exchange
    from perpcarry.venues.protocol import VenueContext

    spec = specs[venue]
    client = spec.factory(spec.config_model(enabled=True, sandbox=True),
                          VenueContext(cache_dir=tmp_path, offline=True))
    try:
        exchange = pro_exchange(client)  # no markets loaded: none handed over
    finally:
        await client.close()
    assert ws_host in repr(exchange.urls["api"]["ws"])
    assert exchange.options.get("enableDemoTrading") == \
        client.exchange.options.get("enableDemoTrading")
