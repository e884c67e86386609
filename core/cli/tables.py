"""Tables that fit the terminal whole: a number or a name is never cut. Columns that do not
fit are left out, the least important first, and the caller says which."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

# Piped output is not wrapped at rich's 80-column default; COLUMNS, when set, still wins.
PIPED_WIDTH = 160


def output_console() -> Console:
    """The console commands print tables on: the terminal's width, else $COLUMNS, else
    :data:`PIPED_WIDTH`. Cells are plain text: no markup (a "[" in a symbol), emoji or
    highlighting."""
    piped = not sys.stdout.isatty() and not os.environ.get("COLUMNS", "").isdigit()
    return Console(highlight=False, markup=False, emoji=False,
                   width=PIPED_WIDTH if piped else None)


@dataclass(frozen=True)
class Column:
    """``header`` may hold a line break (``"net\\nAPR"``) to stay narrow; ``drop`` orders
    which columns go first when the width runs out (higher goes first, 0 never)."""

    header: str
    drop: int = 0
    justify: str = "right"


def fitted_table(console: Console, title: str | None, columns: Sequence[Column],
                 rows: Sequence[Sequence[str]]) -> tuple[Table, list[str]]:
    """The table with as many columns as fit ``console.width`` at their full width, and the
    headers of those left out (in one line each)."""
    widths = [max(cell_len(line) for text in (column.header, *(row[i] for row in rows))
                  for line in text.split("\n")) for i, column in enumerate(columns)]
    shown = list(range(len(columns)))
    # rich's default table: a space of padding on each side of a cell, a rule between
    # columns and at both edges. Summed here: measuring the table walks every cell again.
    while sum(widths[i] + 3 for i in shown) + 1 > console.width:
        droppable = [i for i in shown if columns[i].drop > 0]
        if not droppable:
            break
        shown.remove(max(droppable, key=lambda i: columns[i].drop))
    table = Table(title=title, title_justify="left")
    for i in shown:
        table.add_column(columns[i].header, justify=columns[i].justify, no_wrap=True)
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    left_out = [columns[i].header.replace("\n", " ") for i in range(len(columns))
                if i not in shown]
    return table, left_out


def hidden_note(left_out: list[str]) -> str | None:
    """One line naming the columns a narrow terminal left out."""
    if not left_out:
        return None
    return f"(hidden at this width: {', '.join(left_out)}; see --json)"
