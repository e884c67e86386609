"""The paper venue's account state: one SQLite file per venue in the data dir.

One file per venue, not one per data dir: venues share nothing (no transaction spans two),
so a reset of one venue is the deletion of its file, and two processes trading on different
venues never wait for each other's write lock.

WAL with ``synchronous=FULL``: a transaction is on disk when ``COMMIT`` returns, and a fill
is acknowledged only after its transaction (order row, balances, position) commits, so the
account survives a crash of the bot as an exchange's would. A replay's accounts
(``durable=False``) commit with ``synchronous=NORMAL`` instead: still consistent after a crash
of the process, but a commit is not waited onto the disk, because a replay settles funding
thousands of times in seconds and is rerun, not recovered. ``PRAGMA user_version`` holds
the schema version.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from perpcarry.domain.errors import LocalStateError
from perpcarry.domain.parsing import from_ms, to_ms
from perpcarry.venues.orders import (
    Fee,
    OrderState,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    Transfer,
    Wallet,
)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE balances (
    wallet TEXT NOT NULL, currency TEXT NOT NULL, amount TEXT NOT NULL,
    PRIMARY KEY (wallet, currency)
);
CREATE TABLE orders (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    client_order_id TEXT NOT NULL UNIQUE, symbol TEXT NOT NULL, base TEXT NOT NULL,
    side TEXT NOT NULL, type TEXT NOT NULL, status TEXT NOT NULL, quantity TEXT NOT NULL,
    filled_quantity TEXT NOT NULL, average_price TEXT, limit_price TEXT, time_in_force TEXT,
    fees TEXT NOT NULL, reduce_only INTEGER NOT NULL, price_source TEXT,
    created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL
);
CREATE INDEX orders_by_symbol ON orders (symbol, created_ms);
-- One-way mode: one signed position per perp (negative: short).
CREATE TABLE positions (
    symbol TEXT PRIMARY KEY, quantity TEXT NOT NULL, entry_price TEXT NOT NULL,
    funding_settled_ms INTEGER NOT NULL
);
CREATE TABLE leverage (symbol TEXT PRIMARY KEY, leverage TEXT NOT NULL);
CREATE TABLE funding_payments (
    payment_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, amount TEXT NOT NULL,
    currency TEXT NOT NULL, rate TEXT NOT NULL, time_ms INTEGER NOT NULL
);
CREATE TABLE transfers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, currency TEXT NOT NULL, amount TEXT NOT NULL,
    from_wallet TEXT NOT NULL, to_wallet TEXT NOT NULL, time_ms INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class PositionRow:
    symbol: str
    quantity: Decimal  # signed base units: negative is short
    entry_price: Decimal
    funding_settled: datetime  # funding is settled up to and including this instant


@dataclass(frozen=True, slots=True)
class OrderRow:
    """An order as stored: its state plus the terms a resting order is matched on."""

    state: OrderState
    limit_price: Decimal | None
    time_in_force: TimeInForce | None


@dataclass(frozen=True, slots=True)
class PaymentRow:
    payment_id: str
    symbol: str
    amount: Decimal
    currency: str
    rate: Decimal
    time: datetime


def state_path(data_dir: Path, venue_id: str) -> Path:
    """Where ``venue_id``'s paper account lives."""
    return data_dir / "paper" / f"{venue_id}.sqlite"


def delete_state(path: Path) -> bool:
    """Remove an account file and its WAL companions; whether there was one."""
    existed = path.exists()
    for suffix in ("", "-wal", "-shm"):
        with suppress(FileNotFoundError):
            path.with_name(path.name + suffix).unlink()
    return existed


class PaperStore:
    """One venue's paper account in SQLite. Every write happens inside :meth:`transaction`."""

    def __init__(self, path: Path, venue_id: str, starting_wallet: Wallet,
                 starting_balances: dict[str, Decimal], now: datetime,
                 durable: bool = True) -> None:
        self.path = path
        self.venue_id = venue_id
        self._db: sqlite3.Connection | None = None
        try:
            self._open(path, venue_id, starting_wallet, starting_balances, now, durable)
        except BaseException:
            if self._db is not None:  # a refused file is not held open
                self._db.close()
            raise

    def _open(self, path: Path, venue_id: str, starting_wallet: Wallet,
              starting_balances: dict[str, Decimal], now: datetime, durable: bool) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are opened explicitly, BEGIN IMMEDIATE, so the
            # reads a fill is decided on and its writes hold one write lock.
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._create(starting_wallet, starting_balances, now)
            elif version != SCHEMA_VERSION:
                raise LocalStateError(
                    f"paper account {path}: schema version {version}, this perpcarry reads "
                    f"{SCHEMA_VERSION}; reset it with `perpcarry paper reset --venues "
                    f"{venue_id}`")
        except sqlite3.DatabaseError as err:
            raise LocalStateError(f"paper account {path}: {err}; reset it with `perpcarry "
                                  f"paper reset --venues {venue_id}`") from None
        except OSError as err:
            raise LocalStateError(f"paper account {path}: {err.strerror}") from None

    def _create(self, wallet: Wallet, balances: dict[str, Decimal], now: datetime) -> None:
        with self.transaction():
            # A second process may have created it between the version read and the lock.
            if self._db.execute("PRAGMA user_version").fetchone()[0]:
                return
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("venue", self.venue_id), ("created_ms", str(to_ms(now))),
                ("starting_wallet", wallet.value),
                ("starting_balances", json.dumps({c: str(a) for c, a in balances.items()})),
            ])
            for currency, amount in balances.items():
                self.add_balance(wallet, currency, amount)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction, committed (on disk) when the block ends, rolled back if it
        raises."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- meta ----------------------------------------------------------------------------

    def started(self) -> tuple[datetime, Wallet, dict[str, Decimal]]:
        """When the account was created, and the wallet and balances it started with."""
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        balances = {c: Decimal(a) for c, a in json.loads(meta["starting_balances"]).items()}
        return from_ms(int(meta["created_ms"])), Wallet(meta["starting_wallet"]), balances

    # -- balances ------------------------------------------------------------------------

    def balances(self) -> dict[Wallet, dict[str, Decimal]]:
        found: dict[Wallet, dict[str, Decimal]] = {}
        for wallet, currency, amount in self._db.execute(
                "SELECT wallet, currency, amount FROM balances ORDER BY wallet, currency"):
            found.setdefault(Wallet(wallet), {})[currency] = Decimal(amount)
        return found

    def balance(self, wallet: Wallet, currency: str) -> Decimal:
        row = self._db.execute("SELECT amount FROM balances WHERE wallet=? AND currency=?",
                               (wallet.value, currency)).fetchone()
        return Decimal(row[0]) if row else Decimal(0)

    def add_balance(self, wallet: Wallet, currency: str, delta: Decimal) -> None:
        amount = self.balance(wallet, currency) + delta
        self._db.execute("INSERT OR REPLACE INTO balances VALUES (?, ?, ?)",
                         (wallet.value, currency, str(amount)))

    # -- orders --------------------------------------------------------------------------

    def insert_order(self, row: OrderRow) -> None:
        s = row.state
        self._db.execute(
            "INSERT INTO orders (client_order_id, symbol, base, side, type, status, quantity, "
            "filled_quantity, average_price, limit_price, time_in_force, fees, reduce_only, "
            "price_source, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?, ?, ?)",
            (s.client_order_id, s.symbol, s.base, s.side.value, s.type.value, s.status.value,
             str(s.quantity), str(s.filled_quantity), _text(s.average_price),
             _text(row.limit_price), row.time_in_force.value if row.time_in_force else None,
             _fees_json(s.fees), int(s.reduce_only), s.price_source, to_ms(s.created_at),
             to_ms(s.updated_at)))

    def update_order(self, state: OrderState) -> None:
        self._db.execute(
            "UPDATE orders SET status=?, filled_quantity=?, average_price=?, fees=?, "
            "price_source=?, updated_ms=? WHERE client_order_id=?",
            (state.status.value, str(state.filled_quantity), _text(state.average_price),
             _fees_json(state.fees), state.price_source, to_ms(state.updated_at),
             state.client_order_id))

    def order(self, client_order_id: str) -> OrderRow | None:
        row = self._db.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE client_order_id=?",
                               (client_order_id,)).fetchone()
        return None if row is None else self._order_row(row)

    def open_orders(self, symbol: str | None = None) -> list[OrderRow]:
        rows = self._db.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE status IN (?, ?) "
            "AND (? IS NULL OR symbol = ?) ORDER BY seq",
            (OrderStatus.NEW.value, OrderStatus.PARTIALLY_FILLED.value, symbol, symbol))
        return [self._order_row(r) for r in rows]

    def orders(self, symbol: str, since: datetime | None) -> list[OrderRow]:
        rows = self._db.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE symbol=? AND created_ms >= ? "
            "ORDER BY seq", (symbol, to_ms(since) if since else 0))
        return [self._order_row(r) for r in rows]

    def order_count(self) -> int:
        return self._db.execute("SELECT count(*) FROM orders").fetchone()[0]

    def _order_row(self, row: tuple) -> OrderRow:
        (cid, seq, symbol, base, side, kind, status, quantity, filled, average, limit, tif,
         fees, reduce_only, source, created, updated) = row
        state = OrderState(
            venue=self.venue_id, symbol=symbol, base=base, client_order_id=cid,
            venue_order_id=f"paper-{seq}", side=Side(side), type=OrderType(kind),
            status=OrderStatus(status), quantity=Decimal(quantity),
            filled_quantity=Decimal(filled), average_price=_decimal(average),
            fees=tuple(Fee(Decimal(a), c) for a, c in json.loads(fees)),
            reduce_only=bool(reduce_only), created_at=from_ms(created),
            updated_at=from_ms(updated), price_source=source)
        return OrderRow(state, _decimal(limit), TimeInForce(tif) if tif else None)

    # -- positions and leverage ----------------------------------------------------------

    def positions(self) -> list[PositionRow]:
        return [PositionRow(symbol, Decimal(q), Decimal(entry), from_ms(settled))
                for symbol, q, entry, settled in self._db.execute(
                    "SELECT symbol, quantity, entry_price, funding_settled_ms FROM positions "
                    "ORDER BY symbol")]

    def position(self, symbol: str) -> PositionRow | None:
        return next((p for p in self.positions() if p.symbol == symbol), None)

    def put_position(self, row: PositionRow) -> None:
        if not row.quantity:
            self._db.execute("DELETE FROM positions WHERE symbol=?", (row.symbol,))
            return
        self._db.execute("INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?)",
                         (row.symbol, str(row.quantity), str(row.entry_price),
                          to_ms(row.funding_settled)))

    def leverage(self, symbol: str) -> Decimal | None:
        row = self._db.execute("SELECT leverage FROM leverage WHERE symbol=?",
                               (symbol,)).fetchone()
        return Decimal(row[0]) if row else None

    def set_leverage(self, symbol: str, leverage: Decimal) -> None:
        self._db.execute("INSERT OR REPLACE INTO leverage VALUES (?, ?)",
                         (symbol, str(leverage)))

    # -- funding and transfers -----------------------------------------------------------

    def add_payment(self, payment: PaymentRow) -> None:
        self._db.execute("INSERT INTO funding_payments VALUES (?, ?, ?, ?, ?, ?)",
                         (payment.payment_id, payment.symbol, str(payment.amount),
                          payment.currency, str(payment.rate), to_ms(payment.time)))

    def payments(self, since: datetime, until: datetime | None) -> list[PaymentRow]:
        rows = self._db.execute(
            "SELECT payment_id, symbol, amount, currency, rate, time_ms FROM funding_payments "
            "WHERE time_ms >= ? AND (? IS NULL OR time_ms <= ?) ORDER BY time_ms, symbol",
            (to_ms(since), *(2 * [to_ms(until) if until else None])))
        return [PaymentRow(pid, symbol, Decimal(amount), currency, Decimal(rate), from_ms(t))
                for pid, symbol, amount, currency, rate, t in rows]

    def add_transfer(self, currency: str, amount: Decimal, from_wallet: Wallet,
                     to_wallet: Wallet, now: datetime) -> Transfer:
        self._db.execute(
            "INSERT INTO transfers (currency, amount, from_wallet, to_wallet, time_ms) "
            "VALUES (?, ?, ?, ?, ?)",
            (currency, str(amount), from_wallet.value, to_wallet.value, to_ms(now)))
        seq = self._db.execute("SELECT last_insert_rowid()").fetchone()[0]
        return Transfer(self.venue_id, f"paper-t{seq}", currency, amount, from_wallet,
                        to_wallet, now)


_ORDER_COLUMNS = ("client_order_id, seq, symbol, base, side, type, status, quantity, "
                  "filled_quantity, average_price, limit_price, time_in_force, fees, "
                  "reduce_only, price_source, created_ms, updated_ms")


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _fees_json(fees: tuple[Fee, ...]) -> str:
    return json.dumps([[str(f.amount), f.currency] for f in fees])
