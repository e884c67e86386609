"""``perpcarry backtest``: replay a carry configuration on real funding history.

Registered in perpcarry.cli.app with ``app.command()(backtest)``. Imports stay light at
module level: numpy, polars and matplotlib load only when the command runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from perpcarry.cli.common import path_option, split_option
from perpcarry.domain.errors import UsageError

# Options that override a field of [allocator] or [backtest]; the others are [strategy]'s.
ALLOCATOR_OPTIONS = ("leverage", "max_venue_share", "max_asset_share", "max_pair_share",
                     "max_positions")
BACKTEST_OPTIONS = ("capital", "cadence_hours")
# Rules that are off unless set: the word "off" turns one off for this run.
OPTIONAL_RULES = ("exit_funding_below", "spike_exit", "enter_premium", "exit_premium")


def parse_date(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected a date such as 2024-01-31") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def backtest(
    data: Annotated[str | None, typer.Option(
        "--data", help="Funding history file or folder to import, or the venue plugins' "
                       "cache (<cache_dir>/funding_history.sqlite) (default: the bundled real "
                       "history, see perpcarry/backtest/data/PROVENANCE.md).")] = None,
    venues: Annotated[list[str] | None, typer.Option(
        "--venue", "-v", help="Venue to include (repeat or comma-separate; default all).")] = None,
    symbols: Annotated[list[str] | None, typer.Option(
        "--symbol", "-s", help="Base asset (BTC) or perp symbol (BTC/USDT:USDT).")] = None,
    start: Annotated[str | None, typer.Option(
        help="First day, UTC (2023-01-01). Without --start/--end: the stretch of the data "
             "(no gap over 7 days) where the selected venues all have data.")] = None,
    end: Annotated[str | None, typer.Option(help="Last instant, UTC.")] = None,
    capital: Annotated[float | None, typer.Option(help="Starting capital.")] = None,
    cadence_hours: Annotated[float | None, typer.Option(
        "--cadence-hours", help="Hours between rebalances (default: shortest funding "
                                "interval in the data).")] = None,
    enter_apr: Annotated[float | None, typer.Option(
        "--enter-apr", help="Enter above this net APR (0.1 = 10 %).")] = None,
    exit_apr: Annotated[float | None, typer.Option(
        "--exit-apr", help="Exit below this net APR.")] = None,
    min_hold_hours: Annotated[float | None, typer.Option("--min-hold-hours")] = None,
    cooldown_hours: Annotated[float | None, typer.Option("--cooldown-hours")] = None,
    spread_cost: Annotated[float | None, typer.Option(
        "--spread-cost", help="Spot + perp half-spreads paid per trade (fraction).")] = None,
    estimator: Annotated[str | None, typer.Option(
        help="current | mean | ewma | conservative.")] = None,
    horizon_days: Annotated[float | None, typer.Option("--horizon-days")] = None,
    window_days: Annotated[float | None, typer.Option(
        "--window-days", help="Days of history the mean estimator averages.")] = None,
    ewma_halflife_days: Annotated[float | None, typer.Option(
        "--ewma-halflife-days", help="Half-life of the ewma estimator.")] = None,
    leverage: Annotated[float | None, typer.Option(
        help="Perp leverage (sets the margin each position uses; [allocator] leverage).")
    ] = None,
    max_venue_share: Annotated[float | None, typer.Option(
        "--max-venue-share", help="Cap per venue, share of equity.")] = None,
    max_asset_share: Annotated[float | None, typer.Option(
        "--max-asset-share", help="Cap per asset, share of equity.")] = None,
    max_pair_share: Annotated[float | None, typer.Option(
        "--max-pair-share", help="Cap per pair, share of equity.")] = None,
    max_positions: Annotated[int | None, typer.Option("--max-positions")] = None,
    exit_funding_below: Annotated[str | None, typer.Option(
        "--exit-funding-below", help="Leave when the last rate per period is below this "
                                     "(-0.002 = -0.2 %), even inside the minimum hold; "
                                     "off: never.")] = None,
    entry_blackout_minutes: Annotated[float | None, typer.Option(
        "--entry-blackout-minutes", help="No entry this many minutes before the pair's next "
                                         "settlement.")] = None,
    spike_exit: Annotated[str | None, typer.Option(
        "--spike-exit", help="Leave when the mark moved more than this fraction since "
                             "entry (0.3 = 30 %); off: never.")] = None,
    enter_premium: Annotated[str | None, typer.Option(
        "--enter-premium", help="Enter only when perp / spot - 1 is at least this; off: "
                                "any.")] = None,
    exit_premium: Annotated[str | None, typer.Option(
        "--exit-premium", help="Leave when perp / spot - 1 falls below this (after the "
                               "minimum hold); off: never.")] = None,
    margin_floor: Annotated[float | None, typer.Option(
        "--margin-floor", help="Top a short's margin up when it falls below this x notional "
                               "/ leverage (1.0: the buffer is used up).")] = None,
    out: Annotated[str | None, typer.Option(
        "--out", help="Folder for the charts (default ./backtest-out).")] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the charts.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """Replay the carry strategy on real funding history: returns, risk, costs, charts."""
    from perpcarry.cli import common as cli

    _run(cli, data=path_option(data, "--data"), venues=split_option(venues, "--venues"),
         symbols=split_option(symbols, "--symbols"), start=parse_date(start, "--start"),
         end=parse_date(end, "--end"), no_plots=no_plots, as_json=as_json, out=out, overrides={
             "capital": capital, "cadence_hours": cadence_hours, "enter_apr": enter_apr,
             "exit_apr": exit_apr, "min_hold_hours": min_hold_hours,
             "cooldown_hours": cooldown_hours, "spread_cost": spread_cost,
             "estimator": estimator, "horizon_days": horizon_days,
             "window_days": window_days, "ewma_halflife_days": ewma_halflife_days,
             "leverage": leverage, "max_venue_share": max_venue_share,
             "max_asset_share": max_asset_share, "max_pair_share": max_pair_share,
             "max_positions": max_positions, "exit_funding_below": exit_funding_below,
             "entry_blackout_minutes": entry_blackout_minutes, "spike_exit": spike_exit,
             "enter_premium": enter_premium, "exit_premium": exit_premium,
             "margin_floor": margin_floor})


def validated_settings(config, overrides: dict) -> tuple:
    """(BacktestSettings, AllocatorConfig): the config's ``[strategy]``, ``[backtest]`` and
    ``[allocator]`` with the non-None ``overrides`` (field names of any; "off" for an
    optional rule turns it off) applied, checked as the backtest checks them;
    ``InvalidValue`` naming the field of the first invalid value. A sweep checks each
    combination of its grid with this same function."""
    from pydantic import ValidationError

    from perpcarry.allocation.allocator import Limits
    from perpcarry.backtest.run import BacktestSettings, margin_model
    from perpcarry.domain.errors import InvalidValue

    given = {k: _rule_value(v) if k in OPTIONAL_RULES else v
             for k, v in overrides.items() if v is not None}
    section = {k: "allocator" if k in ALLOCATOR_OPTIONS else "backtest"
               if k in BACKTEST_OPTIONS else "strategy" for k in given}
    models = config.settings
    try:
        backtest, strategy, allocator = (
            base.model_validate({**base.model_dump(), **{
                k: v for k, v in given.items() if section[k] == name}})
            for name, base in (("backtest", models.backtest), ("strategy", models.strategy),
                               ("allocator", models.allocator)))
    except ValidationError as err:
        first = err.errors()[0]
        raise InvalidValue(str(first["loc"][0]), first["input"],
                           rule=first["msg"].removeprefix("Value error, ")) from None
    Limits.from_config(allocator, capital=backtest.capital)  # cross-field rules
    margin_model(allocator, strategy)
    return BacktestSettings(backtest=backtest, strategy=strategy), allocator


def _rule_value(text):
    """An optional rule's flag: "off", or a number (anything else is left for validation
    to refuse, naming the flag)."""
    if not isinstance(text, str):
        return text
    if text.strip().lower() == "off":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _run(cli, *, data, venues, symbols, start, end, no_plots, as_json, out, overrides) -> None:
    from rich.progress import Progress

    from perpcarry.backtest.run import run_backtest
    from perpcarry.config.settings import AllocatorConfig

    config = cli.load()
    flags = cli.given(**{field: (f"--{field.replace('_', '-')}", value, 1)
                         for field, value in overrides.items()})
    # The allocator's limits come from [allocator], its capital from [backtest] or --capital;
    # the rules from [strategy].
    sections = {field: "allocator" for field in AllocatorConfig.model_fields} | {
        field: "backtest" for field in BACKTEST_OPTIONS} | {
        field: "strategy" for field in overrides
        if field not in ALLOCATOR_OPTIONS + BACKTEST_OPTIONS}
    with cli.value_names(config, "backtest", flags, sections):
        settings, allocator = validated_settings(config, overrides)
        out_dir = _output_folder(out, settings.backtest.out_dir, no_plots, config)
        with Progress(console=cli.err_console, transient=True,
                      disable=as_json or not cli.err_console.is_terminal) as bar:
            task = bar.add_task("backtest", total=None)
            run = run_backtest(config, settings, data=data, venues=venues, symbols=symbols,
                               start=start, end=end, allocator=allocator,
                               progress=lambda done, total: bar.update(task, completed=done,
                                                                       total=total))
            charts = []
            if not no_plots:
                from perpcarry.backtest.plots import write_charts

                bar.update(task, description="charts")
                charts = [str(p) for p in write_charts(run, out_dir)]
    summary = {**run.summary, "charts": charts}
    if as_json:
        cli.emit_json(summary)
        return
    from perpcarry.cli.tables import output_console

    _print(output_console(), summary)


def _output_folder(flag: str | None, configured: Path, no_plots: bool, config) -> Path:
    """The charts' folder, checked before any computing: a folder or a path where one can
    be made, never an existing file or an empty name."""
    import os

    from perpcarry.config.loader import source_of

    name = "--out" if flag is not None else (
        f"{source_of(('backtest', 'out_dir'), config.path)}: [backtest] out_dir")
    folder = path_option(flag, "--out") or configured
    if no_plots:
        return folder
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{name} {folder}: exists and is not a folder")
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"{name} {folder}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{name} {folder}: cannot write into {existing}")
    return folder


def _topups(m: dict, money) -> str:
    if not m["topups"]:
        return "none"
    sold = ", ".join(f"{q:.6g} {base}" for base, q in m["rebalanced_quantity"].items())
    return (f"{m['topups']} from {m['first_topup'][:10]}: {m['transfers']} transfers "
            f"({money(m['transferred'])}), {m['rebalances']} rebalances"
            + (f" (sold {sold}, cost {money(m['rebalance_cost'])})" if m["rebalances"] else ""))


def _print(console, s: dict) -> None:
    from rich.table import Table

    pct = "{:+.2%}".format
    money = "{:,.2f}".format
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column(justify="right")
    sharpe = "-" if s["sharpe"] is None else f"{s['sharpe']:.2f}"
    for label, value in (
        ("period", f"{s['start']} → {s['end']} ({s['days']:.0f} days)"),
        ("series / settlements", f"{s['series']} / {s['settlements']:,}"),
        ("rebalance", f"every {s['cadence_hours']:g}h, {s['rebalances']:,} times, "
                      f"allocator solved {s['allocator_runs']:,} times"),
        ("capital → equity", f"{money(s['capital'])} → {money(s['final_equity'])}"),
        ("total return / APR", f"{pct(s['total_return'])} / {pct(s['apr'])}"),
        ("volatility / Sharpe", f"{s['annual_volatility']:.2%} / {sharpe}"),
        ("max drawdown", f"{s['max_drawdown']:.2%}"),
        ("funding income", money(s["funding_income"])),
        ("fees / spread paid", f"{money(s['fees_paid'])} / {money(s['spread_paid'])}"),
        ("basis P&L", money(s["basis_pnl"])),
        ("turnover", f"{s['turnover']:.2f}x capital ({money(s['traded_notional'])} per leg)"),
        ("entries / exits", f"{s['entries']} / {s['exits']}"),
        ("exits by rule", ", ".join(f"{rule} {n}" for rule, n in s["exits_by_rule"].items())
         or "-"),
        ("time in market", f"{s['time_in_market']:.1%}"),
        ("margin top-ups", _topups(s["margin"], money)),
        ("liquidations", f"{s['margin']['liquidations']} (lost "
                         f"{money(s['margin']['liquidation_loss'])})"),
    ):
        head.add_row(label, value)
    console.print(head)
    from rich.text import Text

    from perpcarry.cli.tables import Column, fitted_table, hidden_note

    left_out: list[str] = []
    for title, rows in (("venue", s["per_venue"]), ("asset", s["per_asset"])):
        if not rows:
            continue
        table, hidden = fitted_table(
            console, f"contribution per {title}",
            (Column(title, justify="left"), Column("funding", drop=3),
             Column("fees+spread", drop=2), Column("basis", drop=1), Column("net"),
             Column("entries", drop=4), Column("position\ndays", drop=5)),
            [(name, money(row["funding_income"]), money(row["fees_paid"] + row["spread_paid"]),
              money(row["basis_pnl"]), money(row["net_pnl"]), str(row["entries"]),
              f"{row['position_days']:.0f}")
             for name, row in sorted(rows.items(), key=lambda kv: -kv[1]["net_pnl"])])
        console.print(table)
        left_out += hidden
    narrow = hidden_note(list(dict.fromkeys(left_out)))
    if narrow:
        console.print(narrow)
    for note in s["notes"]:
        console.print(Text.assemble(("note:", "yellow"), f" {note}"))
    for chart in s.get("charts", []):
        console.print(f"chart: {chart}")
