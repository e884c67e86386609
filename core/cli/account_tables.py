"""The tables of ``perpcarry account`` and ``perpcarry orders``.

Numbers are never cut to fit: a table wider than the terminal is printed at its own width
(the terminal wraps the line) rather than squeezed into ellipses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from perpcarry.cli.account import fraction, number

PLAIN = {"highlight": False, "markup": False, "emoji": False}


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title, title_justify="left")
    for name in columns:
        numeric = name not in {"venue", "wallet", "currency", "symbol", "side", "type",
                               "status", "client id", "venue id", "price source", "time"}
        table.add_column(name, justify="right" if numeric else "left", no_wrap=True)
    return table


def print_table(console: Console, table: Table) -> None:
    """``table`` at the width its cells need, however narrow the console."""
    needed = Measurement.get(console, console.options.update(max_width=100_000), table).maximum
    if needed > console.width:
        console = Console(**PLAIN, width=needed)
    console.print(table)


def render_account(results: dict[str, Any], failures: dict[str, str], paper: bool,
                   offline: bool, data_dir: Path) -> None:
    console = Console(**PLAIN)
    if paper:
        source = "the bundled snapshots" if offline else "live"
        console.print(f"paper accounts in {data_dir / 'paper'}; market data: {source}")
    balances = _table("Balances per wallet",
                      ("venue", "wallet", "currency", "free", "used", "total"))
    positions = _table("Perp positions", ("venue", "symbol", "side", "quantity", "entry",
                                          "mark", "unrealised PnL", "margin ratio",
                                          "liq. price", "liq. distance"))
    open_orders = _table("Open orders", ("venue", "symbol", "client id", "side", "type",
                                         "quantity", "filled", "status"))
    for venue_id, found in results.items():
        for wallet, rows in found["balances"].items():
            if not rows:
                balances.add_row(venue_id, wallet.value, "(empty)", "", "", "")
            for b in rows.values():
                balances.add_row(venue_id, wallet.value, b.currency, number(b.free),
                                 number(b.used), number(b.total))
        for p in found["positions"]:
            positions.add_row(venue_id, p.symbol, "short" if p.side.value == "sell" else "long",
                              number(p.quantity), number(p.entry_price), number(p.mark_price),
                              number(p.unrealised_pnl), fraction(p.margin_ratio),
                              number(p.liquidation_price), fraction(p.liquidation_distance))
        for o in found["open_orders"]:
            open_orders.add_row(venue_id, o.symbol, o.client_order_id, o.side.value,
                                o.type.value, number(o.quantity), number(o.filled_quantity),
                                o.status.value)
    print_table(console, balances)
    for table, empty in ((positions, "no open perp positions"),
                         (open_orders, "no open orders")):
        if table.row_count:
            print_table(console, table)
        else:
            console.print(empty)
    _failures(console, failures)


def render_orders(results: dict[str, list], failures: dict[str, str]) -> None:
    console = Console(**PLAIN)
    table = _table("Recent orders", ("time", "venue", "symbol", "client id", "venue id",
                                     "side", "type", "status", "quantity", "filled",
                                     "avg price", "fees", "price source"))
    for venue_id, found in results.items():
        for o in found:
            fees = ", ".join(f"{number(f.amount)} {f.currency}" for f in o.fees) or "-"
            table.add_row(f"{o.created_at:%Y-%m-%d %H:%M:%S}" if o.created_at else "n/a",
                          venue_id, o.symbol, o.client_order_id, o.venue_order_id or "-",
                          o.side.value, o.type.value, o.status.value, number(o.quantity),
                          number(o.filled_quantity), number(o.average_price), fees,
                          o.price_source or "-")
    if table.row_count:
        print_table(console, table)
    else:
        console.print("no recent orders")
    _failures(console, failures)


def _failures(console: Console, failures: dict[str, str]) -> None:
    for venue_id, reason in failures.items():
        console.print(f"{venue_id} failed: {reason}", style="red")
