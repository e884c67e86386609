"""The funding ledger on the paper venue over the bundled Binance snapshot (real prices, real
recorded funding): payments synced into the journal per position, idempotently; a payment
no position held kept and reported; the PnL identity against the paper account's own cash;
``perpcarry pnl`` (table, ``--json``, ``--since``, ``--offline``); the v3 -> v4 migration."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perpcarry.ccxt.replay import replaying
from perpcarry.config.loader import load_config
from perpcarry.execution import journal as journal_module
from perpcarry.execution.journal import Intent, Journal, Position, PositionState
from perpcarry.execution.service import TradingSession, VenueHandle, journal_path
from perpcarry.ledger.pnl import ledger_pnl, position_pnl
from perpcarry.ledger.sync import holder, sync_funding
from perpcarry.paper import open_paper_venue
from perpcarry.venues.orders import Fee, FundingPayment, Leg, OrderRequest, Side
from perpcarry.venues.protocol import VenueContext

PERP, SPOT = "BTC/USDT:USDT", "BTC/USDT"
# Opened the day before the Binance snapshot (2025-09-09 00:00 UTC): the settlements of
# 2025-09-08 08:00 and 16:00 and 2025-09-09 00:00 come from the snapshot's recorded history,
# the one of 2025-09-09 08:00 from its predicted rate (see tests/test_paper.py).
OPENED = datetime(2025, 9, 8, tzinfo=UTC)
AFTER_FOUR = datetime(2025, 9, 9, 8, 1, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = OPENED

    def __call__(self) -> datetime:
        return self.now


@asynccontextmanager
async def paper_session(tmp_path):
    """A trading session on Binance's paper account (offline snapshot) whose venue and
    journal read one test clock; the journal is the one ``perpcarry pnl --paper`` reads."""
    clock = Clock()
    async with AsyncExitStack() as stack:
        config = load_config(None)
        stack.enter_context(replaying(config.registry.venues["binance"].offline_snapshot))
        venue = open_paper_venue(config, "binance", VenueContext(
            cache_dir=tmp_path / "cache", offline=True, clock=clock))
        stack.push_async_callback(venue.close)
        journal = Journal.open(journal_path(config.data_dir, True), trading=True, clock=clock)
        stack.callback(journal.close)
        session = TradingSession(config, journal, {"binance": VenueHandle(
            venue, venue.view.client)}, paper=True, offline=True)
        yield session, venue, clock


@pytest.fixture
async def paper(data_dir, tmp_path):
    async with paper_session(tmp_path) as opened:
        yield opened


async def open_btc(session: TradingSession, notional: str = "2000"):
    return await session.open("binance", "BTC", notional=Decimal(notional), quantity=None,
                              executor=session.executor(None), slices=1)


async def usdt_total(venue) -> Decimal:
    balances = await venue.fetch_balances()
    return sum((w["USDT"].total for w in balances.values() if "USDT" in w), Decimal(0))


async def test_funding_fees_and_basis_add_up_to_the_paper_accounts_cash(paper):
    session, venue, clock = paper
    journal = session.journal
    cash_before = await usdt_total(venue)
    opened = await open_btc(session)
    journal.set_expected_apr(opened.position_id, Decimal("0.11"))
    clock.now = AFTER_FOUR

    new = await sync_funding(journal, {"binance": venue})
    paid = await venue.fetch_funding_payments(OPENED)
    assert len(paid) == 4 and sorted(new, key=lambda p: p.time) == paid
    # Synced again (and again after the close): nothing is recorded twice.
    assert await sync_funding(journal, {"binance": venue}) == []
    assert [r.position_id for r in journal.funding()] == [opened.position_id] * 4

    await session.close(journal.position(opened.position_id),
                        executor=session.executor(None), slices=1)
    assert await sync_funding(journal, {"binance": venue}) == []
    report = ledger_pnl(journal, now=clock.now, marks={})
    [row] = report.positions
    assert row.state is PositionState.CLOSED and row.spread_basis_status == "realised"
    assert row.funding == sum((p.amount for p in paid), Decimal(0)) > 0
    # Fees: every fill's, the spot buy's BTC fee at that fill's price.
    fees = Decimal(0)
    for intent_id in {i[0] for i in journal._db.execute("SELECT intent_id FROM intents")}:
        for order in journal.orders(intent_id):
            for fee in order.fees:
                fees += fee.amount * (order.average_price if fee.currency == "BTC" else 1)
    assert row.fees == fees > 0
    assert row.net == row.funding - row.fees + row.spread_basis
    # What the ledger says was earned is exactly what the paper account's USDT moved by
    # (the spot dust left below one order was paid for and is not valued).
    assert await usdt_total(venue) - cash_before == row.net
    assert row.capital == (sum(o.filled * o.average_price for i in [opened.intent_id]
                               for o in journal.orders(i) if o.side is Side.BUY)
                           + sum(o.filled * o.average_price for o in journal.orders(
                               opened.intent_id) if o.side is Side.SELL)
                           / session.settings.leverage)
    assert row.leverage_source == "entry" and row.expected_apr == Decimal("0.11")
    assert row.realised_apr == row.net / row.capital / row.days * 365
    [venue_row] = report.venues
    assert (venue_row.funding, venue_row.fees, venue_row.net) == (row.funding, row.fees,
                                                                  row.net)


async def test_an_open_position_is_marked_at_the_callers_marks_or_not_at_all(paper):
    session, venue, clock = paper
    opened = await open_btc(session)
    clock.now = AFTER_FOUR
    await sync_funding(session.journal, {"binance": venue})
    unmarked = ledger_pnl(session.journal, now=clock.now, marks={})
    assert unmarked.positions[0].spread_basis_status == "not marked"
    assert unmarked.positions[0].net is None and unmarked.venues[0].incomplete == 1
    mark = (await venue.view.funding()).quotes[PERP].mark_price
    marked = ledger_pnl(session.journal, now=clock.now,
                        marks={("binance", PERP): mark, ("binance", SPOT): mark})
    [row] = marked.positions
    # Valued at the mark, the legs are what closing both at it would give: the unrealised
    # PnL of the paper short plus the spot held at the mark less what it cost.
    [short] = await venue.fetch_positions()
    spot_orders = [o for o in session.journal.orders(opened.intent_id) if o.leg.value == "s"]
    spot_cost = sum(o.delivered * o.average_price for o in spot_orders)
    spot_held = sum(o.delivered for o in spot_orders)
    assert row.spread_basis == short.unrealised_pnl + spot_held * mark - spot_cost
    assert row.spread_basis_status == "marked"


async def test_a_payment_no_position_held_is_recorded_unattributed_and_reported(paper):
    session, venue, clock = paper
    await open_btc(session)
    clock.now = datetime(2025, 9, 9, tzinfo=UTC)
    markets = await venue.view.markets()
    # A perp shorted by hand: the journal holds no ETH position.
    await venue.place_order(OrderRequest(markets["ETH/USDT:USDT"], Side.SELL, Decimal("0.1"),
                                         "handEth1"))
    clock.now = AFTER_FOUR
    new = await sync_funding(session.journal, {"binance": venue})
    [eth] = [p for p in new if p.symbol == "ETH/USDT:USDT"]
    [recorded] = [r for r in session.journal.funding() if r.payment == eth]
    assert recorded.position_id is None
    report = ledger_pnl(session.journal, now=clock.now, marks={})
    assert [u.payment for u in report.unattributed] == [eth]
    [venue_row] = report.venues
    assert venue_row.unattributed == eth.amount != 0
    assert venue_row.funding == report.positions[0].funding + eth.amount
    assert await sync_funding(session.journal, {"binance": venue}) == []


def table_row(text: str, first_cell: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{text}")


def test_pnl_command_json_equals_its_table_and_since_leaves_out_older_payments(
        data_dir, tmp_path, run_cli, monkeypatch):
    async def trade():
        async with paper_session(tmp_path) as (session, venue, clock):
            opened = await open_btc(session)
            clock.now = datetime(2025, 9, 9, tzinfo=UTC)
            markets = await venue.view.markets()
            await venue.place_order(OrderRequest(markets["ETH/USDT:USDT"], Side.SELL,
                                                 Decimal("0.1"), "handEth2"))
            clock.now = AFTER_FOUR
            await sync_funding(session.journal, {"binance": venue})
            return opened, await venue.fetch_funding_payments(OPENED)

    opened, paid = asyncio.run(trade())
    monkeypatch.setenv("COLUMNS", "220")

    result = run_cli("pnl", "--paper", "--offline", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["synced"] == {"binance": 0} and document["not_synced"] == {}
    [position] = document["positions"]
    paid = [p for p in paid if p.symbol == PERP]
    assert Decimal(position["funding"]) == sum((p.amount for p in paid), Decimal(0))
    assert position["spread_basis_status"] == "marked"
    assert position["spot_marked_at"] == "perp mark"  # the snapshot has no spot index

    table = run_cli("pnl", "--paper", "--offline")
    assert table.exit_code == 0
    cells = table_row(table.stdout, opened.position_id)
    money = [Decimal(position[k]).quantize(Decimal("0.01"))
             for k in ("funding", "fees", "spread_basis", "net", "capital")]
    assert [Decimal(c) for c in cells[5:10]] == money
    assert cells[10] == f"{float(position['realised_apr']) * 100:.2f}%"
    total = table_row(table.stdout, "total")
    [totals] = document["totals"]
    assert Decimal(total[3]) == Decimal(totals["funding"]).quantize(Decimal("0.01"))
    assert Decimal(total[7]) == Decimal(totals["net"]).quantize(Decimal("0.01"))
    assert "marked at the perp mark" in table.stdout
    # The ETH short no journal position holds: its payment is listed, never dropped.
    [loose] = document["unattributed"]
    assert loose["symbol"] == "ETH/USDT:USDT"
    assert (f"unattributed: binance ETH/USDT:USDT {loose['amount']} USDT at {loose['time']} "
            "(no journal position held it)") in table.stdout
    assert Decimal(total[4]) == Decimal(loose["amount"]).quantize(Decimal("0.01"))

    since = datetime(2025, 9, 9, tzinfo=UTC)
    later = json.loads(run_cli("pnl", "--paper", "--offline", "--json", "--since",
                               "2025-09-09").stdout)
    [position] = later["positions"]
    assert Decimal(position["funding"]) == sum((p.amount for p in paid if p.time >= since),
                                               Decimal(0))
    assert len([p for p in paid if p.time >= since]) == 2
    assert Decimal(position["fees"]) == 0  # both legs filled on 2025-09-08


def test_live_offline_asks_no_venue_and_says_so(run_cli, data_dir):
    result = run_cli("pnl", "--live", "--offline")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == ("--offline: no live venue asked, funding not "
                                             "synced; showing what the journal holds")


@pytest.mark.parametrize("since", ["2025-13-01", "yesterday"])
def test_a_bad_since_is_one_line_and_exit_2(run_cli, data_dir, since):
    result = run_cli("pnl", "--since", since)
    assert result.exit_code == 2
    assert result.stderr == (f"error: --since: not a date (YYYY-MM-DD) or ISO time: "
                             f"{since!r}\n")


def test_a_v3_journal_migrates_to_v4_keeping_its_rows(tmp_path, monkeypatch):
    path = tmp_path / "journal.sqlite"
    monkeypatch.setattr(journal_module, "SCHEMA_VERSION", 3)
    with Journal.open(path, trading=False) as journal:
        journal.begin_intent(Intent("i1", "p1", "open", "binance", "BTC", SPOT, PERP,
                                    Decimal("0.008"), "perp-first", (Decimal("0.008"),)), [])
        journal.set_flag("kill", "test")
        before = journal.positions(include_closed=True)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3
    monkeypatch.setattr(journal_module, "SCHEMA_VERSION", 4)
    with Journal.open(path, trading=False) as journal:
        assert journal.positions(include_closed=True) == before
        assert journal.flag("kill") == "test"
        assert journal.entry_terms() == {"p1": (None, None)}
        assert journal.funding() == []
        journal.set_expected_apr("p1", 0.2)
        assert journal.entry_terms() == {"p1": (Decimal("0.2"), None)}
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 4


T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _position(position_id: str, opened: int, closed: int | None) -> Position:
    return Position(position_id, "binance", "BTC", SPOT, PERP, Decimal(0), Decimal(0),
                    Decimal(0), Decimal(0), {}, PositionState.OPEN,
                    T0 + timedelta(hours=opened),
                    None if closed is None else T0 + timedelta(hours=closed))


@given(st.lists(st.tuples(st.integers(0, 100), st.one_of(st.none(), st.integers(0, 100))),
                max_size=5),
       st.integers(0, 120))
def test_a_payment_goes_to_a_position_open_when_it_settled_or_to_none(spans, hour):
    positions = [_position(f"p{i}", a, None if b is None else a + b)
                 for i, (a, b) in enumerate(spans)]
    payment = FundingPayment("binance", PERP, Decimal(1), "USDT", T0 + timedelta(hours=hour),
                             "x")
    chosen = holder(positions, payment)
    open_then = [p for p in positions if p.opened_at <= payment.time
                 and (p.closed_at is None or p.closed_at >= payment.time)]
    if not open_then:
        assert chosen is None
    else:
        assert chosen == min(open_then, key=lambda p: p.opened_at).position_id
    other = FundingPayment("binance", "ETH/USDT:USDT", Decimal(1), "USDT", payment.time, "y")
    assert holder(positions, other) is None


async def test_a_fee_in_a_third_currency_is_shown_apart_never_converted(paper):
    session, _venue, clock = paper
    opened = await open_btc(session)
    position = session.journal.position(opened.position_id)
    fills = session.journal.fills()
    # The same spot fill as Binance books it with "pay fees with BNB" on: no price of BNB
    # is known to the ledger, so the fee stays in BNB.
    [spot] = [f for f in fills if f.order.leg is Leg.SPOT]
    in_bnb = replace(spot, order=replace(spot.order, fees=(Fee(Decimal("0.0015"), "BNB"),)))
    plain = position_pnl(position, fills, [], marks={}, now=clock.now)
    row = position_pnl(position, [in_bnb if f is spot else f for f in fills], [], marks={},
                       now=clock.now)
    assert row.unconverted == {"BNB": Decimal("0.0015")} and plain.unconverted == {}
    [btc_fee] = spot.order.fees
    assert row.fees == plain.fees - btc_fee.amount * spot.order.average_price


async def test_legs_the_fills_do_not_explain_are_not_derivable(paper):
    session, venue, clock = paper
    opened = await open_btc(session)
    position = session.journal.position(opened.position_id)
    # Reconciliation found the short gone (liquidated): the fills no longer tell its PnL.
    session.journal.adjust_position(opened.position_id, spot=position.spot_quantity,
                                    perp=Decimal(0), reason="liquidated")
    mark = (await venue.view.funding()).quotes[PERP].mark_price
    report = ledger_pnl(session.journal, now=clock.now,
                        marks={("binance", PERP): mark, ("binance", SPOT): mark})
    [row] = report.positions
    assert (row.spread_basis, row.spread_basis_status, row.net) == (None, "not derivable",
                                                                     None)
    assert report.venues[0].incomplete == 1


def test_an_unreachable_venue_is_one_line_and_the_journal_is_still_shown(run_cli, data_dir):
    opened = json.loads(run_cli("open", "--paper", "--offline", "binance", "BTC",
                                "--notional", "1000", "--yes", "--json").stdout)
    # Without --offline the paper account reads live market data: no network in tests.
    result = run_cli("pnl", "--paper")
    assert result.exit_code == 1  # no venue could be asked
    first = result.stdout.splitlines()[0]
    assert first.startswith("binance: funding not synced (") and first.endswith(
        "); showing what the journal holds")
    assert opened["position_id"] in result.stdout and "not marked" in result.stdout
