"""``perpcarry plan``: target carry positions for a capital, under the allocator's caps."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from perpcarry.cli.common import percent, split_option

JSON_SCHEMA_VERSION = 1

def plan(
    capital: Annotated[float | None, typer.Option(
        "--capital", help="Capital to allocate, in quote currency (USDT/USDC) "
        "[default: [allocator] capital].")] = None,
    offline: Annotated[bool, typer.Option(
        "--offline", help="Plan on the bundled real snapshot: no network, no config needed.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
    venues: Annotated[list[str] | None, typer.Option(
        "--venues", help="Venue ids, comma-separated.")] = None,
    symbols: Annotated[list[str] | None, typer.Option(
        "--symbols", help="Base assets, e.g. BTC,ETH.")] = None,
    estimator: Annotated[str | None, typer.Option(
        "--estimator", help="current | mean | ewma | conservative [default: [scan] estimator].")
    ] = None,
    horizon: Annotated[float | None, typer.Option(
        "--horizon", help="Holding horizon in days for net APR [default: [scan] horizon_days].")
    ] = None,
    leverage: Annotated[float | None, typer.Option(
        "--leverage", help="Perp leverage, 1 to 5 [default: [allocator] leverage, 2].")] = None,
    venue_cap: Annotated[float | None, typer.Option(
        "--venue-cap", help="Max percent of capital on one venue [default: 50].")] = None,
    asset_cap: Annotated[float | None, typer.Option(
        "--asset-cap", help="Max percent of capital in one asset, all venues [default: 20].")
    ] = None,
    pair_cap: Annotated[float | None, typer.Option(
        "--pair-cap", help="Max percent of capital in one position [default: 20].")] = None,
    cash_reserve: Annotated[float | None, typer.Option(
        "--cash-reserve", help="Percent of capital kept out of positions [default: 0].")] = None,
    min_net_apr: Annotated[float | None, typer.Option(
        "--min-net-apr", help="Skip candidates below this net APR, in percent [default: 0].")
    ] = None,
    max_positions: Annotated[int | None, typer.Option(
        "--max-positions", help="Most positions to hold [default: 20].")] = None,
    min_positions: Annotated[int | None, typer.Option(
        "--min-positions", help="Fewest positions to hold [default: 1].")] = None,
) -> int:
    """Allocate capital to carry positions: per-venue, per-asset and per-pair caps, lot sizes."""
    import asyncio

    from perpcarry.allocation.allocator import Limits, allocate, candidates_from_scan
    from perpcarry.cli.common import given, load, value_names
    from perpcarry.domain.errors import UsageError
    from perpcarry.scan.engine import ScanOptions, run_scan

    config = load()
    scan_defaults = config.settings.scan
    allocator_defaults = config.settings.allocator
    if capital is None and allocator_defaults.capital is None:
        raise UsageError("no capital: pass --capital or set capital under [allocator]")
    # Caps and the reserve are percent on the command line, shares of capital in the config.
    shares = {"max_venue_share": venue_cap, "max_asset_share": asset_cap,
              "max_pair_share": pair_cap, "cash_reserve": cash_reserve,
              "min_net_apr": min_net_apr}
    overrides = {name: value / 100 for name, value in shares.items() if value is not None}
    with value_names(config, "allocator", given(
            capital=("--capital", capital, 1), leverage=("--leverage", leverage, 1),
            max_venue_share=("--venue-cap", venue_cap, 100),
            max_asset_share=("--asset-cap", asset_cap, 100),
            max_pair_share=("--pair-cap", pair_cap, 100),
            cash_reserve=("--cash-reserve", cash_reserve, 100),
            min_net_apr=("--min-net-apr", min_net_apr, 100),
            max_positions=("--max-positions", max_positions, 1),
            min_positions=("--min-positions", min_positions, 1))):
        limits = Limits.from_config(allocator_defaults, capital, leverage=leverage,
                                    max_positions=max_positions, min_positions=min_positions,
                                    **overrides)

    options = ScanOptions(
        venues=split_option(venues, "--venues"), symbols=split_option(symbols, "--symbols"),
        estimator=estimator if estimator is not None else scan_defaults.estimator,
        window_days=scan_defaults.window_days,
        ewma_halflife_days=scan_defaults.ewma_halflife_days,
        horizon_days=horizon if horizon is not None else scan_defaults.horizon_days,
        min_volume=scan_defaults.min_volume, offline=offline,
    )
    with value_names(config, "scan", given(estimator=("--estimator", estimator, 1),
                                           horizon_days=("--horizon", horizon, 1))):
        options.validate()
    result = asyncio.run(run_scan(config, options))
    candidates, skipped = candidates_from_scan(result.rows)
    allocation = allocate(candidates, limits)
    if as_json:
        payload = {"schema_version": JSON_SCHEMA_VERSION, "offline": offline,
                   "estimator": options.estimator, "horizon_days": options.horizon_days,
                   "limits": vars(limits) | {"capital_per_notional":
                                             limits.capital_per_notional},
                   **allocation.as_dict(),
                   "scan_skipped": [vars_of(s) for s in [*skipped, *result.skipped]],
                   "scan_failures": result.failures}
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    else:
        render(allocation, limits, options, failures=result.failures,
               scan_skipped=len(skipped) + len(result.skipped))
    return 1 if not allocation.positions else 0


def vars_of(skipped) -> dict:
    return {"venue": skipped.venue, "symbol": skipped.symbol, "reason": skipped.reason}


def _money(value) -> str:
    return f"{float(value):,.2f}"


def _quantity(value) -> str:
    return format(value.normalize(), "f")


def render(allocation, limits, options, *, failures: dict[str, str], scan_skipped: int) -> None:
    from perpcarry.cli.tables import Column, fitted_table, hidden_note, output_console

    console = output_console()
    for venue, reason in failures.items():
        console.print(f"{venue} failed: {reason}", style="red")
    if not allocation.positions:
        console.print(f"No allocation: {allocation.reason}.", style="bold red")
        return
    k = limits.capital_per_notional
    title = (f"Plan for {_money(limits.capital)} capital: leverage {limits.leverage:g}x, "
             f"margin buffer {limits.margin_buffer:.0%}, so 1 of notional uses {k:.3g} of "
             f"capital; net APR over {options.horizon_days:g} days ({options.estimator})")
    columns = (Column("entry", drop=5), Column("venue", justify="left"),
               Column("pair", justify="left"), Column("base\nqty", drop=3),
               Column("perp\ncontracts", drop=6), Column("notional\n/leg", drop=4),
               Column("margin", drop=7), Column("capital"), Column("daily\nfunding", drop=2),
               Column("net\nAPR"))
    table, left_out = fitted_table(console, title, columns, [
        (str(p.entry_rank), p.venue, p.pair_label, _quantity(p.base_quantity),
         _quantity(p.perp_contracts), _money(p.notional), _money(p.margin), _money(p.capital),
         "n/a" if p.expected_daily_funding is None else _money(p.expected_daily_funding),
         percent(p.net_apr)) for p in allocation.positions])
    console.print(table)
    caps, hidden = fitted_table(
        console, "Capital against caps",
        (Column("cap", justify="left"), Column("name", justify="left"), Column("used"),
         Column("cap"), Column("of cap", drop=2), Column("LP\noptimum", drop=1),
         Column("binding", justify="left")),
        [(usage.kind, usage.name, _money(usage.used), _money(usage.cap),
          f"{usage.used / usage.cap:.1%}", _money(usage.lp_used),
          "yes" if usage.binding else "") for usage in (*allocation.venues, *allocation.assets)])
    console.print(caps)
    narrow = hidden_note(list(dict.fromkeys(left_out + hidden)))
    if narrow:
        console.print(narrow)
    if allocation.binding:
        console.print("Binding at the LP optimum: " + "; ".join(
            f"{u.kind} {u.name} (cap {_money(u.cap)}"
            + (f", +1 of capital there adds {percent(u.shadow_apr)} a year)"
               if u.shadow_apr else ")") for u in allocation.binding))
    total = sum(float(p.capital) for p in allocation.positions)
    daily = sum(p.expected_daily_net for p in allocation.positions)
    u = allocation.unused
    console.print(f"Deployed {_money(total)} of {_money(allocation.capital)}; expected net "
                  f"{_money(allocation.objective)} a year ({_money(daily)} a day). Unused "
                  f"{_money(u.total)}: reserve {_money(u.reserve)}, left idle by caps "
                  f"{_money(u.caps)}, rounding to lot sizes {_money(u.rounding)}.")
    for note in allocation.notes:
        console.print(f"note: {note}")
    if allocation.excluded or scan_skipped:
        console.print(f"{len(allocation.excluded)} candidate(s) excluded by the allocator, "
                      f"{scan_skipped} by the scan (--json lists them with reasons).")
