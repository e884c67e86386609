"""``perpcarry watch`` against the local websocket server replaying real captured pushes
(tests/ws_captures/PROVENANCE.md): what a user sees, and how it stops."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from venue_server import LOCAL_ONLY
from ws_server import WsVenueServer

ROOT = Path(__file__).parents[1]
VENUES = ("binance", "bybit", "okx")

pytestmark = pytest.mark.block_network(**LOCAL_ONLY)


@pytest.fixture(scope="module")
def server():
    served = WsVenueServer(*(ROOT / "plugins" / v / "snapshot" / "snapshot.json"
                             for v in VENUES), interval=0.05)
    served.start()
    yield served
    served.stop()


@pytest.fixture
def watch(server, run_cli, write_config, tmp_path):
    def run(*args: str, extra: str = ""):
        sections = "".join(f'[venues.{v}]\nenabled = true\nbase_url = "{server.url}"\n'
                           for v in VENUES)
        path = write_config(f'cache_dir = "{tmp_path / "cache"}"\n{extra}{sections}')
        return run_cli("--config", str(path), "watch", *args)

    return run


def test_json_emits_one_line_per_update_with_the_replayed_values(watch):
    result = watch("--symbols", "BTC", "--json", "--updates", "12")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 12
    latest = {}
    for line in lines:
        latest[(line["venue"], line["kind"])] = line
    # Binance: the mark rebuilt from the real premiumIndex row, the spot book from the real
    # 24hrTicker push; the basis is the mark over the spot mid.
    book = latest[("binance", "spot_book")]
    assert (book["spot_bid"], book["spot_ask"]) == ("115473.69000000", "115473.70000000")
    if book["mark"] is not None:
        mid = (Decimal(book["spot_bid"]) + Decimal(book["spot_ask"])) / 2
        assert Decimal(book["basis"]) == round(Decimal(book["mark"]) / mid - 1, 8)
    # OKX: the real funding-rate push (its values; only ts is re-stamped).
    assert latest[("okx", "funding")]["rate"] == "0.0000464562120794"
    assert latest[("okx", "funding")]["next_funding_time"] == "2025-10-28T00:00:00+00:00"
    assert {line["source"] for line in lines} == {"stream"}


def test_table_shows_every_venue_and_stops_after_the_duration(watch, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    result = watch("--venues", "binance,okx", "--symbols", "BTC", "--for", "1.5")
    assert result.exit_code == 0, result.stderr
    assert "perpcarry watch" in result.stdout
    assert "binance" in result.stdout and "okx" in result.stdout
    assert "bybit" not in result.stdout
    binance = next(line for line in result.stdout.splitlines() if "binance" in line)
    # The replayed Binance mark and spot book, and the basis between them.
    assert "112,015.09961957" in binance and "115,473.695" in binance
    assert "-2.995%" in binance and "stream" in binance


def test_a_base_no_venue_lists_is_a_usage_error(watch):
    result = watch("--venues", "binance", "--symbols", "NOSUCHCOIN", "--for", "1")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --symbols: no carry pair of NOSUCHCOIN on "
                                     "binance")


def test_an_unknown_venue_is_a_usage_error(watch):
    result = watch("--venues", "kraken", "--for", "1")
    assert result.exit_code == 2
    assert "--venues: unknown venue kraken" in result.stderr


def test_with_streams_off_every_value_is_polled_over_rest(watch, server):
    subscribed = server.subscribes["binance"]
    result = watch("--venues", "binance", "--symbols", "BTC", "--json", "--updates", "2",
                   extra="[streams]\nenabled = false\n")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {line["source"] for line in lines} == {"rest"}
    # The real premiumIndex row of the bundled snapshot (what the stream replays, too).
    assert lines[-1]["mark"] == "112015.09961957"
    assert server.subscribes["binance"] == subscribed  # no websocket was opened


def test_a_venue_that_does_not_answer_is_one_error_line(watch, server):
    from venue_server import Answer

    server.rule = lambda host, path, query, answer: Answer(
        503, "<html><body>Service Unavailable</body></html>", "text/html")
    try:
        result = watch("--venues", "binance", "--symbols", "BTC", "--for", "1")
    finally:
        server.rule = None
    assert result.exit_code == 1
    assert result.stderr.startswith("error: binance: ")
    assert "Traceback" not in result.stderr
