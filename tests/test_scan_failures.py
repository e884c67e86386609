"""What a scan shows when venues misbehave: each venue served by a local server through
``[venues.<id>] base_url`` from its bundled real snapshot, one of them broken on purpose."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from venue_server import LOCAL_ONLY, Answer, VenueServer

ROOT = Path(__file__).parents[1]
VENUES = ("binance", "bybit", "okx")
HTML = Answer(200, "<!DOCTYPE html><html><body>Access Denied</body></html>", "text/html")

pytestmark = pytest.mark.block_network(**LOCAL_ONLY)


@pytest.fixture(scope="module")
def server():
    served = VenueServer(*(ROOT / "plugins" / v / "snapshot" / "snapshot.json" for v in VENUES))
    served.start()
    yield served
    served.stop()


@pytest.fixture
def scan(server, run_cli, write_config, tmp_path):
    """Run ``perpcarry scan --json`` against the server (a fresh cache each time); the exit
    code, the parsed JSON and stderr. ``rule`` breaks what the server answers."""
    runs = iter(range(100))

    def run(*args: str, rule=None, deadline: float = 30, base_url: str | None = None,
            venue_extra: str = ""):
        server.rule = rule
        sections = "".join(
            f'[venues.{v}]\nenabled = true\nbase_url = "{base_url or server.url}"\n'
            f"{venue_extra if v == 'binance' else ''}" for v in VENUES)
        path = write_config(f'cache_dir = "{tmp_path / f"cache-{next(runs)}"}"\n'
                            f"[scan]\ndeadline_seconds = {deadline}\n{sections}")
        result = run_cli("--config", str(path), "scan", *args)
        server.rule = None
        return result

    return run


def _rows(output: dict) -> dict[str, set[str]]:
    rows: dict[str, set[str]] = {v: set() for v in VENUES}
    for row in output["rows"] + output["reverse_rows"]:
        rows[row["venue"]].add(row["perp_symbol"])
    return rows


def _json(result) -> dict:
    assert result.exit_code in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def test_a_venue_whose_every_history_request_failed_is_a_failed_venue(scan, server):
    def html_history(host, path, query, recorded):
        return HTML if path == "/fapi/v1/fundingRate" else None

    server.requests.clear()
    alone = scan("--venues", "binance", "--json", rule=html_history)
    assert alone.exit_code == 1
    # Each of the 79 symbols asked once (paced by the weight budget), none retried blind.
    assert server.requests["fapi.binance.com", "/fapi/v1/fundingRate"] <= 79 * 2
    assert _json(alone)["failures"] == {"binance": "no funding history for any symbol: invalid "
                                                   "response: HTML instead of JSON from "
                                                   "/fapi/v1/fundingRate"}
    table = scan(rule=html_history)
    assert table.exit_code == 0
    assert "binance failed: no funding history for any symbol: invalid response: HTML " \
           "instead of JSON from /fapi/v1/fundingRate" in table.stdout
    assert table.stdout.count("binance failed") == 1 and "WARNING" not in table.stderr
    assert "│ bybit" in table.stdout and "│ okx" in table.stdout


def test_a_symbol_whose_history_failed_is_skipped_once(scan):
    healthy = _rows(_json(scan("--json")))
    failing = {"BTCUSDT", "ETHUSDT", "KAVAUSDT"}

    def some_history_broken(host, path, query, recorded):
        if path == "/fapi/v1/fundingRate" and query.get("symbol") in failing:
            return Answer(200, json.dumps({"code": -1121, "msg": "Invalid symbol."}))
        return None

    output = _json(scan("--json", rule=some_history_broken))
    skipped = [s for s in output["skipped"] if s["venue"] == "binance"
               and s["reason"].startswith("no funding history")]
    assert sorted(s["symbol"] for s in skipped) == ["BTC/USDT:USDT", "ETH/USDT:USDT",
                                                     "KAVA/USDT:USDT"]
    assert skipped[0]["reason"] == ("no funding history: bad symbol: binance "
                                    '{"code": -1121, "msg": "Invalid symbol."}')
    symbols = [(s["venue"], s["symbol"]) for s in output["skipped"]]
    assert len(symbols) == len(set(symbols))  # no symbol counted twice
    rows = _rows(output)
    assert rows["binance"] == healthy["binance"] - {f"{s[:-4]}/USDT:USDT" for s in failing}
    assert rows["bybit"] == healthy["bybit"] and rows["okx"] == healthy["okx"]


@pytest.mark.parametrize(("path", "stage"), [
    ("/fapi/v1/fundingRate", "history 0/79"),
    ("/fapi/v1/exchangeInfo", "loading markets"),
])
def test_a_hung_endpoint_fails_its_venue_at_the_deadline_and_the_rest_is_shown(scan, path,
                                                                               stage):
    def hang(host, path_asked, query, recorded):
        return Answer(200, "", hang=True) if path_asked == path else None

    result = scan(rule=hang, deadline=2)
    assert result.exit_code == 0
    assert f"binance failed: no answer within 2 s (while {stage})" in result.stdout
    assert "│ bybit" in result.stdout and "│ okx" in result.stdout
    assert "WARNING" not in result.stderr and "retrying" not in result.stderr


def test_the_funding_and_book_requests_leave_while_the_markets_load(scan, server):
    """Binance's markets never answer, yet its funding, book and volume requests were all
    sent: each waits for the markets only to read its answer, so a cold scan's requests
    take two round trips (markets with funding and books, then history), not three."""
    markets = ("/api/v3/exchangeInfo", "/fapi/v1/exchangeInfo")

    def hang(host, path, query, recorded):
        return Answer(200, "", hang=True) if path in markets else None

    server.requests.clear()
    result = scan(rule=hang, deadline=2)
    assert "binance failed: no answer within 2 s (while loading markets)" in result.stdout
    asked = {path for host, path in server.requests if "binance" in host}
    assert asked == {*markets, "/fapi/v1/premiumIndex", "/fapi/v1/fundingInfo",
                     "/api/v3/ticker/bookTicker", "/fapi/v1/ticker/bookTicker",
                     "/api/v3/ticker/24hr", "/fapi/v1/ticker/24hr"}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_without_a_network_each_venue_says_why_once(scan):
    port = _closed_port()
    refused = scan(base_url=f"http://127.0.0.1:{port}")
    assert refused.exit_code == 1
    for venue in VENUES:
        assert refused.stdout.count(f"{venue} failed:") == 1
        assert f"{venue} failed: connection refused by 127.0.0.1:{port}: GET " in refused.stdout
    assert "maintenance" not in refused.stdout and "WARNING" not in refused.stderr


def test_a_failing_account_fee_endpoint_falls_back_to_the_published_schedule(scan):
    """With keys, the account's rates come from /sapi/v1/asset/tradeFee, which fails here
    (HTTP 503): the scan uses the regular tier and says why."""
    def fees_down(host, path, query, recorded):
        return Answer(503, "<html>Service Unavailable</html>", "text/html") \
            if path == "/sapi/v1/asset/tradeFee" else None

    output = _json(scan("--json", rule=fees_down,
                        venue_extra='api_key = "test-key"\nsecret = "test-secret"\n'))
    assert "binance" not in output["failures"]
    note = next(n for n in output["notes"] if "account fee" in n)
    assert note.startswith("binance: account fee rates unavailable (exchange unavailable or "
                           "in maintenance: HTTP 503 Service Unavailable from ")
    assert "/sapi/v1/asset/tradeFee (an HTML page)); using default: regular tier VIP0" in note
    assert "signature" not in note and "timestamp=" not in note
    assert {r["fee_source"].split(":")[0] for r in output["rows"]
            if r["venue"] == "binance"} == {"default"}


def test_malformed_values_skip_their_symbol_with_a_reason(scan):
    """A microsecond timestamp and a number beyond any float (1e400) in the funding
    snapshot: each skips one symbol, by name; every other row stays."""
    healthy = _rows(_json(scan("--json")))

    def corrupt(host, path, query, recorded):
        if path != "/fapi/v1/premiumIndex":
            return None
        rows = json.loads(recorded.body)
        by_symbol = {r["symbol"]: r for r in rows}
        by_symbol["BTCUSDT"]["time"] *= 1000
        by_symbol["ETHUSDT"]["lastFundingRate"] = "1e400"
        return Answer(200, json.dumps(rows))

    output = _json(scan("--json", rule=corrupt))
    reasons = {s["symbol"]: s["reason"] for s in output["skipped"] if s["venue"] == "binance"}
    assert reasons["BTCUSDT"].startswith("field time is ")
    assert reasons["BTCUSDT"].endswith(", not a time in epoch milliseconds")
    assert reasons["ETHUSDT"] == "field lastFundingRate is invalid value '1e400'"
    rows = _rows(output)
    assert rows["binance"] == healthy["binance"] - {"BTC/USDT:USDT", "ETH/USDT:USDT"}
    assert rows["bybit"] == healthy["bybit"] and rows["okx"] == healthy["okx"]


@pytest.mark.parametrize("base_url", ["ftp://127.0.0.1", "127.0.0.1:8080", "http://h/?a=1"])
def test_a_base_url_that_is_not_an_http_url_is_a_config_error(run_cli, write_config, base_url):
    path = write_config(f'[venues.okx]\nenabled = true\nbase_url = "{base_url}"\n')
    result = run_cli("--config", str(path), "scan")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "venues.okx.base_url" in result.stderr
    assert "must be an http:// or https:// URL without a query" in result.stderr


async def test_a_timeout_a_plugin_raises_is_not_mistaken_for_the_deadline(monkeypatch):
    from perpcarry.config.loader import load_config
    from perpcarry.scan.engine import ScanOptions, run_scan
    from perpcarry_okx.venue import OkxVenue

    async def broken(self):
        raise TimeoutError("lock wait timed out\nsecond line https://x/y?signature=abc")

    monkeypatch.setattr(OkxVenue, "fetch_funding_snapshot", broken)
    result = await run_scan(load_config(None), ScanOptions(offline=True))
    assert result.failures == {"okx": "unexpected error (TimeoutError: lock wait timed out)"}
    assert {r.venue for r in result.rows + result.reverse_rows} == {"binance", "bybit"}
