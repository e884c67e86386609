"""The dashboard's JSON API and actions (Starlette's TestClient) on the journal of a real
replay run, and a close through ``perpcarry close``'s code on a paper account."""

from __future__ import annotations

import json
import os
import socket
import stat
from decimal import Decimal

import pytest
from dashboard_support import TOKEN, replayed
from starlette.testclient import TestClient

from perpcarry.config.loader import load_config
from perpcarry.dashboard.app import create_app
from perpcarry.dashboard.documents import Book
from perpcarry.dashboard.security import check_listen, load_or_create_token
from perpcarry.domain.errors import ConfigError, UsageError
from perpcarry.execution.journal import Journal
from perpcarry.execution.service import journal_path
from perpcarry.risk.state import entry_stop, kill_state

AUTH = {"X-Perpcarry-Token": TOKEN}


@pytest.fixture(scope="module")
def replay_run(tmp_path_factory):
    return replayed(tmp_path_factory.mktemp("replay"))


@pytest.fixture
def client(replay_run):
    return TestClient(create_app(replay_run.config, replay_run.book, TOKEN))


def journal_state(book: Book):
    with Journal.open(book.path, trading=False) as journal:
        return (journal.flag("kill"), [(p.position_id, p.state, p.spot_quantity,
                                        p.perp_quantity)
                                       for p in journal.positions(include_closed=True)])


def test_positions_api_lists_the_journals_positions_with_its_numbers(client, replay_run):
    document = client.get("/api/positions").json()
    with Journal.open(replay_run.book.path, trading=False) as journal:
        held = {p.position_id: p for p in journal.positions(include_closed=True)}
    assert held, "the replay opened no position: the test would prove nothing"
    assert {r["position_id"] for r in document["positions"]} == set(held)
    for row in document["positions"]:
        p = held[row["position_id"]]
        assert (Decimal(row["spot_quantity"]), Decimal(row["perp_quantity"]),
                Decimal(row["delta"]), row["state"]) == (
            p.spot_quantity, p.perp_quantity, p.delta, p.state.value)


def test_overview_has_one_equity_point_per_cycle_and_the_realised_net(client, replay_run):
    overview = client.get("/api/overview").json()
    assert len(overview["equity"]) == replay_run.cycles
    for point in overview["equity"]:
        assert point["equity"] == pytest.approx(sum(point["by_venue"].values()))
    pnl = client.get("/api/pnl").json()
    closed = [Decimal(r["net"]) for r in pnl["positions"]
              if r["closed_at"] and r["net"] is not None]
    [(quote, series)] = overview["realised_net"].items()
    assert quote == "USDT" and len(series) == len(closed)
    assert Decimal(series[-1]["net"]) == sum(closed)
    assert (overview["kill"], overview["breaker"]) == (None, None)
    # Funding over time ends at what the ledger counts per venue.
    funding = {v["venue"]: Decimal(v["funding"]) for v in pnl["venues"]}
    assert overview["funding"], "the replay recorded no funding: nothing would be compared"
    for key, points in overview["funding"].items():
        venue, _currency = key.split()
        assert Decimal(points[-1]["funding"]) == funding[venue]


def test_every_page_renders_with_its_data(client, replay_run):
    overview = client.get("/")
    assert overview.status_code == 200
    # One point per cycle on the equity chart, drawn as inline SVG.
    assert overview.text.count('data-series="equity"') == replay_run.cycles
    positions = client.get("/positions").text
    for row in client.get("/api/positions").json()["positions"]:
        assert f'data-position="{row["position_id"]}"' in positions
    assert "a replay reads the bundled history" in client.get("/opportunities").text
    assert "every intent finished" in client.get("/operations").text
    assert TOKEN not in overview.text + positions  # pages never carry the token


def test_kill_is_refused_without_the_right_token_and_engaged_with_it(client, replay_run):
    before = journal_state(replay_run.book)
    refused = [
        (client.post("/api/kill"), 401, "missing X-Perpcarry-Token"),
        (client.post("/api/kill", headers={"X-Perpcarry-Token": "nope"}), 403, "wrong token"),
        (client.post("/api/kill", headers=AUTH, content=b"{not json"), 400, "malformed JSON"),
        (client.post("/api/kill", headers=AUTH, content=b"[1]"), 400, "must be an object"),
        (client.post("/api/kill", headers=AUTH | {"Origin": "http://evil.example"}), 403,
         "cross-origin"),
    ]
    for response, status, message in refused:
        assert response.status_code == status and message in response.json()["error"]
    assert journal_state(replay_run.book) == before
    bad_flatten = client.post("/api/kill", headers=AUTH, json={"flatten": "yes"})
    assert bad_flatten.status_code == 400 and "flatten" in bad_flatten.json()["error"]
    assert journal_state(replay_run.book) == before
    engaged = client.post("/api/kill", headers=AUTH,
                          json={"reason": "funding flipped", "flatten": True})
    assert engaged.status_code == 200
    with Journal.open(replay_run.book.path, trading=False) as journal:
        state = kill_state(journal)  # what `run` and every pre-trade check read
        assert (state.reason, state.flatten) == ("funding flipped", True)
        assert entry_stop(journal) == "kill switch engaged (funding flipped)"
    # The same fields `positions --json` shows.
    assert client.get("/api/positions").json()["kill"] == engaged.json()["kill"]
    assert client.get("/api/overview").json()["kill"]["reason"] == "funding flipped"
    latest = client.get("/api/operations").json()["alert_log"][0]
    assert (latest["kind"], latest["message"]) == ("flag",
                                                   "kill switch engaged (funding flipped)")
    resumed = client.post("/api/resume", headers=AUTH)
    assert resumed.status_code == 200 and "kill switch (funding flipped" in \
        resumed.json()["cleared"][0]
    assert client.get("/api/overview").json()["kill"] is None
    assert journal_state(replay_run.book) == before


def test_close_refusals_change_nothing(client, replay_run):
    before = journal_state(replay_run.book)
    unknown = client.post("/api/close", headers=AUTH, json={"position_id": "nosuch"})
    assert unknown.status_code == 404 and "no position 'nosuch'" in unknown.json()["error"]
    missing = client.post("/api/close", headers=AUTH, json={})
    assert missing.status_code == 400 and "position_id" in missing.json()["error"]
    some_id = before[1][0][0]
    replay = client.post("/api/close", headers=AUTH, json={"position_id": some_id})
    assert replay.status_code == 409 and "replay journal is a record" in replay.json()["error"]
    assert journal_state(replay_run.book) == before


def test_read_only_and_foreign_host_are_refused(replay_run):
    read_only = TestClient(create_app(replay_run.config, replay_run.book, None))
    response = read_only.post("/api/kill", headers=AUTH)
    assert response.status_code == 403 and "read-only" in response.json()["error"]
    client = TestClient(create_app(replay_run.config, replay_run.book, TOKEN))
    assert client.get("/api/overview", headers={"Host": "evil.example"}).status_code == 400


@pytest.fixture
def paper_data(tmp_path, monkeypatch):
    for name in ("PERPCARRY_CRASH_AT", "PERPCARRY_CRASH_TRACE", "PERPCARRY_PAPER_FAULTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PERPCARRY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PERPCARRY_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "data"


def test_close_goes_through_perpcarry_close_and_waits_for_a_running_loop(run_cli, paper_data):
    opened = json.loads(run_cli("open", "--paper", "--offline", "binance", "BTC",
                                "--notional", "1000", "--yes", "--json").stdout)
    config = load_config(None)
    book = Book(journal_path(config.data_dir, True), "paper", paper=True)
    client = TestClient(create_app(config, book, TOKEN, offline=True))
    body = {"position_id": opened["position_id"]}
    # `run` holds the trading lock: the close is refused, the position stays open.
    with Journal.open(book.path, trading=True):
        busy = client.post("/api/close", headers=AUTH, json=body)
    assert busy.status_code == 409 and "in use by another trading process" in \
        busy.json()["error"]
    assert journal_state(book)[1][0][1].value == "open"
    closed = client.post("/api/close", headers=AUTH, json=body)
    assert closed.status_code == 200, closed.text
    assert closed.json()["state"] == "done"
    assert Decimal(closed.json()["perp_change"]) == -Decimal(opened["perp_change"])
    assert journal_state(book)[1][0][1].value == "closed"
    again = client.post("/api/close", headers=AUTH, json=body)
    assert again.status_code == 409 and "already closed" in again.json()["error"]


def test_opportunities_show_the_run_loops_latest_scan(run_cli, paper_data):
    assert run_cli("run", "--paper", "--offline", "--once").exit_code == 0
    config = load_config(None)
    book = Book(journal_path(config.data_dir, True), "paper", paper=True)
    client = TestClient(create_app(config, book, TOKEN))
    scan = client.get("/api/opportunities").json()
    cli_scan = json.loads(run_cli("scan", "--offline", "--json").stdout)
    assert [(r["venue"], r["pair"]) for r in scan["rows"]] == \
        [(r["venue"], r["pair"]) for r in cli_scan["rows"]]
    page = client.get("/opportunities").text
    for row in scan["rows"][:5]:
        assert row["pair"] in page
    operations = client.get("/api/operations").json()
    assert operations["last_cycle"] is not None and operations["venues"]


def test_the_token_file_is_owner_only_and_a_shared_one_is_refused(tmp_path):
    path = tmp_path / "conf" / "dashboard-token"
    token = load_or_create_token(path)
    assert len(token) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == token
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=r"readable by others.*chmod 600"):
        load_or_create_token(path)


def test_a_non_loopback_address_needs_the_token(run_cli, tmp_path, monkeypatch):
    check_listen("127.0.0.1", None)
    check_listen("::1", None)
    check_listen("0.0.0.0", TOKEN)
    with pytest.raises(UsageError, match="not a loopback address"):
        check_listen("0.0.0.0", None)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    result = run_cli("dashboard", "--host", "0.0.0.0", "--read-only")
    assert result.exit_code == 2 and "not a loopback address" in result.stderr


def test_dashboard_command_refusals_are_one_line(run_cli, paper_data, tmp_path):
    shown = run_cli("dashboard", "--token")
    token_file = tmp_path / "xdg-config" / "perpcarry" / "dashboard-token"
    assert shown.exit_code == 0 and shown.stdout.strip() == token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert run_cli("dashboard", "--token").stdout == shown.stdout  # made once
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a journal")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases = [
            (("--paper", "--replay"), "--paper and --replay: choose one journal"),
            (("--replay",), "--replay: no replay journal at"),
            (("--journal", str(tmp_path / "none.sqlite")), "no such file"),
            (("--journal", str(bad)), "file is not a database"),
            (("--port", port), f"--port {port}: cannot listen there: Address already in use"),
        ]
        for args, message in cases:
            result = run_cli("dashboard", *args)
            assert (result.exit_code, result.stderr.count("\n")) == (2, 1), args
            assert message in result.stderr
