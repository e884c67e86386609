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
        render(result, options)
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


def render(result, options) -> None:
    from rich.console import Console
    from rich.table import Table

    from perpcarry.scan.engine import compare_venues

    # Piped output is not wrapped at rich's 80-column default: the table is 12 columns wide.
    # Cells are plain text styled by the table: rich's markup, emoji and repr highlighting
    # passes over ~1,000 cells only cost time (and a "[" in a venue's symbol would be taken
    # for markup).
    plain = {"highlight": False, "markup": False, "emoji": False}
    console = Console(**plain)
    if not console.is_terminal:
        console = Console(**plain, width=160)
    title = (
        f"Cash-and-carry, ranked by net APR over {options.horizon_days:g} days "
        f"(estimator: {options.estimator})"
    )
    if options.offline:
        times = ", ".join(f"{v} {t:%Y-%m-%d %H:%M}" for v, t in result.snapshot_times.items())
        title += f"\noffline snapshot (UTC): {times}"
    funding_columns = ("venue", "pair", "int", "rate", "next in", "APR now",
                       f"APR {options.estimator}")
    table = _table(title, (*funding_columns, "basis bps", "cost bps", "b/e h", "net APR",
                           "24h vol"))
    for r in result.rows:
        table.add_row(
            *_funding_cells(r, result.snapshot_times[r.venue]),
            _bps(r.basis),
            _bps(r.round_trip_cost) + ("" if r.spread_cost is not None else "*"),
            "inf" if r.break_even_hours == float("inf") else f"{r.break_even_hours:.0f}",
            percent(r.net_apr),
            _volume(r.thin_volume_24h),
        )
    console.print(table)
    if any(r.spread_cost is None for r in result.rows):
        console.print("* fees only: no book for this pair, so spread and basis are not counted")

    summaries, best_venue = compare_venues(result)
    comparison = Table(
        "venue",
        "candidates",
        "median net APR",
        "best net APR",
        "best pair",
        title="Across exchanges",
        title_justify="left",
    )
    for s in summaries:
        comparison.add_row(
            s.venue,
            str(s.candidates),
            percent(s.median_net_apr),
            percent(s.best_net_apr),
            s.best_pair or "-",
        )
    console.print(comparison)
    if best_venue:
        console.print(
            "Best venue per asset listed on several: "
            + ", ".join(
                f"{asset} {row.venue} ({percent(row.net_apr)})" for asset, row in best_venue.items()
            )
        )
    if result.reverse_rows:
        reverse = _table("Negative expected funding: not a cash-and-carry",
                         (*funding_columns, "trade"))
        for r in result.reverse_rows:
            reverse.add_row(*_funding_cells(r, result.snapshot_times[r.venue]),
                            "reverse: short spot on margin, long perp")
        console.print(reverse)
    for venue, fees in sorted(result.fees.items()):
        console.print(f"fees {venue}: {fees.describe()}")
    for note in result.notes:
        console.print(note)
    if result.skipped:
        reasons: dict[str, int] = {}
        for s in result.skipped:
            key = f"{s.venue}: {s.reason.split(':')[0]}"
            reasons[key] = reasons.get(key, 0) + 1
        console.print(
            f"{len(result.skipped)} symbol(s) skipped: "
            + "; ".join(f"{k} ({n})" for k, n in sorted(reasons.items()))
        )
    for venue, reason in result.failures.items():
        console.print(f"{venue} failed: {reason}", style="red")


def _table(title: str, columns: tuple[str, ...]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, justify="left" if name in ("venue", "pair", "trade") else "right",
                         no_wrap=True)
    return table


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
