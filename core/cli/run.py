"""``perpcarry run``: the carry strategy as a service (paper by default), once for cron, or
replayed over real history with a simulated clock. See docs/run.md."""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import nullcontext
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Annotated

import typer

from perpcarry.cli.common import console, emit_json, load, split_option
from perpcarry.cli.trade import (
    ExecutorOption,
    LiveOption,
    OfflineOption,
    PaperOption,
    SlicesOption,
    YesOption,
    _mode,
    session,
)


def run_strategy(
    paper: PaperOption = False, live: LiveOption = False, offline: OfflineOption = False,
    once: Annotated[bool, typer.Option("--once", help="One cycle, then exit (for cron).")]
    = False,
    replay: Annotated[str | None, typer.Option(
        "--replay", metavar="START..END",
        help="Replay the bundled history between two dates (YYYY-MM-DD..YYYY-MM-DD) with a "
             "simulated clock, through the same loop, on paper.")] = None,
    venues: Annotated[list[str] | None, typer.Option(
        "--venues", help="Venue ids, comma-separated (default: [run] venues, else every "
                         "enabled venue; with --offline every bundled one).")] = None,
    symbols: Annotated[list[str] | None, typer.Option(
        "--symbols", help="Bases, comma-separated (default: [run] symbols, else all).")]
    = None,
    executor: ExecutorOption = None, slices: SlicesOption = None, yes: YesOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --once or --replay: the "
                                          "report as one JSON document.")] = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="One JSON line per cycle on "
                                           "stdout, for a supervisor.")] = False,
) -> int:
    """Run the carry strategy: enter the best pairs, leave those whose funding fades, keep
    margins safe, record funding earned."""
    from perpcarry.domain.errors import UsageError

    is_paper = _mode(paper, live, offline)
    config = load()
    run_settings = config.settings.run
    chosen_venues = split_option(venues, "--venues") or (
        tuple(run_settings.venues) if run_settings.venues else None)
    chosen_symbols = split_option(symbols, "--symbols") or (
        tuple(run_settings.symbols) if run_settings.symbols else None)
    if replay is not None:
        if not is_paper:
            raise UsageError("--replay: a replay trades the simulated paper accounts; "
                             "drop --live")
        if once:
            raise UsageError("--replay and --once: a replay runs every step of its span")
        from perpcarry.run.replay import parse_span, run_replay

        start, end = parse_span(replay)
        return run_replay(config, start, end, venues=chosen_venues, symbols=chosen_symbols,
                          executor=executor, slices=slices, as_json=as_json,
                          log_json=log_json)
    if as_json and not once:
        raise UsageError("--json: with --once or --replay (a running service reports with "
                         "--log-json)")
    venue_ids = _universe(config, chosen_venues, offline)

    async def work() -> int:
        from perpcarry.alerts.alerter import build_alerter
        from perpcarry.events import EventBus
        from perpcarry.run.loop import CarryLoop
        from perpcarry.run.market import ScanMarket
        from perpcarry.run.service import Runner
        from perpcarry.venues.protocol import utc_now

        async with session(config, venue_ids, paper=is_paper, offline=offline,
                           trading=True) as trading:
            settings = loop_settings(config, trading, executor, slices)
            if not is_paper and not yes:
                _confirm_live(venue_ids)
            clients = {v: h.market_data for v, h in trading.venues.items()}
            market = ScanMarket(config, clients,
                                scan_options(config, chosen_venues, chosen_symbols, offline))
            market, hubs = streamed_market(config, trading, market, clients, offline or once)
            alerter = build_alerter(config.settings.alerts, config.registry, trading.journal,
                                    utc_now)
            events = EventBus(config.registry.pm, trading.journal, alerter, utc_now)
            loop = CarryLoop(trading, market, settings, utc_now, events)
            if hubs is not None:
                loop.watch = stream_risk(config, trading, hubs, settings.rules, events)
            if log_json or as_json:
                printer, status = (_json_line if log_json else _json_report), nullcontext()
            else:
                # A status line under the cycles' lines (on a terminal): what the loop is
                # waiting for.
                status = console.status("first cycle: recovery, funding, margins, market")
                printer = partial(_print_cycle, status=status)
            try:
                with status:
                    return await Runner(loop, run_settings, printer, utc_now).run(once=once)
            finally:
                await alerter.aclose()
                if hubs is not None:
                    await hubs.close()

    return asyncio.run(work())


def streamed_market(config, trading, market, clients, polled_only: bool):
    """The loop's market on streams where the venues declare them (not offline or for one
    cycle, where subscribing serves nothing, and not with ``[streams] enabled = false``):
    the market and its hubs; else the polled market unchanged and None."""
    settings = config.settings.streams
    if polled_only or not settings.enabled:
        return market, None
    from perpcarry.streams.market import StreamMarket
    from perpcarry.streams.session import HubSet

    hubs = HubSet(config, clients, None if trading.paper else account_books(trading))

    def held() -> set[tuple[str, str]]:
        return {(p.venue, p.base) for p in trading.journal.positions()}

    return StreamMarket(market, hubs, settings.max_age_seconds, held), hubs


def account_books(trading):
    """A live session's account books: each venue's orders, positions and balances over its
    account streams (where it has keys), and its fills handed to the executor as events
    (``VenueHandle.order_updates``); REST is still read after every reconnect."""
    from functools import partial

    from perpcarry.execution.legs import working_orders
    from perpcarry.streams.account import AccountBook

    def book(venue_id: str) -> AccountBook:
        handle = trading.venues[venue_id]
        handle.order_updates = AccountBook(venue_id, handle.orders,
                                           partial(working_orders, trading.journal, venue_id))
        return handle.order_updates

    return book


def stream_risk(config, trading, hubs, rules, events):
    """What else reads the hubs in a run: the stream risk (deciding on the held perps'
    pushed marks between cycles), then the dashboard's stream file (what it decided on),
    the session's executor (reference prices, the basis watch) and the paper venues (fills
    and marks), each only from fresh values."""
    from perpcarry.dashboard.feed import StreamFile, stream_path
    from perpcarry.risk.watch import StreamRisk

    watch = StreamRisk(config.settings.risk, rules, events)
    # The file's listener runs after the stream risk's on the same push, so it holds the
    # reading the risk has just decided on; kept apart, the risk does no file work.
    hubs.listeners += [watch, StreamFile(stream_path(trading.journal.path), watch)]
    trading.streams = hubs
    max_age = config.settings.streams.max_age_seconds
    if trading.paper:
        for venue_id, handle in trading.venues.items():
            handle.orders.view.use_streams(hubs, venue_id, max_age)
    return watch


def _universe(config, chosen: tuple[str, ...] | None, offline: bool) -> list[str]:
    from perpcarry.scan.engine import ScanOptions, select_venues

    return select_venues(config, ScanOptions(venues=chosen, offline=offline))


def scan_options(config, venues, symbols, offline: bool):
    """The scan each cycle reads: the strategy's estimator, window and horizon."""
    from perpcarry.scan.engine import ScanOptions

    strategy = config.settings.strategy
    return ScanOptions(venues=venues, symbols=symbols, estimator=strategy.estimator,
                       window_days=strategy.window_days,
                       ewma_halflife_days=strategy.ewma_halflife_days,
                       horizon_days=strategy.horizon_days, offline=offline)


def loop_settings(config, trading, executor: str | None, slices: int | None):
    """The loop's rules, sizing and executor. The session's leverage and margin follow
    ``[allocator]``, so the margin moved for a short is the margin the allocator sized the
    position with."""
    from perpcarry.run.loop import LoopSettings
    from perpcarry.strategy.rules import Rules

    allocator = config.settings.allocator
    trading.settings = trading.settings.model_copy(update={
        "leverage": Decimal(str(allocator.leverage)),
        "margin_buffer": 1 + Decimal(str(allocator.margin_buffer))})
    return LoopSettings(Rules.from_config(config.settings.strategy), allocator,
                        trading.executor(executor), slices or trading.settings.slices)


def _confirm_live(venue_ids: list[str]) -> None:
    if not sys.stdin.isatty():
        from perpcarry.domain.errors import UsageError

        raise UsageError("--live without --yes needs a terminal to confirm")
    typer.confirm(f"Run the carry strategy on the LIVE accounts of {', '.join(venue_ids)}? "
                  "It places real orders.", abort=True)


def _print_cycle(report, wake: datetime | None, status=None) -> None:
    equity = f"{report.equity:,.2f}" if report.equity is not None else "unknown"
    # A risk step between cycles reads no equity: it says what it is instead.
    what = "risk step (stream risk)" if report.step == "risk" else f"equity {equity}"
    line = (f"[bold]{report.at:%Y-%m-%d %H:%M:%S} UTC[/] {what} · "
            f"{report.positions} position(s)")
    if report.halted:
        line += f" · [red]halted: {report.halted}[/]"
    if wake is not None:
        line += f" · next cycle {wake:%H:%M:%S}"
    console.print(line, highlight=False)
    for action in report.actions:
        console.print(f"  {action.line()}", highlight=False, markup=False)
    if not report.actions and report.step == "cycle":
        console.print("  no trade: the targets equal the positions held", highlight=False)
    for note in report.notes:
        console.print(f"  [dim]{note}[/]", highlight=False)
    if status is not None and wake is not None:
        held = f"{report.positions} position(s)"
        status.update(f"waiting · {held} · next cycle {wake:%H:%M:%S} UTC · Ctrl-C stops "
                      "between actions" + (f" · halted: {report.halted}" if report.halted
                                           else ""))


def _json_report(report, wake: datetime | None) -> None:
    emit_json(report.as_dict())


def _json_line(report, wake: datetime | None) -> None:
    record = report.as_dict() | {"next_cycle": wake.isoformat() if wake else None}
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def print_replay(report, as_json: bool) -> None:
    """What a replay did: its span, cycles, trades and how fast it ran."""
    if as_json:
        emit_json(report.as_dict())
        return
    counts: dict[str, int] = {}
    for action in report.actions:
        counts[action.kind] = counts.get(action.kind, 0) + 1
    done = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no trade"
    console.print(f"replay {report.start:%Y-%m-%d} → {report.end:%Y-%m-%d}: {report.cycles} "
                  f"cycles in {report.seconds:.1f} s; {done}", highlight=False)
    for action in report.actions:
        if action.kind in {"failed", "skip"}:
            console.print(f"  {action.line()}", highlight=False, markup=False)
    for line in _margin_lines(report.margin):
        console.print(line, highlight=False, markup=False)
    for note in report.notes:
        console.print(f"  [dim]{note}[/]", highlight=False)
    console.print(f"journal: {report.journal} (perpcarry pnl --replay, perpcarry dashboard "
                  "--replay)", highlight=False)


def _margin_lines(m) -> list[str]:
    """The replay's margin block: top-ups as the backtest counts them, reductions,
    liquidations, and how close the monitor let a perp and a pool come to danger."""
    if m.topups:
        sold = ", ".join(f"{q.normalize()} {base}" for base, q in m.rebalanced_quantity.items())
        topups = (f"{m.topups} from {m.first_topup:%Y-%m-%d}: {m.transfers} transfers "
                  f"({m.transferred:,.2f}), {m.rebalances} rebalances"
                  + (f" (sold {sold}, {m.rebalanced_value:,.2f})" if m.rebalances else ""))
    else:
        topups = "none"
    lines = [f"margin top-ups: {topups}",
             f"reduced at the utilisation ceiling: {m.reduced}; at or past liquidation: "
             f"{m.liquidatable}"]
    if m.min_distance is not None:
        distance, where, at = m.min_distance
        lines.append(f"smallest liquidation distance: {distance * 100:.1f} % ({where}, "
                     f"{at:%Y-%m-%d %H:%M})")
    if m.max_utilisation is not None:
        used, where, at = m.max_utilisation
        lines.append(f"largest margin use after top-ups: {used * 100:.1f} % ({where}, "
                     f"{at:%Y-%m-%d %H:%M})")
    return lines
