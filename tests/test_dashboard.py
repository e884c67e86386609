"""The dashboard's JSON API and actions (Starlette's TestClient) on the journal of a real
replay run, and a close through ``perpcarry close``'s code on a paper account."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from dashboard_support import TOKEN, replayed
from starlette.testclient import TestClient
from venue_server import LOCAL_ONLY, VenueServer

from perpcarry.cli.trade import session
from perpcarry.config.loader import load_config
from perpcarry.config.settings import VenueConfig
from perpcarry.dashboard.app import create_app
from perpcarry.dashboard.documents import Book
from perpcarry.dashboard.feed import PAPER_ONLINE, record_cycle
from perpcarry.dashboard.security import check_listen, load_or_create_token
from perpcarry.domain.errors import ConfigError, UsageError
from perpcarry.events import EventBus
from perpcarry.execution.journal import Journal
from perpcarry.execution.service import journal_path
from perpcarry.risk.monitor import RiskMonitor
from perpcarry.risk.state import entry_stop, kill_state

AUTH = {"X-Perpcarry-Token": TOKEN}
ROOT = Path(__file__).parents[1]


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


def test_no_amount_is_shown_in_exponent_notation(client, replay_run):
    """The replay's closed OKX position keeps a zero spot quantity stored as ``0E-8`` (what
    a Decimal's str() gives): the API and the page give every quantity and amount in plain
    digits, exactly."""
    with Journal.open(replay_run.book.path, trading=False) as journal:
        exponent = [p for p in journal.positions(include_closed=True)
                    if "E" in str(p.spot_quantity) or "E" in str(p.delta)]
    assert exponent, "no stored quantity in exponent form: the test would prove nothing"
    document = client.get("/api/positions").json()
    for row in document["positions"]:
        for key in ("spot_quantity", "perp_quantity", "delta", "spot_cost", "perp_proceeds"):
            assert row[key] is None or "E" not in row[key].upper(), (key, row[key])
        assert all("E" not in v.upper() for v in row["fees"].values()), row["fees"]
    [row] = [r for r in document["positions"] if r["position_id"] == exponent[0].position_id]
    assert Decimal(row["spot_quantity"]) == exponent[0].spot_quantity
    page = client.get("/positions").text
    assert not re.search(r">-?\d+(\.\d+)?E[-+]?\d+<", page), "a number in exponent notation"


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


def position_row(page: str, position_id: str) -> str:
    """The positions table's row of one position, as HTML."""
    [row] = re.findall(rf'<tr data-position="{position_id}".*?</tr>', page, re.S)
    return row


def pct(value: Decimal, digits: int = 1) -> str:
    return f"{float(value) * 100:.{digits}f}%"


def test_margins_are_what_the_risk_monitor_read_at_the_last_cycle(client, replay_run):
    last = replay_run.last_risk
    assert last is not None and last.perps, "the replay's monitor read no perp"
    margins = client.get("/api/margins").json()
    assert margins["read_at"] == last.at.isoformat()
    assert [(m["venue"], m["symbol"], Decimal(m["distance"]), Decimal(m["margin_ratio"]),
             Decimal(m["liquidation_price"]), Decimal(m["mark"])) for m in margins["perps"]] \
        == [(p.venue, p.symbol, p.distance, p.margin_ratio, p.liquidation_price, p.mark)
            for p in last.perps]
    assert [(m["venue"], m["settle"], Decimal(m["utilisation"]), Decimal(m["leverage"]))
            for m in margins["pools"]] == [(p.venue, p.settle, p.utilisation, p.leverage)
                                           for p in last.pools]
    # The replay ends flat (its last cycle closed what the check read): no row shows one.
    page = client.get("/positions").text
    for perp in last.perps:
        for position in perp.positions:
            assert "margin-" not in position_row(page, position.position_id)


RISK_CONFIG = ("[execution]\nleverage = 5\n[paper.venues.binance]\n"
               "balances = { USDT = 100000 }\n[strategy]\nmargin_floor = 0.1\n"
               "[risk]\nleverage_ceiling = 20\n")
PERP = "BTC/USDT:USDT"


async def test_a_position_below_the_warning_and_the_floor_is_highlighted(paper_data, tmp_path):
    """A real paper position and a price moved the way tests/test_risk_monitor.py moves it;
    the monitor's real check, recorded as the run loop records it."""
    config_file = tmp_path / "perpcarry.toml"
    config_file.write_text(RISK_CONFIG)
    config = load_config(config_file)
    risk = config.settings.risk
    book = Book(journal_path(config.data_dir, True), "paper", paper=True)
    client = TestClient(create_app(config, book, TOKEN))
    now = datetime(2026, 12, 6, tzinfo=UTC)
    async with session(config, ["binance"], paper=True, offline=True,
                       trading=True) as trading:
        opened = await trading.open("binance", "BTC", notional=None,
                                    quantity=Decimal("0.01"),
                                    executor=trading.executor(None), slices=1)
        page = client.get("/positions").text
        assert "not read yet: no cycle recorded" in position_row(page, opened.position_id)
        monitor = RiskMonitor(risk, EventBus(config.registry.pm, trading.journal, None,
                                             trading.journal.clock))
        shown, unmoved = {}, {}
        for factor, level in ((Decimal(1), "ok"), (Decimal("1.05"), "warning"),
                              (Decimal("1.15"), "floor")):
            await move_price(trading, factor, unmoved)
            report = await monitor.check(trading, now)
            record_cycle(trading.journal, now, None, [], {}, None, risk=report)
            [perp] = [p for p in report.perps if p.symbol == PERP]
            margins = client.get("/api/margins").json()
            [reading] = [m for m in margins["perps"] if m["symbol"] == PERP]
            assert (Decimal(reading["distance"]), reading["level"]) == (perp.distance, level)
            shown[level] = (perp.distance, position_row(client.get("/positions").text,
                                                        opened.position_id))
    ok, warning, floor = shown["ok"], shown["warning"], shown["floor"]
    assert ok[0] > risk.warning_distance and "margin-ok" in ok[1] and "⚠" not in ok[1]
    assert risk.floor_distance < warning[0] < risk.warning_distance
    assert 'class="distance margin-warning"' in warning[1]
    assert f"{pct(warning[0])} ⚠ below warning 25%" in warning[1]
    assert floor[0] < risk.floor_distance and 'class="distance margin-floor"' in floor[1]
    assert f"{pct(floor[0])} ⛔ below floor 15%" in floor[1]


async def move_price(trading, factor: Decimal, unmoved: dict) -> None:
    """Set the Binance snapshot's BTC mark and spot index to ``factor`` times the
    snapshot's own (kept in ``unmoved``), for the paper venue and the prices orders are
    sized with, as tests/test_risk_monitor.py moves them."""
    venue = trading.venues["binance"].orders
    snapshot = await venue.view.funding()
    quote = unmoved.setdefault(PERP, snapshot.quotes[PERP])
    snapshot.quotes[PERP] = replace(
        quote, mark_price=quote.mark_price * factor,
        index_price=quote.index_price and quote.index_price * factor)

    async def same_snapshot():
        return snapshot

    venue.view.client.fetch_funding_snapshot = same_snapshot


def test_an_offline_run_shows_the_margins_the_account_had_and_no_rate_limit(run_cli,
                                                                           paper_data):
    assert run_cli("run", "--paper", "--offline", "--once").exit_code == 0
    config = load_config(None)
    book = Book(journal_path(config.data_dir, True), "paper", paper=True)
    client = TestClient(create_app(config, book, TOKEN))
    opened = client.get("/api/positions").json()["positions"]
    assert opened, "the run opened nothing: the test would prove nothing"
    page = client.get("/positions").text
    for row in opened:  # opened after the cycle's check
        assert "not read yet: opened after the last check" in \
            position_row(page, row["position_id"])
    account = json.loads(run_cli("account", "--paper", "--offline", "--json").stdout)
    # The next cycle's check reads the account as it is now (the offline clock is pinned).
    assert run_cli("run", "--paper", "--offline", "--once").exit_code == 0
    margins = {(m["venue"], m["symbol"]): m for m in client.get("/api/margins").json()["perps"]}
    held = [(v["venue"], p) for v in account["venues"] for p in v["positions"]]
    assert held
    for venue, p in held:
        m = margins[(venue, p["symbol"])]
        assert (m["distance"], m["margin_ratio"], m["liquidation_price"]) == (
            p["liquidation_distance"], p["margin_ratio"], p["liquidation_price"])
    page = client.get("/positions").text
    for row in opened:
        [p] = [p for venue, p in held
               if (venue, p["symbol"]) == (row["venue"], row["perp_symbol"])]
        html = position_row(page, row["position_id"])
        assert f'<td class="margin-ratio">{pct(Decimal(p["margin_ratio"]), 2)}</td>' in html
        assert f">{pct(Decimal(p['liquidation_distance']))}</td>" in html
    health = client.get("/api/operations").json()["venues"]
    assert health and all(
        v["rate_limit"] == {"at": v["last_success"], "requests": None, "groups": [],
                            "note": "paper: no venue rate limit (offline: market data from "
                                    "the bundled snapshots)"} for v in health)
    assert "paper: no venue rate limit" in client.get("/operations").text


@pytest.mark.block_network(**LOCAL_ONLY)
def test_an_online_run_shows_each_api_groups_weight_use(run_cli, paper_data, write_config,
                                                        tmp_path):
    """``run --paper --once`` with Binance's market data from a local server answering with
    its bundled real snapshot: the market-data client's budgets were used."""
    server = VenueServer(ROOT / "plugins" / "binance" / "snapshot" / "snapshot.json")
    server.start()
    try:
        path = write_config(f'[venues.binance]\nenabled = true\nbase_url = "{server.url}"\n')
        result = run_cli("--config", str(path), "run", "--paper", "--once", "--json")
        sent = sum(server.requests.values())
    finally:
        server.stop()
    assert result.exit_code == 0, result.stderr
    config = load_config(path)
    book = Book(journal_path(config.data_dir, True), "paper", paper=True)
    client = TestClient(create_app(config, book, TOKEN))
    [binance] = client.get("/api/operations").json()["venues"]
    use = binance["rate_limit"]
    assert use["note"] == PAPER_ONLINE
    # Requests up to the cycle's record, of the ones the server answered in the run.
    assert 0 < use["requests"] <= sent
    groups = {g["group"]: g for g in use["groups"]}
    assert set(groups) == {"spot", "fapi"}  # the plugin's published budgets
    share = VenueConfig.model_fields["weight_budget_share"].default  # not set above
    assert {g: groups[g]["budget"] for g in groups} == {"spot": 6000 * share,
                                                       "fapi": 2400 * share}
    assert sum(g["used"] for g in groups.values()) > 0
    for g in groups.values():
        assert g["share"] == pytest.approx(g["used"] / g["budget"])
    page = client.get("/operations").text
    assert f"fapi {groups['fapi']['share'] * 100:.1f}%" in page
