"""The write-ahead journal: SQLite in WAL mode with synchronous commits, a schema version and
migrations, one trading process at a time, intents and their client ids recorded before any
order, and every transition appended."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal

import pytest

import perpcarry.execution.journal as journal_module
from perpcarry.execution.journal import (
    SCHEMA_VERSION,
    Intent,
    IntentState,
    Journal,
    JournalError,
    JournalOrder,
    OrderEvent,
    PositionState,
    Purpose,
)
from perpcarry.execution.service import journal_path
from perpcarry.venues.orders import (
    Fee,
    Leg,
    OrderState,
    OrderStatus,
    OrderType,
    Side,
    client_order_id,
)

NOW = datetime(2025, 9, 9, tzinfo=UTC)
# The Binance snapshot's BTCUSDT mark (tests/test_paper.py) and Binance's spot taker fee,
# charged in BTC on a buy.
PRICE = Decimal("112015.09961957")


@pytest.fixture
def path(tmp_path):
    return tmp_path / "data" / "journal-paper.sqlite"


@pytest.fixture
def journal(path):
    with Journal.open(path, trading=True, clock=lambda: NOW) as opened:
        yield opened


def intent_of(journal: Journal, quantity: Decimal = Decimal("0.010")) -> Intent:
    return Intent(journal.new_id(), journal.new_id(), "open", "binance", "BTC", "BTC/USDT",
                  "BTC/USDT:USDT", quantity, "perp-first", (quantity,))


def entries(intent: Intent) -> list[JournalOrder]:
    quantity = intent.slice_plan[0]
    return [JournalOrder(client_order_id(intent.intent_id, leg, 0, 0), intent.intent_id, leg,
                         0, 0, Purpose.ENTRY, "binance", symbol, side, quantity, False)
            for leg, symbol, side in ((Leg.PERP, "BTC/USDT:USDT", Side.SELL),
                                      (Leg.SPOT, "BTC/USDT", Side.BUY))]


def state_of(order: JournalOrder, status: OrderStatus, filled: str, fees=()) -> OrderState:
    return OrderState("binance", order.symbol, "BTC", order.client_order_id, "v1", order.side,
                      OrderType.MARKET, status, order.quantity, Decimal(filled),
                      PRICE if Decimal(filled) else None, tuple(fees), False, NOW, NOW)


# -- the file ------------------------------------------------------------------------------


def test_wal_mode_synchronous_commits_and_the_schema_version(journal, path):
    assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # One journal per account set, in the data dir: paper and live never share one.
    assert journal_path(path.parent, True) == path
    assert journal_path(path.parent, False) != path


def test_a_journal_from_a_newer_perpcarry_is_refused(path):
    Journal.open(path, trading=False).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(JournalError, match=re.escape(
            f"{path}: schema version {SCHEMA_VERSION + 1} is newer than this perpcarry "
            "understands")):
        Journal.open(path, trading=True)
    # The refusal let go of the lock: the same process (a retry, a test) is not told the
    # journal is in use by itself.
    with pytest.raises(JournalError, match="newer than this perpcarry"):
        Journal.open(path, trading=True)


def test_a_migration_brings_an_older_journal_forward_keeping_its_rows(path, monkeypatch):
    with Journal.open(path, trading=True, clock=lambda: NOW) as old:
        intent = intent_of(old)
        old.begin_intent(intent, entries(intent))
    monkeypatch.setattr(journal_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(journal_module.MIGRATIONS, SCHEMA_VERSION,
                        "ALTER TABLE intents ADD COLUMN operator TEXT")
    with Journal.open(path, trading=True) as migrated:
        assert migrated._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert migrated._db.execute("SELECT operator FROM intents").fetchall() == [(None,)]
        assert [o.client_order_id for o in migrated.orders(intent.intent_id)] == \
            [o.client_order_id for o in sorted(entries(intent), key=lambda o: o.leg.value)]


def test_a_file_that_is_not_a_journal_is_one_line_naming_it(path):
    path.parent.mkdir(parents=True)
    path.write_text("not a database, a note someone saved here\n" * 100)
    with pytest.raises(JournalError, match=re.escape(
            f"journal {path}: file is not a database")) as err:
        Journal.open(path, trading=True)
    assert "\n" not in str(err.value)
    path.unlink()
    Journal.open(path, trading=True).close()  # the lock was released with the refusal


# -- one trading process -------------------------------------------------------------------


def test_a_second_trading_process_is_refused_and_readers_are_not(journal, path, tmp_path):
    env = {**os.environ, "PERPCARRY_DATA_DIR": str(path.parent)}
    done = subprocess.run([sys.executable, "-m", "perpcarry", "open", "--paper", "--offline",
                           "binance", "BTC", "--notional", "1000", "--yes"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"journal {path} is in use by another trading process (pid {os.getpid()}); " \
           "stop it first" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert journal.unfinished_intents() == [] and journal.positions() == []
    with Journal.open(path, trading=False) as reader:  # positions, a dashboard
        assert reader.positions() == []
    journal.close()
    Journal.open(path, trading=True).close()  # released on close


# -- write-ahead ---------------------------------------------------------------------------


def test_an_intent_and_every_client_id_it_may_send_are_committed_first(journal, path):
    intent = intent_of(journal)
    orders = entries(intent)
    journal.begin_intent(intent, orders)
    # Another connection (what a restarted process would read) sees them committed.
    with Journal.open(path, trading=False) as reader:
        [pending] = reader.unfinished_intents()
        assert (pending.intent_id, pending.state) == (intent.intent_id, IntentState.PENDING)
        ids = {o.client_order_id for o in reader.orders(intent.intent_id)}
        assert {o.state for o in reader.orders(intent.intent_id)} == {OrderEvent.PLANNED}
        assert reader.position(intent.position_id).state is PositionState.OPENING
    # Deterministic: derived again from the intent id alone, as recovery does.
    assert ids == {client_order_id(intent.intent_id, leg, 0, 0) for leg in Leg}


def test_every_transition_is_appended_and_the_position_follows_the_fills(journal):
    intent = intent_of(journal)
    perp, spot = entries(intent)
    journal.begin_intent(intent, [perp, spot])
    journal.mark(perp.client_order_id, OrderEvent.SENT)
    journal.mark(perp.client_order_id, OrderEvent.OUTCOME_UNKNOWN, {"reason": "timeout"})
    journal.record_state(state_of(perp, OrderStatus.FILLED, "0.010",
                                  [Fee(Decimal("0.56"), "USDT")]))
    journal.resize(spot.client_order_id, Decimal("0.01001"))
    journal.mark(spot.client_order_id, OrderEvent.SENT)
    spot = journal.order(spot.client_order_id)
    journal.record_state(state_of(spot, OrderStatus.PARTIALLY_FILLED, "0.005",
                                  [Fee(Decimal("0.000005"), "BTC")]))
    journal.record_state(state_of(spot, OrderStatus.FILLED, "0.01001",
                                  [Fee(Decimal("0.00001001"), "BTC")]))
    kinds = [(e["client_order_id"], e["kind"]) for e in journal.events()]
    p, s = perp.client_order_id, spot.client_order_id
    assert kinds == [(None, "intent"), (p, "planned"), (s, "planned"), (p, "sent"),
                     (p, "outcome_unknown"), (p, "filled"), (s, "resized"), (s, "sent"),
                     (s, "partially_filled"), (s, "filled")]
    position = journal.position(intent.position_id)
    # Spot held is the fill net of the fee taken in BTC.
    assert (position.spot_quantity, position.perp_quantity) == (Decimal("0.00999999"),
                                                                Decimal("0.010"))
    assert position.fees == {"USDT": Decimal("0.56"), "BTC": Decimal("0.00001001")}
    journal.finish_intent(intent.intent_id, IntentState.DONE)
    assert journal.position(intent.position_id).state is PositionState.OPEN
    assert journal.events()[-1]["kind"] == "intent_done"


def test_a_fill_that_goes_backwards_or_an_unknown_order_is_refused(journal):
    intent = intent_of(journal)
    perp, _ = entries(intent)
    journal.begin_intent(intent, entries(intent))
    journal.record_state(state_of(perp, OrderStatus.FILLED, "0.010"))
    with pytest.raises(JournalError, match=r"went from 0\.010 filled to 0\.005"):
        journal.record_state(state_of(perp, OrderStatus.FILLED, "0.005"))
    with pytest.raises(JournalError, match="is not a planned order"):
        journal.resize(perp.client_order_id, Decimal("0.02"))
    with pytest.raises(JournalError, match="unknown order pcnever"):
        journal.mark("pcnever", OrderEvent.SENT)
    # Nothing of the refused writes landed.
    assert journal.position(intent.position_id).perp_quantity == Decimal("0.010")
    assert journal.order(perp.client_order_id).quantity == Decimal("0.010")


def test_a_client_id_is_journalled_once(journal):
    intent = intent_of(journal)
    journal.begin_intent(intent, entries(intent))
    with pytest.raises(sqlite3.IntegrityError):
        journal.plan_order(entries(intent)[0])
