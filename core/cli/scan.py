"""``perpcarry scan``: rank carry trades across venues after costs."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from datetime import datetime
from typing import Annotated

import typer

from perpcarry.cli.common import percent, split_option
from perpcarry.cli.tables import Column, fitted_table, hidden_note, output_console

JSON_SCHEMA_VERSION = 1


def scan(
    venues: Annotated[
        list[str] | None,
        typer.Option(
            "--venues",
            help="Venue ids, comma-separated (default: enabled venues; offline: all bundled).",
        ),
    ] = None,
    symbols: Annotated[
        list[str] | None, typer.Option("--symbols", help="Base assets, e.g. BTC,ETH.")
    ] = None,
    min_net_apr: Annotated[
        float | None,
        typer.Option("--min-net-apr", help="Hide rows below this net APR, in percent."),
    ] = None,
    min_volume: Annotated[
        float | None,
        typer.Option("--min-volume", help="Minimum 24h quote volume of the thinner leg."),
    ] = None,
    top: Annotated[int | None, typer.Option("--top", help="Show the best N rows.")] = None,
    horizon: Annotated[
        float | None,
        typer.Option(
            "--horizon",
            help="Holding horizon in days for net APR [default: 30, or [scan] horizon_days].",
        ),
    ] = None,
    estimator: Annotated[
        str | None,
        typer.Option("--estimator", help="current | mean | ewma | conservative [default: mean]."),
    ] = None,
    window: Annotated[
        float | None, typer.Option("--window", help="Mean-estimator window in days [default: 7].")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON on stdout (schema: docs/scan-json.md).")
    ] = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="CSV of the ranked rows on stdout.")
    ] = False,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="Replay the bundled real snapshot: no network, no config needed."
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Fee sources, notes and skipped symbols in full.")
    ] = False,
) -> int:
    """Compare funding carry across exchanges, net of fees, spread and basis."""
    from perpcarry.cli.common import given, load, value_names
    from perpcarry.domain.errors import UsageError
    from perpcarry.scan.engine import ScanOptions

    if as_json and as_csv:
        raise UsageError("--json and --csv: choose one output format")
    config = load()
    defaults = config.settings.scan
    options = ScanOptions(
        venues=split_option(venues, "--venues"),
        symbols=split_option(symbols, "--symbols"),
        estimator=estimator if estimator is not None else defaults.estimator,
        window_days=window if window is not None else defaults.window_days,
        ewma_halflife_days=defaults.ewma_halflife_days,
        horizon_days=horizon if horizon is not None else defaults.horizon_days,
        min_net_apr=min_net_apr / 100 if min_net_apr is not None else defaults.min_net_apr,
        min_volume=min_volume if min_volume is not None else defaults.min_volume,
        top=top,
        offline=offline,
    )
    with value_names(config, "scan", given(
            estimator=("--estimator", estimator, 1), window_days=("--window", window, 1),
            horizon_days=("--horizon", horizon, 1), top=("--top", top, 1),
            min_net_apr=("--min-net-apr", min_net_apr, 100),
            min_volume=("--min-volume", min_volume, 1))):
        options.validate()
    result = asyncio.run(_run_with_progress(config, options, quiet=as_json or as_csv))
    if as_json:
        sys.stdout.write(json.dumps(result_to_json(result, options), indent=2) + "\n")
    elif as_csv:
        write_csv(result)
    else:
        render(result, options, verbose=verbose)
    everything_failed = bool(result.failures) and not result.snapshot_times
    return 1 if everything_failed else 0


async def _run_with_progress(config, options, quiet: bool):
    from rich.console import Console

    from perpcarry.scan.engine import run_scan

    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        return await run_scan(config, options)
    from rich.progress import Progress, SpinnerColumn, TextColumn

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(venue: str, stage: str) -> None:
            if venue not in tasks:
                tasks[venue] = bar.add_task(f"{venue}: {stage}")
            bar.update(tasks[venue], description=f"{venue}: {stage}")

        return await run_scan(config, options, progress)


def _bps(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1e4:.1f}"


def _until(moment: datetime, now: datetime) -> str:
    minutes = int((moment - now).total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _volume(value: float | None) -> str:
    if value is None:
        return "n/a"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


# The scan table's columns in order; `drop` says which go first on a narrow terminal.
def _carry_columns(estimator: str) -> tuple[Column, ...]:
    return (Column("venue", justify="left"), Column("pair", justify="left"),
            Column("int", drop=6), Column("rate", drop=4), Column("next\nin", drop=9),
            Column("APR\nnow", drop=5), Column(f"APR\n{estimator}", drop=2),
            Column("basis\nbps", drop=8), Column("cost\nbps", drop=3),
            Column("b/e\nh", drop=7), Column("net\nAPR"), Column("24h\nvol", drop=10))


REVERSE_TITLE = ("Negative expected funding, not a cash-and-carry; the reverse trade: "
                 "short spot on margin, long perp")


def render(result, options, *, verbose: bool = False) -> None:
    """The ranked carry table, the comparison across venues, the reverse trades and a short
    legend: at most a line per venue, the details with ``verbose``."""
    from perpcarry.scan.engine import compare_venues

    console = output_console()
    title = (
        f"Cash-and-carry, ranked by net APR over {options.horizon_days:g} days "
        f"(estimator: {options.estimator})"
    )
    if options.offline:
        times = ", ".join(f"{v} {t:%Y-%m-%d %H:%M}" for v, t in result.snapshot_times.items())
        title += f"\noffline snapshot (UTC): {times}"
    rows = [(*_funding_cells(r, result.snapshot_times[r.venue]), _bps(r.basis),
             _bps(r.round_trip_cost) + ("" if r.spread_cost is not None else "*"),
             "inf" if r.break_even_hours == float("inf") else f"{r.break_even_hours:.0f}",
             percent(r.net_apr), _volume(r.thin_volume_24h)) for r in result.rows]
    table, left_out = fitted_table(console, title, _carry_columns(options.estimator), rows)
    console.print(table)
    if any(r.spread_cost is None for r in result.rows):
        console.print("* fees only: no book for this pair, so spread and basis are not counted")

    summaries, best_venue = compare_venues(result)
    comparison, hidden = fitted_table(
        console, "Across exchanges",
        (Column("venue", justify="left"), Column("candidates", drop=2),
         Column("median\nnet APR", drop=1), Column("best\nnet APR"),
         Column("best pair", justify="left")),
        [(s.venue, str(s.candidates), percent(s.median_net_apr), percent(s.best_net_apr),
          s.best_pair or "-") for s in summaries])
    console.print(comparison)
    left_out += hidden
    if best_venue:
        console.print(
            "Best venue per asset listed on several: "
            + ", ".join(
                f"{asset} {row.venue} ({percent(row.net_apr)})" for asset, row in best_venue.items()
            )
        )
    if result.reverse_rows:
        reverse, hidden = fitted_table(
            console, REVERSE_TITLE, _carry_columns(options.estimator)[:7],
            [_funding_cells(r, result.snapshot_times[r.venue]) for r in result.reverse_rows])
        console.print(reverse)
        left_out += hidden
    narrow = hidden_note(list(dict.fromkeys(left_out)))
    if narrow:
        console.print(narrow)
    for line in (_details(result) if verbose else _legend(result)):
        console.print(line)
    for venue, reason in result.failures.items():
        console.print(f"{venue} failed: {reason}", style="red")


def _venue_notes(result) -> dict[str, list[str]]:
    """The engine's notes by the venue they start with; "" for the others (about options)."""
    venues = set(result.fees) | set(result.snapshot_times)
    by_venue: dict[str, list[str]] = {}
    for note in result.notes:
        venue = note.split(": ", 1)[0]
        by_venue.setdefault(venue if venue in venues else "", []).append(note)
    return by_venue


def _legend(result) -> list[str]:
    """A short line per venue that answered (the taker fees assumed, skips, notes), the
    notes about the options as they are, and a pointer to the details."""
    notes = _venue_notes(result)
    lines = []
    for venue in sorted(set(result.fees) | set(result.snapshot_times)):
        parts = []
        fees = result.fees.get(venue)
        if fees is not None:
            parts.append(f"taker fees {float(fees.spot_taker) * 100:g}% spot / "
                         f"{float(fees.perp_taker) * 100:g}% perp ({fees.source.value})")
        skipped = sum(s.venue == venue for s in result.skipped)
        if skipped:
            parts.append(f"{skipped} skipped")
        if notes.get(venue):
            count = len(notes[venue])
            parts.append(f"{count} note{'s' if count > 1 else ''}")
        lines.append(f"{venue}: {'; '.join(parts)}")
    lines += notes.get("", [])
    if result.skipped or any(venue for venue in notes):
        lines.append("(--verbose: fee sources, notes and skipped symbols in full)")
    return lines


def _details(result) -> list[str]:
    """Everything the legend sums up: fee sources, every note, the skipped symbols."""
    lines = [f"fees {venue}: {fees.describe()}" for venue, fees in sorted(result.fees.items())]
    lines += result.notes
    skipped: dict[tuple[str, str], list[str]] = {}
    for s in result.skipped:
        skipped.setdefault((s.venue, s.reason), []).append(s.symbol)
    lines += [f"{venue} skipped {', '.join(symbols)}: {reason}"
              for (venue, reason), symbols in sorted(skipped.items())]
    return lines


def _funding_cells(r, now: datetime) -> tuple[str, ...]:
    """venue, pair, interval, rate, next funding in, APR now, APR by the estimator."""
    return (
        r.venue,
        r.pair.label,
        f"{r.quote.interval_hours}h",
        f"{float(r.quote.rate) * 100:.4f}%",
        _until(r.quote.next_funding_time, now),
        percent(r.current_apr),
        percent(r.expected_apr),
    )


# The fields of a row in --json and --csv, in order (docs/scan-json.md).
_ROW_FIELDS = {
    "venue": lambda r: r.venue,
    "pair": lambda r: r.pair.label,
    "spot_symbol": lambda r: r.pair.spot.symbol,
    "perp_symbol": lambda r: r.pair.perp.symbol,
    "interval_hours": lambda r: r.quote.interval_hours,
    "funding_rate": lambda r: str(r.quote.rate),
    "rate_is_predicted": lambda r: r.quote.is_predicted,
    "next_funding_time": lambda r: r.quote.next_funding_time.isoformat(),
    "apr_now": lambda r: r.current_apr,
    "estimator": lambda r: r.estimator,
    "apr_expected": lambda r: r.expected_apr,
    "basis_bps": lambda r: None if r.basis is None else r.basis * 1e4,
    "spread_cost_bps": lambda r: None if r.spread_cost is None else r.spread_cost * 1e4,
    "fee_cost_bps": lambda r: r.fee_cost * 1e4,
    "round_trip_cost_bps": lambda r: r.round_trip_cost * 1e4,
    "break_even_hours": lambda r: None if r.break_even_hours == float("inf")
    else r.break_even_hours,
    "net_apr": lambda r: r.net_apr,
    "horizon_days": lambda r: r.horizon_days,
    "thin_volume_24h": lambda r: r.thin_volume_24h,
    "fee_source": lambda r: r.fees.describe(),
}


def _row_json(r) -> dict:
    return {name: value(r) for name, value in _ROW_FIELDS.items()}


def result_to_json(result, options) -> dict:
    from perpcarry.scan.engine import compare_venues

    summaries, best_venue = compare_venues(result)
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "offline": options.offline,
        "snapshot_times": {v: t.isoformat() for v, t in result.snapshot_times.items()},
        "rows": [_row_json(r) for r in result.rows],
        "reverse_rows": [_row_json(r) for r in result.reverse_rows],
        "venues": [
            {
                "venue": s.venue,
                "candidates": s.candidates,
                "median_net_apr": s.median_net_apr,
                "best_net_apr": s.best_net_apr,
                "best_pair": s.best_pair,
            }
            for s in summaries
        ],
        "best_venue_per_asset": {a: r.venue for a, r in best_venue.items()},
        "failures": result.failures,
        "skipped": [
            {"venue": s.venue, "symbol": s.symbol, "reason": s.reason} for s in result.skipped
        ],
        "notes": result.notes,
    }


def write_csv(result) -> None:
    writer = csv.DictWriter(sys.stdout, fieldnames=list(_ROW_FIELDS))
    writer.writeheader()
    writer.writerows(_row_json(r) for r in result.rows)
