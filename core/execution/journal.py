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
from perpcarry.venues.orders import Fee, Leg, OrderState, OrderStatus, Side

SCHEMA_VERSION = 2
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
    spot_cost: Decimal  # quote paid for the spot held (sold spot reduces it pro rata)
    perp_proceeds: Decimal  # quote notional of the short at entry prices
    fees: dict[str, Decimal]  # by currency
    state: PositionState
    opened_at: datetime
    closed_at: datetime | None

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

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, trading: bool,
             clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Journal:
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
            db.execute("PRAGMA synchronous=FULL")
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
        creates its position row (state opening); a close marks the position closing."""
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
                           "perp_symbol, state, opened_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
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
            return self._order(db, state.client_order_id)

    def _apply_fill(self, db, before: JournalOrder, state: OrderState) -> None:
        position_id = db.execute("SELECT position_id FROM intents WHERE intent_id = ?",
                                 (before.intent_id,)).fetchone()[0]
        row = db.execute("SELECT spot_quantity, perp_quantity, spot_cost, perp_proceeds, fees "
                         "FROM positions WHERE position_id = ?", (position_id,)).fetchone()
        spot, perp, cost, proceeds = (Decimal(v) for v in row[:4])
        fees = {k: Decimal(v) for k, v in json.loads(row[4]).items()}
        price = state.average_price or Decimal(0)
        filled = state.filled_quantity - before.filled
        delivered = state.delivered_quantity - before.delivered
        if before.leg is Leg.SPOT:
            if before.side is Side.BUY:
                spot += delivered
                cost += filled * price
            else:
                cost -= cost * delivered / spot if spot else Decimal(0)
                spot -= delivered
        elif before.side is Side.SELL:
            perp += filled
            proceeds += filled * price
        else:
            proceeds -= proceeds * filled / perp if perp else Decimal(0)
            perp -= filled
        for fee in state.fees:
            fees[fee.currency] = fees.get(fee.currency, Decimal(0)) + fee.amount
        for fee in before.fees:
            fees[fee.currency] -= fee.amount
        db.execute("UPDATE positions SET spot_quantity = ?, perp_quantity = ?, spot_cost = ?, "
                   "perp_proceeds = ?, fees = ? WHERE position_id = ?",
                   (str(spot), str(perp), str(cost), str(proceeds),
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

    def record_event(self, kind: str, detail: dict) -> None:
        """Append an event that belongs to no intent or order (a risk alarm, an action of
        the margin monitor), for the dashboard and alerts to read."""
        with self._transaction() as db:
            self._event(db, kind, None, None, detail)

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


def _intent(row) -> Intent:
    return Intent(row[0], row[1], row[2], row[3], row[4], row[5], row[6], Decimal(row[7]),
                  row[8], tuple(Decimal(q) for q in json.loads(row[9])), IntentState(row[10]),
                  row[11], datetime.fromisoformat(row[12]))


def _position(row) -> Position:
    return Position(row[0], row[1], row[2], row[3], row[4], Decimal(row[5]), Decimal(row[6]),
                    Decimal(row[7]), Decimal(row[8]),
                    {k: Decimal(v) for k, v in json.loads(row[9]).items()},
                    PositionState(row[10]), datetime.fromisoformat(row[11]),
                    None if row[12] is None else datetime.fromisoformat(row[12]))


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
