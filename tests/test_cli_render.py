"""The tables read whole in an ordinary terminal: at 80, 100 and 160 columns no line is
wider than the terminal, nothing is cut ("…"), and every number the JSON output holds
appears as a whole cell of its row, unless its column is named as left out."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

WIDTHS = (80, 100, 160)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def _money(value) -> str:
    return f"{float(value):,.2f}"


def _render(run_cli, monkeypatch, width: int, *args: str) -> tuple[str, dict]:
    monkeypatch.setenv("COLUMNS", str(width))
    text = run_cli(*args)
    assert text.exit_code == 0, text.stderr
    data = run_cli(*args, "--json")
    assert data.exit_code == 0, data.stderr
    for line in text.stdout.splitlines():
        assert len(line) <= width, line
    assert "…" not in text.stdout
    return text.stdout, json.loads(data.stdout)


def _rows(text: str) -> list[list[str]]:
    """Every table row as its cells, stripped."""
    return [[cell.strip() for cell in line.strip("│").split("│")]
            for line in text.splitlines() if line.startswith("│")]


def _hidden(text: str) -> set[str]:
    """The columns the output names as left out at this width."""
    for line in text.splitlines():
        if line.startswith("(hidden at this width: "):
            return set(line.removeprefix("(hidden at this width: ").split("; ")[0].split(", "))
    return set()


def _assert_cells(rows, key: tuple[str, str], expected: dict[str, str],
                  hidden: set[str]) -> None:
    """The row holding the two ``key`` cells side by side holds each expected cell whole,
    except in the columns left out."""
    matches = [cells for cells in rows
               if any(cells[i:i + 2] == list(key) for i in range(len(cells) - 1))]
    assert len(matches) == 1, (key, matches)
    for column, value in expected.items():
        if column not in hidden:
            assert value in matches[0], (column, value, matches[0])


@pytest.mark.parametrize("width", WIDTHS)
def test_scan_tables_at_width(run_cli, monkeypatch, width):
    text, data = _render(run_cli, monkeypatch, width, "scan", "--offline")
    rows, hidden = _rows(text), _hidden(text)
    assert len(data["rows"]) > 50 and data["reverse_rows"]
    if width == 160:
        assert hidden == set()
    for row in data["rows"]:
        cost = f"{row['round_trip_cost_bps']:.1f}" + ("*" if row["spread_cost_bps"] is None
                                                        else "")
        _assert_cells(rows, (row["venue"], row["pair"]), {
            "net APR": _pct(row["net_apr"]), "APR mean": _pct(row["apr_expected"]),
            "APR now": _pct(row["apr_now"]), "cost bps": cost,
            "rate": f"{float(row['funding_rate']) * 100:.4f}%",
            "int": f"{row['interval_hours']}h",
            "b/e h": "inf" if row["break_even_hours"] is None
            else f"{row['break_even_hours']:.0f}"}, hidden)
    for row in data["reverse_rows"]:
        _assert_cells(rows, (row["venue"], row["pair"]), {
            "APR mean": _pct(row["apr_expected"]), "APR now": _pct(row["apr_now"]),
            "rate": f"{float(row['funding_rate']) * 100:.4f}%"}, hidden)
    for venue in data["venues"]:
        _assert_cells(rows, (venue["venue"], str(venue["candidates"])), {
            "best net APR": _pct(venue["best_net_apr"]),
            "median net APR": _pct(venue["median_net_apr"])}, hidden)
    # The legend: one line per venue, and the reverse trade named once, in the title.
    legend = [line for line in text.splitlines() if line.startswith(("binance: taker",
                                                                     "bybit: taker",
                                                                     "okx: taker"))]
    assert len(legend) == 3
    assert "recorded session" not in text and text.count("short spot on margin") == 1


@pytest.mark.parametrize("width", WIDTHS)
def test_plan_tables_at_width(run_cli, monkeypatch, width):
    text, data = _render(run_cli, monkeypatch, width, "plan", "--offline", "--capital",
                         "100000")
    rows, hidden = _rows(text), _hidden(text)
    assert data["positions"]
    if width == 160:
        assert hidden == set()
    for p in data["positions"]:
        _assert_cells(rows, (p["venue"], p["pair_label"]), {
            "capital": _money(p["capital"]), "net APR": _pct(p["net_apr"]),
            "notional /leg": _money(p["notional"]), "margin": _money(p["margin"]),
            "base qty": format(Decimal(p["base_quantity"]).normalize(), "f"),
            "daily funding": _money(p["expected_daily_funding"])}, hidden)
    for usage in (*data["venues"], *data["assets"]):
        _assert_cells(rows, (usage["kind"], usage["name"]), {
            "used": _money(usage["used"]), "cap": _money(usage["cap"]),
            "LP optimum": _money(usage["lp_used"])}, hidden)


@pytest.mark.parametrize("width", WIDTHS)
def test_backtest_tables_at_width(run_cli, monkeypatch, width):
    text, data = _render(run_cli, monkeypatch, width, "backtest", "--no-plots")
    rows, hidden = _rows(text), _hidden(text)
    if width == 160:
        assert hidden == set()
    for kind in ("per_venue", "per_asset"):
        assert data[kind]
        for name, row in data[kind].items():
            _assert_cells(rows, (name, _money(row["funding_income"])), {
                "funding": _money(row["funding_income"]), "net": _money(row["net_pnl"]),
                "fees+spread": _money(row["fees_paid"] + row["spread_paid"]),
                "basis": _money(row["basis_pnl"]), "entries": str(row["entries"])}, hidden)
    for figure in (_money(data["final_equity"]), _money(data["funding_income"]),
                   f"{data['total_return']:+.2%}"):
        assert figure in text


@settings(max_examples=25, deadline=None)
@given(width=st.integers(30, 200), data=st.data())
def test_fitted_tables_keep_every_cell_whole_and_drop_no_more_than_needed(width, data):
    import io

    from rich.console import Console

    from perpcarry.cli.tables import Column, fitted_table

    count = data.draw(st.integers(3, 9))
    columns = [Column("name", justify="left")] + [
        Column(f"col\n{i}", drop=i) for i in range(1, count)]
    cell = st.from_regex(r"-?[0-9]{1,9}\.[0-9]{2}%?", fullmatch=True)
    rows = data.draw(st.lists(st.lists(cell, min_size=count, max_size=count), min_size=1,
                              max_size=6))
    console = Console(width=width, file=io.StringIO(), highlight=False, markup=False)
    table, left_out = fitted_table(console, "title", columns, rows)
    console.print(table)
    lines = console.file.getvalue().splitlines()
    shown = [c for c in columns if c.header.replace("\n", " ") not in left_out]
    natural = console.measure(table, options=console.options.update_width(10_000)).maximum
    if natural <= width:  # it fits: every cell whole, in its row
        assert "…" not in "".join(lines) and all(len(line) <= width for line in lines)
        for row in rows:
            kept = [value for value, c in zip(row, columns, strict=True) if c in shown]
            assert any(all(value in line for value in kept) for line in lines)
    else:  # only the columns that are never dropped are left, and they are too wide
        assert all(c.drop == 0 for c in shown)
    if left_out:  # the last column dropped would not have fitted
        last = min((c for c in columns if c not in shown), key=lambda c: c.drop)
        wider, _ = fitted_table(console, None, [Column(c.header) for c in columns
                                                if c in shown or c is last],
            [[v for v, c in zip(row, columns, strict=True) if c in shown or c is last]
             for row in rows])
        assert console.measure(wider, options=console.options.update_width(10_000)
                               ).maximum > width
