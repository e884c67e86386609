"""The write-ahead journal of everything that moves money.

An intent (open or close one carry position) and the client order id of every order it may
send are committed **before** the first order is sent; every transition of every order is
appended as it happens. After a crash, the journal says exactly which orders may exist on
the venue, so recovery queries them by client id and finishes or unwinds the intent.

SQLite in WAL mode with ``synchronous=FULL`` (a commit survives power loss), a schema
version in ``PRAGMA user_version``, and an exclusive lock file so only one trading process
uses a journal at a time. The tables are made for reading too: ``positions`` is what
``perpcarry positions``, the ledger and the dashboard show, kept in the same transaction as
the fills it is derived from.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path

from perpcarry.domain.errors import PerpcarryError
from perpcarry.venues.orders import Fee, FundingPayment, Leg, OrderState, OrderStatus, Side

SCHEMA_VERSION = 4
ALPHABET = string.digits + string.ascii_lowercase

_SCHEMA = """
CREATE TABLE intents (
    intent_id TEXT PRIMARY KEY,
    position_id TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('open', 'close', 'repair')),
    venue TEXT NOT NULL,
    base TEXT NOT NULL,
    spot_symbol TEXT NOT NULL,
    perp_symbol TEXT NOT NULL,
    target_base TEXT NOT NULL,
    executor TEXT NOT NULL,
    slice_plan TEXT NOT NULL,
    state TEXT NOT NULL,
    note TEXT,
    created_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX intents_unfinished ON intents (state) WHERE state = 'pending';
CREATE TABLE orders (
    client_order_id TEXT PRIMARY KEY,
    intent_id TEXT NOT NULL REFERENCES intents (intent_id),
    leg TEXT NOT NULL,
    slice INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    purpose TEXT NOT NULL,
    venue TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    quantity TEXT NOT NULL,
    reduce_only INTEGER NOT NULL,
    state TEXT NOT NULL,
    filled TEXT NOT NULL DEFAULT '0',
    delivered TEXT NOT NULL DEFAULT '0',
    average_price TEXT,
    fees TEXT NOT NULL DEFAULT '[]',
    venue_order_id TEXT,
    updated_at TEXT NOT NULL,
    UNIQUE (intent_id, leg, slice, attempt, purpose)
);
CREATE INDEX orders_by_intent ON orders (intent_id);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    intent_id TEXT,
    client_order_id TEXT,
    kind TEXT NOT NULL,
    detail TEXT
);
CREATE TABLE positions (
    position_id TEXT PRIMARY KEY,
    venue TEXT NOT NULL,
    base TEXT NOT NULL,
    spot_symbol TEXT NOT NULL,
    perp_symbol TEXT NOT NULL,
    spot_quantity TEXT NOT NULL DEFAULT '0',
    perp_quantity TEXT NOT NULL DEFAULT '0',
    spot_cost TEXT NOT NULL DEFAULT '0',
    perp_proceeds TEXT NOT NULL DEFAULT '0',
    fees TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    closed_at TEXT
);
CREATE TABLE flags (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    at TEXT NOT NULL
);
"""

# Later schema versions append their migration here: MIGRATIONS[n] takes version n to n+1.
MIGRATIONS: dict[int, str] = {
    0: _SCHEMA,
    # The fee of a perp fill read after the second leg is sent (OrderState.fees_pending).
    1: "ALTER TABLE orders ADD COLUMN fees_pending INTEGER NOT NULL DEFAULT 0",
    # Adoption (``reconcile --adopt``): a position perpcarry did not open has no known spot
    # cost (and a perp entry price only when the venue reports one), so both costs become
    # nullable (NULL: unknown, never a made-up 0) and ``adopted_at`` says when it was
    # adopted (NULL: opened by perpcarry). SQLite cannot drop NOT NULL in place: the table
    # is rebuilt with the same columns in the same order, its rows copied.
    2: """
CREATE TABLE positions_v3 (
    position_id TEXT PRIMARY KEY,
    venue TEXT NOT NULL,
    base TEXT NOT NULL,
    spot_symbol TEXT NOT NULL,
    perp_symbol TEXT NOT NULL,
    spot_quantity TEXT NOT NULL DEFAULT '0',
    perp_quantity TEXT NOT NULL DEFAULT '0',
    spot_cost TEXT DEFAULT '0',
    perp_proceeds TEXT DEFAULT '0',
    fees TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    closed_at TEXT,
    adopted_at TEXT
);
INSERT INTO positions_v3 (position_id, venue, base, spot_symbol, perp_symbol, spot_quantity,
    perp_quantity, spot_cost, perp_proceeds, fees, state, opened_at, closed_at)
    SELECT position_id, venue, base, spot_symbol, perp_symbol, spot_quantity, perp_quantity,
    spot_cost, perp_proceeds, fees, state, opened_at, closed_at FROM positions;
DROP TABLE positions;
ALTER TABLE positions_v3 RENAME TO positions
""",
    # The funding ledger: every payment a venue reports, attributed to the position that
    # held the perp when it settled (NULL: none did; kept and reported, never dropped), and
    # what a position's PnL needs that its fills do not say: the APR expected at entry and
    # the perp's leverage (NULL: unknown). Amounts are Decimal text, times ISO UTC.
    3: """
CREATE TABLE funding (
    venue TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    position_id TEXT REFERENCES positions (position_id),
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    time TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (venue, payment_id)
);
CREATE INDEX funding_by_position ON funding (position_id, time);
CREATE INDEX funding_by_time ON funding (venue, time);
ALTER TABLE positions ADD COLUMN expected_apr REAL;
ALTER TABLE positions ADD COLUMN leverage TEXT
""",
}


class JournalError(PerpcarryError):
    """The journal cannot be used: the message names the file and why."""

    exit_code = 2


class Purpose(StrEnum):
    ENTRY = "entry"  # an order that builds the position (open) or takes it down (close)
    UNWIND = "unwind"  # an order that removes an unhedged excess


class OrderEvent(StrEnum):
    PLANNED = "planned"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    OUTCOME_UNKNOWN = "outcome_unknown"
    ABSENT = "absent"  # proven not to exist on the venue after an unknown outcome

    @property
    def is_final(self) -> bool:
        return self in {OrderEvent.FILLED, OrderEvent.CANCELED, OrderEvent.REJECTED,
                        OrderEvent.EXPIRED, OrderEvent.ABSENT}


_FROM_STATUS = {
    OrderStatus.NEW: OrderEvent.ACKNOWLEDGED,
    OrderStatus.PARTIALLY_FILLED: OrderEvent.PARTIALLY_FILLED,
    OrderStatus.FILLED: OrderEvent.FILLED,
    OrderStatus.CANCELED: OrderEvent.CANCELED,
    OrderStatus.REJECTED: OrderEvent.REJECTED,
    OrderStatus.EXPIRED: OrderEvent.EXPIRED,
}


class IntentState(StrEnum):
    PENDING = "pending"
    DONE = "done"  # both legs at the target, within tolerance
    UNWOUND = "unwound"  # failed part way; what was filled was taken back
    FAILED = "failed"  # nothing was filled
    # Both legs hedged at less than the target: a partial fill, a slice stopped by the
    # basis guard, a failure after earlier slices filled (what the failure left was unwound).
    PARTIAL = "partial"


class PositionState(StrEnum):
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Intent:
    intent_id: str
    position_id: str
    action: str  # "open" | "close"
    venue: str
    base: str
    spot_symbol: str
    perp_symbol: str
    target_base: Decimal
    executor: str
    slice_plan: tuple[Decimal, ...]
    state: IntentState = IntentState.PENDING
    note: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class JournalOrder:
    client_order_id: str
    intent_id: str
    leg: Leg
    slice: int
    attempt: int
    purpose: Purpose
    venue: str
    symbol: str
    side: Side
    quantity: Decimal
    reduce_only: bool
    state: OrderEvent = OrderEvent.PLANNED
    filled: Decimal = Decimal(0)
    delivered: Decimal = Decimal(0)
    average_price: Decimal | None = None
    fees: tuple[Fee, ...] = ()
    venue_order_id: str | None = None
    fees_pending: bool = False


@dataclass(frozen=True, slots=True)
class Position:
    position_id: str
    venue: str
    base: str
    spot_symbol: str
    perp_symbol: str
    spot_quantity: Decimal  # base held
    perp_quantity: Decimal  # base short
    # Quote paid for the spot held (sold spot reduces it pro rata); None: unknown (adopted).
    spot_cost: Decimal | None
    # Quote notional of the short at entry prices; None: unknown (adopted, no entry price).
    perp_proceeds: Decimal | None
    fees: dict[str, Decimal]  # by currency
    state: PositionState
    opened_at: datetime
    closed_at: datetime | None
    adopted_at: datetime | None = None  # set when ``reconcile --adopt`` made it

    @property
    def delta(self) -> Decimal:
        """Spot held minus perp short: zero when hedged."""
        return self.spot_quantity - self.perp_quantity


def _now_text(clock: Callable[[], datetime]) -> str:
    return clock().astimezone(UTC).isoformat()


class Journal:
    """One journal file. Open it with :meth:`open`; ``trading=True`` takes the lock."""

    def __init__(self, path: Path, connection: sqlite3.Connection, lock_fd: int | None,
                 clock: Callable[[], datetime]) -> None:
        self.path = path
        self._db = connection
        self._lock_fd = lock_fd
        self.clock = clock
        # Called with (the venue's state, the journal's order) once an order filled and is
        # final: the run loop reports fills and unwinds through it (perpcarry.events).
        self.fill_listener: Callable[[OrderState, JournalOrder], None] | None = None

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, trading: bool,
             clock: Callable[[], datetime] = lambda: datetime.now(UTC),
             durable: bool = True) -> Journal:
        """Open (creating and migrating) the journal at ``path``. ``trading=True`` refuses
        when another process trades on it; read-only users (``positions``, a dashboard)
        pass False."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise JournalError(f"journal {path}: cannot create its folder: "
                               f"{err.strerror}") from None
        lock_fd = _lock(path) if trading else None
        db = None
        try:
            db = sqlite3.connect(path, isolation_level=None, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            # A replay's journal (durable=False) is rebuilt by running it again: it skips
            # the flush to disk each commit costs, and nothing else differs.
            db.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=OFF")
            db.execute("PRAGMA foreign_keys=ON")
            _migrate(db, path)
        except BaseException as err:
            # Any refusal (not a database, a newer schema) lets go of the file and its lock.
            if db is not None:
                db.close()
            if lock_fd is not None:
                os.close(lock_fd)
            if isinstance(err, sqlite3.DatabaseError):
                raise JournalError(f"journal {path}: {err}") from None
            raise
        return cls(path, db, lock_fd, clock)

    def close(self) -> None:
        self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _event(self, db, kind: str, intent_id: str | None, client_order_id: str | None,
               detail: dict | None = None) -> None:
        db.execute("INSERT INTO events (at, intent_id, client_order_id, kind, detail) "
                   "VALUES (?, ?, ?, ?, ?)",
                   (_now_text(self.clock), intent_id, client_order_id, kind,
                    json.dumps(detail, default=str) if detail else None))

    # -- ids -------------------------------------------------------------------------

    def new_id(self) -> str:
        """A fresh intent or position id: milliseconds in base 36 then 6 random characters,
        so ids sort by time and never repeat across processes (16 characters)."""
        ms = int(self.clock().timestamp() * 1000)
        head = ""
        while ms:
            ms, digit = divmod(ms, 36)
            head = ALPHABET[digit] + head
        return head.rjust(10, "0") + "".join(secrets.choice(ALPHABET) for _ in range(6))

    # -- writing ---------------------------------------------------------------------

    def begin_intent(self, intent: Intent, orders: list[JournalOrder]) -> None:
        """Record ``intent`` and every order it plans to send, before any is sent. An open
        creates its position row (state opening), or marks an existing one opening (an
        addition to it); a close marks the position closing."""
        with self._transaction() as db:
            now = _now_text(self.clock)
            db.execute(
                "INSERT INTO intents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (intent.intent_id, intent.position_id, intent.action, intent.venue,
                 intent.base, intent.spot_symbol, intent.perp_symbol, str(intent.target_base),
                 intent.executor, json.dumps([str(q) for q in intent.slice_plan]),
                 IntentState.PENDING.value, intent.note, now))
            if intent.action == "open":
                db.execute("INSERT INTO positions (position_id, venue, base, spot_symbol, "
                           "perp_symbol, state, opened_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                           "ON CONFLICT (position_id) DO UPDATE SET state = excluded.state",
                           (intent.position_id, intent.venue, intent.base, intent.spot_symbol,
                            intent.perp_symbol, PositionState.OPENING.value, now))
            elif intent.action == "close":
                db.execute("UPDATE positions SET state = ? WHERE position_id = ?",
                           (PositionState.CLOSING.value, intent.position_id))
            self._event(db, "intent", intent.intent_id, None,
                        {"action": intent.action, "target_base": intent.target_base,
                         "executor": intent.executor})
            for order in orders:
                self._insert_order(db, order)

    def plan_order(self, order: JournalOrder) -> None:
        """Record one more order (a new attempt, an unwind) before it is sent."""
        with self._transaction() as db:
            self._insert_order(db, order)

    def _insert_order(self, db, order: JournalOrder) -> None:
        db.execute(
            "INSERT INTO orders (client_order_id, intent_id, leg, slice, attempt, purpose, "
            "venue, symbol, side, quantity, reduce_only, state, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (order.client_order_id, order.intent_id, order.leg.value, order.slice,
             order.attempt, order.purpose.value, order.venue, order.symbol, order.side.value,
             str(order.quantity), int(order.reduce_only), OrderEvent.PLANNED.value,
             _now_text(self.clock)))
        self._event(db, OrderEvent.PLANNED.value, order.intent_id, order.client_order_id,
                    {"leg": order.leg.value, "side": order.side.value,
                     "quantity": order.quantity, "purpose": order.purpose.value})

    def resize(self, client_order_id: str, quantity: Decimal) -> None:
        """Set the quantity of an order still only planned (the second leg is sized to what
        the first leg filled)."""
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE orders SET quantity = ?, updated_at = ? WHERE client_order_id = ? "
                "AND state = 'planned'", (str(quantity), _now_text(self.clock), client_order_id))
            if changed.rowcount != 1:
                raise JournalError(f"journal {self.path}: order {client_order_id} is not a "
                                   "planned order")
            self._event(db, "resized", None, client_order_id, {"quantity": quantity})

    def mark(self, client_order_id: str, event: OrderEvent, detail: dict | None = None) -> None:
        """A transition that carries no fill: sent, outcome unknown, absent, rejected."""
        with self._transaction() as db:
            row = db.execute("SELECT intent_id FROM orders WHERE client_order_id = ?",
                             (client_order_id,)).fetchone()
            if row is None:
                raise JournalError(f"journal {self.path}: unknown order {client_order_id}")
            db.execute("UPDATE orders SET state = ?, updated_at = ? WHERE client_order_id = ?",
                       (event.value, _now_text(self.clock), client_order_id))
            self._event(db, event.value, row[0], client_order_id, detail)

    def record_state(self, state: OrderState) -> JournalOrder:
        """What the venue says of an order: its state, fills and fees. The position moves by
        the fill added since the last record, in the same transaction."""
        with self._transaction() as db:
            before = self._order(db, state.client_order_id)
            if before is None:
                raise JournalError(f"journal {self.path}: unknown order {state.client_order_id}")
            event = _FROM_STATUS[state.status]
            added = state.filled_quantity - before.filled
            if added < 0:
                raise JournalError(f"journal {self.path}: order {state.client_order_id} "
                                   f"went from {before.filled} filled to "
                                   f"{state.filled_quantity}")
            db.execute(
                "UPDATE orders SET state = ?, filled = ?, delivered = ?, average_price = ?, "
                "fees = ?, venue_order_id = ?, fees_pending = ?, updated_at = ? "
                "WHERE client_order_id = ?",
                (event.value, str(state.filled_quantity), str(state.delivered_quantity),
                 None if state.average_price is None else str(state.average_price),
                 json.dumps([[str(f.amount), f.currency] for f in state.fees]),
                 state.venue_order_id, int(state.fees_pending), _now_text(self.clock),
                 state.client_order_id))
            if added or state.fees != before.fees:
                self._apply_fill(db, before, state)
            self._event(db, event.value, before.intent_id, state.client_order_id,
                        {"filled": state.filled_quantity, "average_price": state.average_price,
                         "fees": [(f.amount, f.currency) for f in state.fees]})
            recorded = self._order(db, state.client_order_id)
        # Told once per order, after the commit: the order filled (wholly or partly) and will
        # fill no further.
        if (self.fill_listener is not None and event.is_final and state.filled_quantity
                and not before.state.is_final):
            self.fill_listener(state, recorded)
        return recorded

    def _apply_fill(self, db, before: JournalOrder, state: OrderState) -> None:
        position_id = db.execute("SELECT position_id FROM intents WHERE intent_id = ?",
                                 (before.intent_id,)).fetchone()[0]
        row = db.execute("SELECT spot_quantity, perp_quantity, spot_cost, perp_proceeds, fees "
                         "FROM positions WHERE position_id = ?", (position_id,)).fetchone()
        spot, perp = Decimal(row[0]), Decimal(row[1])
        # An unknown cost (an adopted position) stays unknown whatever fills follow.
        cost, proceeds = (None if v is None else Decimal(v) for v in row[2:4])
        fees = {k: Decimal(v) for k, v in json.loads(row[4]).items()}
        price = state.average_price or Decimal(0)
        filled = state.filled_quantity - before.filled
        delivered = state.delivered_quantity - before.delivered
        if before.leg is Leg.SPOT:
            if before.side is Side.BUY:
                spot += delivered
                cost = None if cost is None else cost + filled * price
            else:
                cost = None if cost is None else cost - (cost * delivered / spot if spot
                                                         else Decimal(0))
                spot -= delivered
        elif before.side is Side.SELL:
            perp += filled
            proceeds = None if proceeds is None else proceeds + filled * price
        else:
            proceeds = None if proceeds is None else proceeds - (proceeds * filled / perp
                                                                 if perp else Decimal(0))
            perp -= filled
        for fee in state.fees:
            fees[fee.currency] = fees.get(fee.currency, Decimal(0)) + fee.amount
        for fee in before.fees:
            fees[fee.currency] -= fee.amount
        db.execute("UPDATE positions SET spot_quantity = ?, perp_quantity = ?, spot_cost = ?, "
                   "perp_proceeds = ?, fees = ? WHERE position_id = ?",
                   (str(spot), str(perp), _text(cost), _text(proceeds),
                    json.dumps({k: str(v) for k, v in fees.items() if v}), position_id))

    def adjust_position(self, position_id: str, *, spot: Decimal, perp: Decimal,
                        reason: str) -> None:
        """Set a position's legs to what the venue holds (reconciliation found the journal
        behind the venue, e.g. a liquidated short), with the reason as an event."""
        with self._transaction() as db:
            db.execute("UPDATE positions SET spot_quantity = ?, perp_quantity = ? "
                       "WHERE position_id = ?", (str(spot), str(perp), position_id))
            self._event(db, "adjusted", None, None,
                        {"position_id": position_id, "spot": spot, "perp": perp,
                         "reason": reason})

    def adopt_position(self, venue: str, base: str, spot_symbol: str, perp_symbol: str, *,
                       spot: Decimal, perp: Decimal, perp_entry_price: Decimal | None,
                       detail: dict) -> Position:
        """Record a carry position perpcarry did not open (``reconcile --adopt``) as open:
        ``spot`` base held and ``perp`` base short. The spot cost is unknown (NULL); the
        perp proceeds are known only from the venue's entry price. No order is involved,
        so no intent: the ``adopted`` event, with ``detail``, is its history."""
        position_id = self.new_id()
        proceeds = None if perp_entry_price is None else perp * perp_entry_price
        with self._transaction() as db:
            now = _now_text(self.clock)
            db.execute("INSERT INTO positions (position_id, venue, base, spot_symbol, "
                       "perp_symbol, spot_quantity, perp_quantity, spot_cost, perp_proceeds, "
                       "state, opened_at, adopted_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?)",
                       (position_id, venue, base, spot_symbol, perp_symbol, str(spot),
                        str(perp), _text(proceeds), PositionState.OPEN.value, now, now))
            self._event(db, "adopted", None, None,
                        {"position_id": position_id, "venue": venue, "perp": perp_symbol,
                         "spot_quantity": spot, "perp_quantity": perp,
                         "perp_entry_price": perp_entry_price, **detail})
        return self.position(position_id)

    def finish_intent(self, intent_id: str, state: IntentState, note: str | None = None, *,
                      spot_dust: Decimal = Decimal(0)) -> None:
        """Close ``intent_id``; the position becomes open or closed by what it holds (spot
        below ``spot_dust``, less than the venue accepts in one order, counts as none)."""
        with self._transaction() as db:
            now = _now_text(self.clock)
            db.execute("UPDATE intents SET state = ?, note = ?, finished_at = ? "
                       "WHERE intent_id = ?", (state.value, note, now, intent_id))
            position_id, action = db.execute(
                "SELECT position_id, action FROM intents WHERE intent_id = ?",
                (intent_id,)).fetchone()
            spot, perp = (Decimal(v) for v in db.execute(
                "SELECT spot_quantity, perp_quantity FROM positions WHERE position_id = ?",
                (position_id,)).fetchone())
            flat = spot < spot_dust or spot == 0
            flat = flat and perp == 0
            held = PositionState.CLOSED if flat else PositionState.OPEN
            db.execute("UPDATE positions SET state = ?, closed_at = ? WHERE position_id = ?",
                       (held.value, now if flat else None, position_id))
            self._event(db, f"intent_{state.value}", intent_id, None,
                        {"note": note, "action": action} if note else {"action": action})

    def record_transfer(self, venue: str, currency: str, amount: Decimal, from_wallet,
                        to_wallet, stage: str, transfer_id: str | None = None) -> None:
        """A wallet transfer, ``planned`` before it is requested and ``done`` after."""
        with self._transaction() as db:
            self._event(db, f"transfer_{stage}", None, None,
                        {"venue": venue, "currency": currency, "amount": amount,
                         "from": str(from_wallet), "to": str(to_wallet),
                         "transfer_id": transfer_id})

    def append_event(self, kind: str, detail: dict) -> None:
        """An event not tied to an order (the event bus's, the alerter's): ``detail`` must
        hold plain JSON values."""
        with self._transaction() as db:
            self._event(db, kind, None, None, detail)

    def set_flag(self, name: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO flags VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                       "value = excluded.value, at = excluded.at",
                       (name, value, _now_text(self.clock)))
            self._event(db, "flag", None, None, {name: value})

    def clear_flag(self, name: str) -> str | None:
        """Remove flag ``name``; its value before (None when it was not set)."""
        with self._transaction() as db:
            row = db.execute("DELETE FROM flags WHERE name = ? RETURNING value",
                             (name,)).fetchone()
            if row is not None:
                self._event(db, "flag_cleared", None, None, {name: row[0]})
            return None if row is None else row[0]

    # -- reading ---------------------------------------------------------------------

    def flag(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM flags WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def unfinished_intents(self) -> list[Intent]:
        rows = self._db.execute("SELECT * FROM intents WHERE state = 'pending' "
                                "ORDER BY created_at").fetchall()
        return [_intent(r) for r in rows]

    def intent(self, intent_id: str) -> Intent | None:
        row = self._db.execute("SELECT * FROM intents WHERE intent_id = ?",
                               (intent_id,)).fetchone()
        return None if row is None else _intent(row)

    def latest_intents(self) -> dict[str, Intent]:
        """The latest open or close intent of each position, by position id (what
        ``positions`` shows as how the position got where it is)."""
        rows = self._db.execute("SELECT * FROM intents WHERE action != 'repair' "
                                "ORDER BY created_at, rowid").fetchall()
        return {row[1]: _intent(row) for row in rows}

    def orders(self, intent_id: str) -> list[JournalOrder]:
        rows = self._db.execute(
            "SELECT client_order_id FROM orders WHERE intent_id = ? "
            "ORDER BY slice, leg, purpose, attempt", (intent_id,)).fetchall()
        return [self._order(self._db, r[0]) for r in rows]

    def order(self, client_order_id: str) -> JournalOrder | None:
        return self._order(self._db, client_order_id)

    def _order(self, db, client_order_id: str) -> JournalOrder | None:
        row = db.execute(
            "SELECT client_order_id, intent_id, leg, slice, attempt, purpose, venue, symbol, "
            "side, quantity, reduce_only, state, filled, delivered, average_price, fees, "
            "venue_order_id, fees_pending FROM orders WHERE client_order_id = ?",
            (client_order_id,)).fetchone()
        if row is None:
            return None
        return JournalOrder(
            row[0], row[1], Leg(row[2]), row[3], row[4], Purpose(row[5]), row[6], row[7],
            Side(row[8]), Decimal(row[9]), bool(row[10]), OrderEvent(row[11]),
            Decimal(row[12]), Decimal(row[13]), None if row[14] is None else Decimal(row[14]),
            tuple(Fee(Decimal(a), c) for a, c in json.loads(row[15])), row[16], bool(row[17]))

    def positions(self, *, include_closed: bool = False) -> list[Position]:
        where = "" if include_closed else "WHERE state != 'closed'"
        rows = self._db.execute(f"SELECT * FROM positions {where} ORDER BY opened_at"
                                ).fetchall()
        return [_position(r) for r in rows]

    def position(self, position_id: str) -> Position | None:
        row = self._db.execute("SELECT * FROM positions WHERE position_id = ?",
                               (position_id,)).fetchone()
        return None if row is None else _position(row)

    def events(self, since_seq: int = 0, limit: int = 1000) -> list[dict]:
        rows = self._db.execute("SELECT seq, at, intent_id, client_order_id, kind, detail "
                                "FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                (since_seq, limit)).fetchall()
        return [{"seq": r[0], "at": r[1], "intent_id": r[2], "client_order_id": r[3],
                 "kind": r[4], "detail": json.loads(r[5]) if r[5] else None} for r in rows]

    # -- ledger ----------------------------------------------------------------------

    def set_expected_apr(self, position_id: str, apr: Decimal | float | None) -> None:
        """The net APR the strategy expected when it opened ``position_id`` (a fraction:
        0.12 = 12 %); ``perpcarry pnl`` compares the realised APR with it."""
        with self._transaction() as db:
            self._update_position(db, position_id, "expected_apr",
                                  None if apr is None else float(apr))

    def set_leverage(self, position_id: str, leverage: Decimal) -> None:
        """The leverage the perp leg was opened at: its margin is part of the capital the
        position used."""
        with self._transaction() as db:
            self._update_position(db, position_id, "leverage", str(leverage))

    def _update_position(self, db, position_id: str, column: str, value) -> None:
        changed = db.execute(f"UPDATE positions SET {column} = ? WHERE position_id = ?",
                             (value, position_id))
        if changed.rowcount != 1:
            raise JournalError(f"journal {self.path}: unknown position {position_id}")

    def entry_terms(self) -> dict[str, tuple[Decimal | None, Decimal | None]]:
        """Per position id: (expected APR at entry, leverage), each None when unknown."""
        rows = self._db.execute("SELECT position_id, expected_apr, leverage FROM positions")
        return {r[0]: (None if r[1] is None else Decimal(str(r[1])),
                       None if r[2] is None else Decimal(r[2])) for r in rows}

    def record_funding(self, payments: list[tuple[FundingPayment, str | None]]
                       ) -> list[FundingPayment]:
        """Record each (payment, position id or None) not recorded yet, in one transaction;
        the ones that were new. A payment is known by its venue and payment id, so
        recording the same payment again changes nothing."""
        new = []
        unattributed = 0
        with self._transaction() as db:
            now = _now_text(self.clock)
            for payment, position_id in payments:
                inserted = db.execute(
                    "INSERT INTO funding VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (venue, payment_id) DO NOTHING",
                    (payment.venue, payment.payment_id, payment.symbol, position_id,
                     str(payment.amount), payment.currency,
                     payment.time.astimezone(UTC).isoformat(), now))
                if inserted.rowcount:
                    new.append(payment)
                    unattributed += position_id is None
            if new:
                self._event(db, "funding", None, None,
                            {"payments": len(new), "unattributed": unattributed})
        return new

    def last_funding_time(self, venue: str) -> datetime | None:
        """When the newest payment recorded for ``venue`` settled."""
        row = self._db.execute("SELECT max(time) FROM funding WHERE venue = ?",
                               (venue,)).fetchone()
        return None if row[0] is None else datetime.fromisoformat(row[0])

    def funding(self, since: datetime | None = None) -> list[RecordedFunding]:
        """Recorded payments settled at or after ``since`` (all without it), oldest first."""
        # Times are ISO text in UTC, which sorts and compares as the instants do.
        rows = self._db.execute(
            "SELECT venue, symbol, amount, currency, time, payment_id, position_id "
            "FROM funding WHERE time >= ? ORDER BY time, venue, payment_id",
            ("" if since is None else since.astimezone(UTC).isoformat(),)).fetchall()
        return [RecordedFunding(FundingPayment(r[0], r[1], Decimal(r[2]), r[3],
                                               datetime.fromisoformat(r[4]), r[5]), r[6])
                for r in rows]

    def fills(self) -> list[PositionFill]:
        """Every order that filled something, with its position and when it was last
        updated (the time of its last fill or fee), oldest first."""
        rows = self._db.execute(
            "SELECT i.position_id, o.client_order_id, o.updated_at FROM orders o "
            "JOIN intents i ON i.intent_id = o.intent_id ORDER BY o.updated_at").fetchall()
        fills = []
        for position_id, client_order_id, updated_at in rows:
            order = self._order(self._db, client_order_id)
            if order.filled > 0:
                fills.append(PositionFill(position_id, order,
                                          datetime.fromisoformat(updated_at)))
        return fills


def _intent(row) -> Intent:
    return Intent(row[0], row[1], row[2], row[3], row[4], row[5], row[6], Decimal(row[7]),
                  row[8], tuple(Decimal(q) for q in json.loads(row[9])), IntentState(row[10]),
                  row[11], datetime.fromisoformat(row[12]))


def _position(row) -> Position:
    return Position(row[0], row[1], row[2], row[3], row[4], Decimal(row[5]), Decimal(row[6]),
                    None if row[7] is None else Decimal(row[7]),
                    None if row[8] is None else Decimal(row[8]),
                    {k: Decimal(v) for k, v in json.loads(row[9]).items()},
                    PositionState(row[10]), datetime.fromisoformat(row[11]),
                    None if row[12] is None else datetime.fromisoformat(row[12]),
                    None if row[13] is None else datetime.fromisoformat(row[13]))


def _text(amount: Decimal | None) -> str | None:
    """A cost as stored: NULL when unknown."""
    return None if amount is None else str(amount)


def _lock(path: Path) -> int:
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise JournalError(f"journal {path}: cannot open its lock file {lock_path}: "
                           f"{err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise JournalError(f"journal {path} is in use by another trading process "
                           f"(pid {holder}); stop it first") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to ``SCHEMA_VERSION``, each step in one transaction. The version is
    read again under the write lock, so two processes opening a new journal at once do not
    both create it."""
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JournalError(f"journal {path}: schema version {version} is newer than "
                                   f"this perpcarry understands ({SCHEMA_VERSION}); upgrade "
                                   "perpcarry")
            if version == SCHEMA_VERSION:
                db.execute("COMMIT")
                return
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


# -- ledger records ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedFunding:
    """A funding payment as the journal holds it; ``position_id`` None: no journal position
    held the perp when it settled."""

    payment: FundingPayment
    position_id: str | None


@dataclass(frozen=True, slots=True)
class PositionFill:
    """An order of a position that filled something, and when it was last updated."""

    position_id: str
    order: JournalOrder
    at: datetime
