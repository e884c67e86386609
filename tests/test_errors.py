"""ccxt's errors as perpcarry's: the table over ccxt's whole hierarchy, the causes a user is
told (DNS, refused, TLS, timeout, bad body), and what a state-changing request may never do
(be retried, or fail as anything but "outcome unknown" once it may have reached the venue)."""

from __future__ import annotations

import inspect
import json
import socket
from pathlib import Path

import ccxt
import pytest
from ccxt.base import errors as ccxt_errors
from venue_server import LOCAL_ONLY, Answer, VenueServer

from perpcarry.ccxt.errors import CCXT_ERRORS, translate_ccxt_error
from perpcarry.config.loader import load_config
from perpcarry.domain import errors
from perpcarry.venues.protocol import VenueContext

ROOT = Path(__file__).parents[1]
CCXT_CLASSES = [cls for _, cls in inspect.getmembers(ccxt_errors, inspect.isclass)
                if issubclass(cls, ccxt.BaseError) and cls.__module__ == ccxt_errors.__name__]
# The state-changing outcome a user must query the venue about.
MAYBE_SENT = (errors.NetworkError, errors.ExchangeUnavailable, errors.InvalidResponse)
# Binance's own text for -1007 (developers.binance.com, "Error Codes", read 2026-12).
BINANCE_1007 = {"code": -1007, "msg": "Timeout waiting for response from backend server. "
                                      "Send status unknown; execution status unknown."}


def test_the_table_names_every_ccxt_exception_class():
    assert {cls.__name__ for cls in CCXT_CLASSES} == set(CCXT_ERRORS)
    assert len(CCXT_CLASSES) >= 40  # ccxt 4.5's hierarchy, not an empty module


@pytest.mark.parametrize("cls", CCXT_CLASSES, ids=lambda c: c.__name__)
def test_every_ccxt_exception_maps_as_the_table_says(cls):
    error_type, phrase = CCXT_ERRORS[cls.__name__]
    translated = translate_ccxt_error("binance", cls("binance something went wrong"), None)
    assert type(translated) is error_type
    assert str(translated) == f"binance: {phrase}: binance something went wrong"


@pytest.mark.parametrize(("cls", "expected"), [
    (ccxt.InvalidNonce, errors.ClockSkew),
    (ccxt.InsufficientFunds, errors.InsufficientFunds),
    (ccxt.InvalidOrder, errors.InvalidOrder),
    (ccxt.OrderNotFound, errors.OrderNotFound),
    (ccxt.DuplicateOrderId, errors.DuplicateClientOrderId),
    (ccxt.OrderImmediatelyFillable, errors.InvalidOrder),
    (ccxt.RequestTimeout, errors.RequestTimedOut),
    (ccxt.ExchangeNotAvailable, errors.ExchangeUnavailable),
    (ccxt.OnMaintenance, errors.ExchangeUnavailable),
    (ccxt.BadResponse, errors.InvalidResponse),
    (ccxt.NullResponse, errors.InvalidResponse),
    (ccxt.DDoSProtection, errors.RateLimitError),
    (ccxt.RateLimitExceeded, errors.RateLimitError),
    (ccxt.PermissionDenied, errors.AuthenticationError),
    (ccxt.AccountNotEnabled, errors.AuthenticationError),
    (ccxt.BadSymbol, errors.BadSymbol),
])
def test_the_classes_the_order_path_relies_on(cls, expected):
    assert type(translate_ccxt_error("okx", cls("okx x"), None)) is expected


@pytest.mark.parametrize("cls", CCXT_CLASSES, ids=lambda c: c.__name__)
def test_a_state_changing_request_that_may_have_reached_the_venue_is_outcome_unknown(cls):
    idempotent = translate_ccxt_error("bybit", cls("bybit x"), None)
    state_changing = translate_ccxt_error("bybit", cls("bybit x"), None, idempotent=False)
    refused_first = issubclass(cls, ccxt.DDoSProtection | ccxt.InvalidNonce)
    if isinstance(idempotent, MAYBE_SENT) and not refused_first:
        assert type(state_changing) is errors.OutcomeUnknown
        assert "query the venue before sending again" in str(state_changing)
    else:
        assert type(state_changing) is type(idempotent)


@pytest.mark.parametrize("url", ["https://api.binance.com/api/v3/order",
                                 "https://fapi.binance.com/fapi/v1/order"])
def test_binance_1007_is_outcome_unknown_whichever_class_ccxt_picks(url):
    """ccxt 4.5 maps -1007 to RequestTimeout for spot and to ExchangeError for USDⓈ-M."""
    body = json.dumps(BINANCE_1007)
    with pytest.raises(ccxt.BaseError) as raised:
        ccxt.binance().handle_errors(200, "OK", url, "POST", {}, body, BINANCE_1007, {}, None)
    state_changing = translate_ccxt_error("binance", raised.value, None, idempotent=False)
    assert type(state_changing) is errors.OutcomeUnknown
    reading = translate_ccxt_error("binance", raised.value, None)
    assert type(reading) is errors.NetworkError  # a GET: retried
    assert str(reading).startswith("binance: the venue's backend did not answer")


def test_messages_never_carry_a_signed_query_string():
    exc = ccxt.ExchangeNotAvailable(
        "binance GET https://fapi.binance.com/fapi/v1/commissionRate?symbol=BTCUSDT&"
        "timestamp=1764979200000&signature=3f1c9a 503 Service Unavailable <html><body>")
    for idempotent in (True, False):
        text = str(translate_ccxt_error("binance", exc, None, idempotent=idempotent))
        assert "HTTP 503 Service Unavailable from fapi.binance.com/fapi/v1/commissionRate " \
               "(an HTML page)" in text
        assert "signature" not in text and "timestamp=" not in text and "3f1c9a" not in text
    echoed = ccxt.BadRequest('binance {"msg":"bad param timestamp=1764979200000&signature=ab"}')
    text = str(translate_ccxt_error("binance", echoed, None))
    assert "1764979200000" not in text and "=ab" not in text


# -- through the request layer, against a local server -------------------------------------


@pytest.fixture
def server():
    served = VenueServer(ROOT / "plugins" / "binance" / "snapshot" / "snapshot.json")
    served.start()
    yield served
    served.stop()


@pytest.fixture
async def binance(tmp_path):
    """Binance clients at a base URL (test keys on request), without waits between retries;
    closed after the test."""
    spec = load_config(None).registry.venues["binance"]
    made = []

    async def no_wait(seconds: float) -> None:
        pass

    def make(base_url: str, keys: bool = False, timeout_ms: int | None = None):
        credentials = {"api_key": "test-key", "secret": "test-secret"} if keys else {}
        venue = spec.factory(spec.config_model(base_url=base_url, **credentials),
                             VenueContext(cache_dir=tmp_path, sleep=no_wait))
        if timeout_ms is not None:
            venue.exchange.timeout = timeout_ms
        made.append(venue)
        return venue

    yield make
    for venue in made:
        await venue.close()


def _answer(status: int, body: str, content_type: str = "application/json"):
    return lambda host, path, query, recorded: Answer(status, body, content_type)


@pytest.mark.block_network(**LOCAL_ONLY)
@pytest.mark.parametrize(("answer", "message"), [
    (Answer(200, "<html><body>Attention Required! | Cloudflare</body></html>", "text/html"),
     "binance: invalid response: HTML instead of JSON from /fapi/v1/premiumIndex"),
    (Answer(200, ""), "binance: invalid response: empty body instead of JSON from "
     "/fapi/v1/premiumIndex"),
    (Answer(200, '[{"symbol":"BTCUSDT","markPrice":"1'),
     "binance: invalid response: truncated JSON (35 characters) from "
     "/fapi/v1/premiumIndex"),
])
async def test_a_body_that_is_not_json_is_named_with_its_endpoint(server, binance, answer,
                                                                  message):
    server.rule = lambda host, path, query, recorded: answer
    venue = binance(server.url)
    with pytest.raises(errors.InvalidResponse) as raised:
        await venue.request("fapiPublicGetPremiumIndex", budget="fapi")
    assert str(raised.value) == message


@pytest.mark.block_network(**LOCAL_ONLY)
async def test_error_json_with_http_200_is_the_venues_error(server, binance):
    server.rule = _answer(200, json.dumps({"code": -1121, "msg": "Invalid symbol."}))
    venue = binance(server.url)
    with pytest.raises(errors.BadSymbol) as raised:
        await venue.request("fapiPublicGetPremiumIndex", budget="fapi")
    assert str(raised.value) == \
        'binance: bad symbol: binance {"code": -1121, "msg": "Invalid symbol."}'


@pytest.mark.block_network(**LOCAL_ONLY)
async def test_a_read_is_retried_a_state_changing_request_never(server, binance):
    server.rule = _answer(200, json.dumps(BINANCE_1007))
    venue = binance(server.url, keys=True)
    with pytest.raises(errors.NetworkError, match="backend did not answer"):
        await venue.request("fapiPublicGetPremiumIndex", budget="fapi")
    assert server.requests["fapi.binance.com", "/fapi/v1/premiumIndex"] == 4  # 1 + 3 retries

    order = {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.001",
             "newClientOrderId": "pc-test-1"}
    with pytest.raises(errors.OutcomeUnknown) as raised:
        await venue.request("fapiPrivatePostOrder", order, budget="fapi", idempotent=False)
    assert server.requests["fapi.binance.com", "/fapi/v1/order"] == 1
    assert "signature" not in str(raised.value) and "timestamp=" not in str(raised.value)

    server.rule = _answer(400, json.dumps({"code": -2019, "msg": "Margin is insufficient."}))
    with pytest.raises(errors.InsufficientFunds):
        await venue.request("fapiPrivatePostOrder", order, budget="fapi", idempotent=False)
    assert server.requests["fapi.binance.com", "/fapi/v1/order"] == 2


@pytest.mark.block_network(**LOCAL_ONLY)
async def test_an_order_answered_with_html_is_outcome_unknown(server, binance):
    server.rule = lambda host, path, query, recorded: Answer(502, "<html>Bad Gateway</html>",
                                                             "text/html")
    venue = binance(server.url, keys=True)
    with pytest.raises(errors.OutcomeUnknown, match=r"HTTP 502 Bad Gateway from .*/fapi/v1/order"):
        await venue.request("fapiPrivatePostOrder", {"symbol": "BTCUSDT", "side": "BUY",
                                                     "type": "MARKET", "quantity": "0.001"},
                            budget="fapi", idempotent=False)
    server.rule = lambda host, path, query, recorded: Answer(200, "<html>oops</html>",
                                                             "text/html")
    with pytest.raises(errors.OutcomeUnknown, match="HTML instead of JSON from /fapi/v1/order"):
        await venue.request("fapiPrivatePostOrder", {"symbol": "BTCUSDT", "side": "BUY",
                                                     "type": "MARKET", "quantity": "0.001"},
                            budget="fapi", idempotent=False)
    assert server.requests["fapi.binance.com", "/fapi/v1/order"] == 2


@pytest.mark.block_network(**LOCAL_ONLY)
async def test_an_order_that_times_out_is_outcome_unknown_and_sent_once(server, binance):
    server.rule = lambda host, path, query, recorded: Answer(200, "", hang=True)
    venue = binance(server.url, keys=True, timeout_ms=300)
    with pytest.raises(errors.OutcomeUnknown, match=r"\(request timed out: POST 127\.0\.0\.1"):
        await venue.request("fapiPrivatePostOrder", {"symbol": "BTCUSDT", "side": "BUY",
                                                     "type": "MARKET", "quantity": "0.001"},
                            budget="fapi", idempotent=False)
    assert server.requests["fapi.binance.com", "/fapi/v1/order"] == 1
    with pytest.raises(errors.RequestTimedOut, match=r"^binance: request timed out: GET "):
        await venue.request("fapiPublicGetPremiumIndex", budget="fapi")
    # A read that timed out is retried once: a hung endpoint costs two timeouts, not four.
    assert server.requests["fapi.binance.com", "/fapi/v1/premiumIndex"] == 2


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.block_network(**LOCAL_ONLY)
async def test_each_transport_failure_is_named(server, binance):
    port = _closed_port()
    cases = [
        # RFC 6761: .invalid never resolves.
        ("http://perpcarry-test.invalid", "DNS lookup failed for perpcarry-test.invalid"),
        (f"http://127.0.0.1:{port}", f"connection refused by 127.0.0.1:{port}"),
        # TLS spoken to a plain-HTTP server.
        (server.url.replace("http://", "https://"), "TLS handshake with 127.0.0.1 failed"),
    ]
    for base_url, cause in cases:
        venue = binance(base_url)
        with pytest.raises(errors.NetworkError) as raised:
            await venue.request("fapiPublicGetPremiumIndex", budget="fapi")
            assert str(raised.value).startswith(f"binance: {cause}: GET "), base_url
        assert "unavailable or in maintenance" not in str(raised.value)
