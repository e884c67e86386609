"""``perpcarry reconcile --adopt``: perp shorts the journal does not know, hedged by spot held
on the same venue, become journal positions (unknown spot cost, never an order sent), then
``positions`` shows them and ``close`` closes them. Against the paper venue through the CLI
(``--paper --offline``, positions opened by hand directly on the paper venue) and the live
ccxt path against the fake Binance; the journal's schema 2 -> 3 migration; intents that end
hedged below their target (``partial``)."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import threading
from contextlib import AsyncExitStack, contextmanager
from decimal import Decimal

import pytest
from execution_support import ETH_PRICE, _HarnessMarkets, open_fake, open_paper
from fake_binance import FakeBinance
from support import no_sleep
from test_trade_cli import PERP, SPOT, by_hand, cli_json, held

import perpcarry.execution.journal as journal_module
from perpcarry.execution.engine import Pacing
from perpcarry.execution.executors import PerpFirst, Sliced
from perpcarry.execution.journal import SCHEMA_VERSION, IntentState, Journal, PositionState
from perpcarry.execution.recovery import Adoption, Reconciliation, reconcile_positions
from perpcarry.venues.orders import OrderRequest, Side, Wallet

pytestmark = pytest.mark.usefixtures("data_dir")

ETH_PERP, ETH_SPOT = "ETH/USDT:USDT", "ETH/USDT"
PAPER = ("--paper", "--offline")


def hand_trades(*orders: tuple[str, Side, str]):
    """By hand on the paper Binance: margin moved to futures, then market orders of
    (symbol, side, base quantity), as a user trading outside perpcarry would."""

    async def trade(venue, markets):
        await venue.transfer("USDT", Decimal(5000), Wallet.SPOT, Wallet.FUTURES)
        for n, (symbol, side, quantity) in enumerate(orders):
            await venue.place_order(OrderRequest(markets[symbol], side, Decimal(quantity),
                                                 f"hand{n}"))

    return trade


def venue_short(tmp_path, symbol: str = PERP):
    """The paper venue's own perp position on ``symbol``."""

    async def read(venue, _markets):
        [position] = [p for p in await venue.fetch_positions() if p.symbol == symbol]
        return position

    return by_hand(tmp_path, read)


def adopted_events(data_dir):
    with Journal.open(data_dir / "journal-paper.sqlite", trading=False) as journal:
        return [e["detail"] for e in journal.events() if e["kind"] == "adopted"]


def test_adopt_a_hedged_short_then_positions_and_close_and_never_twice(run_cli, tmp_path,
                                                                       data_dir):
    # 0.01 BTC short and 0.01 BTC bought, delivered net of Binance's 0.1 % taker fee in BTC.
    by_hand(tmp_path, hand_trades((PERP, Side.SELL, "0.01"), (SPOT, Side.BUY, "0.01")))
    before = held(tmp_path)
    assert before == (Decimal("0.00999"), Decimal("0.01"))
    entry = venue_short(tmp_path).entry_price

    code, report = cli_json(run_cli, "reconcile", *PAPER, "--adopt")
    assert (code, report["clean"]) == (0, True)
    [finding] = report["findings"]
    assert (finding["kind"], finding["venue"]) == ("adopted", "binance")
    assert finding["action"] == "adopted as an open position; no order sent"
    assert held(tmp_path) == before  # adopting traded nothing

    [row] = cli_json(run_cli, "positions")[1]["positions"]
    assert row["position_id"] == finding["subject"]
    # The fee left the spot a little short of the perp: within the tolerance, both adopted.
    assert (Decimal(row["spot_quantity"]), Decimal(row["perp_quantity"])) == before
    assert (row["state"], row["spot_cost"], row["entry_basis"]) == ("open", None, None)
    assert Decimal(row["perp_proceeds"]) == Decimal("0.01") * entry
    assert row["adopted_at"] is not None and row["last_intent"] is None
    table = run_cli("positions").stdout
    assert "unknown" in table and "open (adopted)" in table
    [event] = adopted_events(data_dir)
    assert (event["position_id"], event["perp"]) == (row["position_id"], PERP)

    # Adopted once: the next --adopt only confirms it.
    code, again = cli_json(run_cli, "reconcile", *PAPER, "--adopt")
    assert code == 0
    assert [(f["kind"], f["subject"]) for f in again["findings"]] == [
        ("confirmed", row["position_id"])]
    assert len(cli_json(run_cli, "positions")[1]["positions"]) == 1
    assert len(adopted_events(data_dir)) == 1

    code, closed = cli_json(run_cli, "close", *PAPER, "binance", "BTC")
    assert (code, closed["state"], closed["position_id"]) == (0, "done", row["position_id"])
    assert Decimal(closed["perp_change"]) == Decimal("-0.01")
    spot, short = held(tmp_path)
    assert short == 0 and spot < Decimal("0.00001")  # both legs closed, spot dust left
    assert cli_json(run_cli, "positions")[1]["positions"] == []
    [row] = cli_json(run_cli, "positions", "--all")[1]["positions"]
    assert (row["state"], row["spot_cost"]) == ("closed", None)  # unknown stays unknown


def test_less_spot_than_short_adopts_the_hedged_part_and_reports_the_rest(run_cli, tmp_path):
    by_hand(tmp_path, hand_trades((PERP, Side.SELL, "0.01"), (SPOT, Side.BUY, "0.004")))
    before = held(tmp_path)
    assert before == (Decimal("0.003996"), Decimal("0.01"))

    code, report = cli_json(run_cli, "reconcile", *PAPER, "--adopt")
    assert (code, report["clean"]) == (1, False)
    adopted, naked = report["findings"]
    assert adopted["kind"] == "adopted"
    # The spot held, floored to the perp's 0.001 step, is what is hedged.
    assert "perp short 0.0030, spot 0.0030 BTC" in adopted["detail"]
    assert (naked["kind"], naked["subject"]) == ("naked_leg", PERP)
    assert naked["detail"] == "perp short 0.0070 BTC beyond the 0.0039960 BTC spot free to " \
                              "hedge it"
    assert naked["action"].startswith("not adopted; not touched")
    assert held(tmp_path) == before
    [row] = cli_json(run_cli, "positions")[1]["positions"]
    assert (Decimal(row["spot_quantity"]), Decimal(row["perp_quantity"])) == (
        Decimal("0.003"), Decimal("0.003"))

    # The unhedged rest stays what the journal does not know, on every reconcile.
    code, plain = cli_json(run_cli, "reconcile", *PAPER)
    assert {(f["kind"], f["subject"]) for f in plain["findings"]} == {
        ("confirmed", row["position_id"]), ("unknown_position", PERP)}
    [unknown] = [f for f in plain["findings"] if f["kind"] == "unknown_position"]
    assert unknown["detail"] == "short 0.01, of which 0.0070 not in the journal (opened by " \
                                "hand?)"
    # ... and is not adopted again: the spot left (0.000996) is below the perp's step.
    code, again = cli_json(run_cli, "reconcile", *PAPER, "--adopt")
    [unknown] = [f for f in again["findings"] if f["kind"] != "confirmed"]
    assert unknown["action"] == ("not adopted: no BTC spot on binance beyond what the "
                                 "journal's positions hold hedges it (0.0009960 free of "
                                 "claims); not touched")
    assert len(cli_json(run_cli, "positions")[1]["positions"]) == 1
    assert held(tmp_path) == before


def test_a_long_perp_is_reported_not_adopted(run_cli, tmp_path):
    by_hand(tmp_path, hand_trades((PERP, Side.BUY, "0.01"), (SPOT, Side.BUY, "0.01")))
    before = held(tmp_path)
    code, report = cli_json(run_cli, "reconcile", *PAPER, "--adopt")
    assert code == 1
    assert [(f["kind"], f["subject"], f["action"]) for f in report["findings"]] == [
        ("unknown_position", PERP,
         "not adopted: a long perp is not a carry position; not touched")]
    assert cli_json(run_cli, "positions")[1]["positions"] == []
    assert held(tmp_path) == before


def test_only_the_named_short_is_adopted_and_only_spot_no_position_claims(run_cli, tmp_path):
    code, opened = cli_json(run_cli, "open", *PAPER, "binance", "BTC", "--notional", "1000",
                            "--yes")
    assert code == 0  # 0.008 BTC short, 0.007992 held
    by_hand(tmp_path, hand_trades((PERP, Side.SELL, "0.005"), (SPOT, Side.BUY, "0.005"),
                                  (ETH_PERP, Side.SELL, "0.1"), (ETH_SPOT, Side.BUY, "0.1")))
    code, plain = cli_json(run_cli, "reconcile", *PAPER)
    assert {(f["kind"], f["subject"]) for f in plain["findings"]} == {
        ("confirmed", opened["position_id"]), ("unknown_position", PERP),
        ("unknown_position", ETH_PERP)}

    code, report = cli_json(run_cli, "reconcile", *PAPER, "--adopt", f"binance:{PERP}")
    found = {f["kind"]: f for f in report["findings"]}
    assert set(found) == {"confirmed", "adopted", "unknown_position"}
    assert (found["unknown_position"]["subject"], found["unknown_position"]["action"]) == (
        ETH_PERP, "not touched")
    rows = {r["position_id"]: r for r in cli_json(run_cli, "positions")[1]["positions"]}
    adopted = rows[found["adopted"]["subject"]]
    # Only the hand-made part: the short beyond the journal's 0.008, and the spot beyond
    # the 0.007992 the opened position holds.
    assert (Decimal(adopted["spot_quantity"]), Decimal(adopted["perp_quantity"])) == (
        Decimal("0.004995"), Decimal("0.005"))
    assert rows[opened["position_id"]]["spot_cost"] is not None  # opened: its cost is known
    assert Decimal(rows[opened["position_id"]]["perp_quantity"]) == Decimal("0.008")


@pytest.mark.parametrize(("args", "message"), [
    (("--adopt", "BAD:SYM"), "--adopt BAD:SYM: unknown venue BAD (installed: "),
    (("--adopt", "binance:ETH/USDT:USDT"),
     "--adopt binance:ETH/USDT:USDT: binance has no perp position by that symbol the journal "
     "does not know (unknown there: BTC/USDT:USDT)"),
    (("--adopt", "binance"), "--adopt binance: expected VENUE:SYMBOL, e.g. "
                             "binance:BTC/USDT:USDT"),
    ((f"binance:{PERP}",), f"binance:{PERP}: VENUE:SYMBOL arguments name positions to adopt: "
                           "add --adopt"),
])
def test_adopt_mistakes_are_one_line_and_exit_2(run_cli, tmp_path, args, message):
    by_hand(tmp_path, hand_trades((PERP, Side.SELL, "0.01"), (SPOT, Side.BUY, "0.01")))
    result = run_cli("reconcile", *PAPER, *args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert cli_json(run_cli, "positions")[1]["positions"] == []  # nothing adopted


async def test_a_live_adoption_asks_first_and_a_no_adopts_nothing(tmp_path):
    """What ``--live`` without ``--yes`` does: each adoption is a question; declined, the
    short is reported and the journal unchanged."""
    async with AsyncExitStack() as stack:
        harness = await open_paper(stack, tmp_path / "data")
        inner = harness.venue.inner
        markets = await inner.view.markets()
        await inner.place_order(OrderRequest(markets[PERP], Side.SELL, Decimal("0.01"), "h1"))
        await inner.place_order(OrderRequest(markets[SPOT], Side.BUY, Decimal("0.01"), "h2"))
        venues = {"binance": harness.venue}
        asked: list[str] = []

        async def reconcile(answer: bool) -> Reconciliation:
            report = Reconciliation()
            adoption = Adoption(None, lambda q: asked.append(q) or answer)
            await reconcile_positions(harness.journal, venues, _HarnessMarkets(harness),
                                      report, adoption)
            return report

        declined = await reconcile(False)
        assert asked == ["Adopt binance BTC/USDT:USDT: perp short 0.01 and 0.009990 BTC spot "
                         "as a journal position (no order is sent)?"]
        assert [(f.kind, f.action) for f in declined.findings] == [
            ("unknown_position", "not adopted: declined; not touched")]
        assert harness.journal.positions() == []
        accepted = await reconcile(True)
        assert [f.kind for f in accepted.findings] == ["adopted"]
        assert len(harness.journal.positions()) == 1
        assert harness.sends() == {}  # no order sent by either


# The fake listens on 127.0.0.1 only; every other host stays blocked.
@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])
async def test_adopt_through_the_live_ccxt_path_against_the_fake_binance(tmp_path):
    fake = FakeBinance(prices={"ETHUSDT": ETH_PRICE, "BTCUSDT": Decimal("100000")})
    fake.futures_wallet = Decimal("1000")
    fake.spot_balances = {"USDT": Decimal("3000"), "ETH": Decimal("0.5")}
    # A short opened by hand at the fake's real ETH fill price.
    fake.positions["ETHUSDT"] = {"amt": Decimal("-0.5"), "entry": ETH_PRICE}
    await fake.start()
    try:
        harness, client = await open_fake(fake, tmp_path / "data")
        try:
            report = Reconciliation()
            await reconcile_positions(harness.journal, {"binance": harness.venue},
                                      _HarnessMarkets(harness), report, Adoption())
            [finding] = report.findings
            assert finding.kind == "adopted"
            [position] = harness.journal.positions()
            assert (position.spot_quantity, position.perp_quantity) == (Decimal("0.5"),
                                                                        Decimal("0.5"))
            assert position.spot_cost is None
            assert position.perp_proceeds == Decimal("0.5") * ETH_PRICE
            assert position.state is PositionState.OPEN and position.adopted_at is not None
            assert harness.sends() == {}  # no order sent
        finally:
            harness.journal.close()
            await client.close()
    finally:
        await fake.stop()


# -- the journal: schema 2 -> 3 ------------------------------------------------------------


def test_a_schema_2_journal_is_migrated_keeping_its_rows_and_costs(tmp_path):
    path = tmp_path / "journal-paper.sqlite"
    with sqlite3.connect(path) as db:  # a journal as perpcarry left it at schema 2
        for version in (0, 1):
            db.executescript(journal_module.MIGRATIONS[version])
        db.execute("PRAGMA user_version = 2")
        db.execute("INSERT INTO intents VALUES ('i1', 'p1', 'open', 'binance', 'BTC', "
                   "'BTC/USDT', 'BTC/USDT:USDT', '0.008', 'perp-first', '[\"0.008\"]', "
                   "'done', NULL, '2025-09-09T00:00:00+00:00', '2025-09-09T00:00:01+00:00')")
        db.execute("INSERT INTO positions VALUES ('p1', 'binance', 'BTC', 'BTC/USDT', "
                   "'BTC/USDT:USDT', '0.007992', '0.008', '896.12', '895.94', "
                   "'{\"BTC\": \"0.000008\"}', 'open', '2025-09-09T00:00:00+00:00', NULL)")
    db.close()
    with Journal.open(path, trading=True) as journal:
        assert journal._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        [position] = journal.positions()
        assert (position.position_id, position.spot_quantity, position.perp_quantity,
                position.spot_cost, position.perp_proceeds, position.fees,
                position.adopted_at) == ("p1", Decimal("0.007992"), Decimal("0.008"),
                                         Decimal("896.12"), Decimal("895.94"),
                                         {"BTC": Decimal("0.000008")}, None)
        assert journal.intent("i1").state is IntentState.DONE
        # What schema 3 is for: a cost stored as unknown.
        adopted = journal.adopt_position("binance", "ETH", "ETH/USDT", "ETH/USDT:USDT",
                                         spot=Decimal("0.1"), perp=Decimal("0.1"),
                                         perp_entry_price=None, detail={})
        assert (adopted.spot_cost, adopted.perp_proceeds) == (None, None)


# -- intents that end hedged below the target ----------------------------------------------


def test_a_partial_fill_ends_partial_and_positions_says_so(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PERPCARRY_PAPER_FAULTS", "1=partial_fill@0.5")
    code, opened = cli_json(run_cli, "open", *PAPER, "binance", "BTC", "--notional", "1000",
                            "--yes")
    assert (code, opened["state"]) == (1, "partial")
    assert Decimal(opened["perp_change"]) == Decimal("0.004")  # half of the 0.008 target
    assert opened["note"] == "0.0040 of 0.0080 BTC hedged"
    monkeypatch.delenv("PERPCARRY_PAPER_FAULTS")
    [row] = cli_json(run_cli, "positions")[1]["positions"]
    assert (row["state"], row["last_intent"]["state"], row["last_intent"]["target_base"]) == (
        "open", "partial", "0.0080")
    assert "open (partial open)" in run_cli("positions").stdout


async def test_a_slice_stopped_by_the_basis_guard_ends_partial(tmp_path):
    async with AsyncExitStack() as stack:
        harness = await open_paper(stack, tmp_path / "data")

        async def basis_moved() -> str:
            return "basis moved 31.0 bps since the first slice (limit 30)"

        execution = harness.execution()
        intent = execution.plan("open", harness.journal.new_id(), Decimal("0.02"), Sliced(), 2)
        result = await execution.run(Sliced(), Pacing(0, no_sleep, basis_moved))
        assert (result.state, result.perp_change) == (IntentState.PARTIAL, Decimal("0.01"))
        assert harness.journal.intent(intent.intent_id).state is IntentState.PARTIAL
        await harness.assert_invariants()


async def test_recovery_finishes_an_intent_killed_after_its_first_slice_as_partial(tmp_path):
    from execution_support import Killed

    async with AsyncExitStack() as stack:
        harness = await open_paper(stack, tmp_path / "data")
        harness.venue.kill_at = 3  # the second slice's perp order
        execution = harness.execution()
        intent = execution.plan("open", harness.journal.new_id(), Decimal("0.02"),
                                PerpFirst(), 2)
        with pytest.raises(Killed):
            await execution.run(PerpFirst())
        harness.venue.kill_at = None
        harness.reopen()
        report = await harness.recover()
        assert [(f.kind, f.action) for f in report.findings] == [
            ("resolved", "finished as partial")]
        assert harness.journal.intent(intent.intent_id).state is IntentState.PARTIAL
        assert await harness.venue_legs() == (Decimal("0.00999"), Decimal("0.01"))
        await harness.assert_invariants()


def test_reconcile_json_lists_findings_as_json(run_cli, tmp_path):
    """``--adopt --json`` is one JSON document on stdout, nothing else."""
    by_hand(tmp_path, hand_trades((PERP, Side.SELL, "0.01"), (SPOT, Side.BUY, "0.01")))
    result = run_cli("reconcile", *PAPER, "--adopt", "--json")
    document = json.loads(result.stdout)
    assert document["schema_version"] == 1 and document["paper"] is True
    assert [f["kind"] for f in document["findings"]] == ["adopted"]


@contextmanager
def fake_in_thread(fake: FakeBinance):
    """``fake`` served from its own thread and event loop, so the CLI can ``asyncio.run``."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])
def test_live_adopt_asks_unless_yes(run_cli, write_config, monkeypatch):
    """``--live --adopt`` through the CLI against the fake Binance (fake credentials): the
    question is on stderr and a no adopts nothing; ``--yes`` adopts without asking."""
    fake = FakeBinance(prices={"ETHUSDT": ETH_PRICE, "BTCUSDT": Decimal("100000")})
    fake.futures_wallet = Decimal("1000")
    fake.spot_balances = {"USDT": Decimal("3000"), "ETH": Decimal("0.5")}
    fake.positions["ETHUSDT"] = {"amt": Decimal("-0.5"), "entry": ETH_PRICE}
    with fake_in_thread(fake):
        config = write_config(
            "[venues.binance]\nenabled = true\napi_key = \"fake-test-key-not-real\"\n"
            f"secret = \"fake-test-secret-not-real\"\nbase_url = \"{fake.url}\"\n")
        monkeypatch.setenv("PERPCARRY_CONFIG", str(config))
        monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
        declined = run_cli("reconcile", "--live", "--adopt", "--json")
        assert "LIVE: Adopt binance ETH/USDT:USDT: perp short 0.50 and 0.5 ETH spot as a " \
               "journal position (no order is sent)?" in declined.stderr
        [finding] = json.loads(declined.stdout)["findings"]
        assert (declined.exit_code, finding["action"]) == (
            1, "not adopted: declined; not touched")
        assert cli_json(run_cli, "positions", "--live")[1]["positions"] == []

        adopted = run_cli("reconcile", "--live", "--adopt", "--yes", "--json")
        assert adopted.exit_code == 0 and "Adopt" not in adopted.stderr
        [row] = cli_json(run_cli, "positions", "--live")[1]["positions"]
        assert (Decimal(row["spot_quantity"]), Decimal(row["perp_quantity"]),
                row["spot_cost"], Decimal(row["perp_proceeds"])) == (
            Decimal("0.5"), Decimal("0.5"), None, Decimal("0.5") * ETH_PRICE)
        assert not [r for r in fake.requests if r.method == "POST"
                    and r.path in ("/fapi/v1/order", "/api/v3/order")]
