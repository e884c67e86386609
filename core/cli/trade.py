"""``perpcarry open``, ``close``, ``positions`` and ``reconcile``: carry positions opened and
closed in two legs through an executor, every order journalled before it is sent.

Paper is the default; ``--live`` trades the real account and asks for confirmation (or
``--yes``). ``--paper --offline`` works on a fresh clone with no config and no network,
against the paper venue over the bundled snapshots.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer

from perpcarry.cli.common import console, emit_json, load
from perpcarry.domain.types import decimal_text

JSON_SCHEMA_VERSION = 1

PaperOption = Annotated[bool, typer.Option("--paper", help="Trade the paper account "
                                           "(the default).")]
LiveOption = Annotated[bool, typer.Option("--live", help="Trade the real account: needs "
                                          "credentials and a confirmation (or --yes).")]
OfflineOption = Annotated[bool, typer.Option(
    "--offline", help="With paper: the bundled snapshots as market data; no network.")]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON on stdout.")]
YesOption = Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")]
ExecutorOption = Annotated[str | None, typer.Option(
    "--executor", help="Registered executor (default: [execution] executor, perp-first).")]
SlicesOption = Annotated[int | None, typer.Option(
    "--slices", min=1, max=999, help="Slices (default: [execution] slices).")]


def _mode(paper: bool, live: bool, offline: bool) -> bool:
    """True for paper; one line for a contradiction."""
    from perpcarry.domain.errors import UsageError

    if paper and live:
        raise UsageError("--paper and --live: choose one")
    if live and offline:
        raise UsageError("--offline: a live account cannot be replayed; use --paper")
    return not live


@asynccontextmanager
async def session(config, venue_ids: list[str], *, paper: bool, offline: bool,
                  trading: bool):
    """A trading session over ``venue_ids`` with the account set's journal."""
    from perpcarry.cli.account import open_venues
    from perpcarry.domain.errors import UsageError
    from perpcarry.execution.crash import FAULTS_ENV, scheduled_faults
    from perpcarry.execution.journal import Journal
    from perpcarry.execution.service import TradingSession, VenueHandle, journal_path

    faults = scheduled_faults()
    if faults is not None and not paper:
        raise UsageError(f"{FAULTS_ENV} simulates faults of the paper venue: unset it for "
                         "--live")
    journal = Journal.open(journal_path(config.data_dir, paper), trading=trading)
    try:
        async with open_venues(config, venue_ids, paper, offline) as opened:
            handles = {v: VenueHandle(o.orders, o.market_data) for v, o in opened.items()}
            for handle in handles.values():
                if faults is not None:
                    # One schedule for the process: the N-th order whatever its venue.
                    handle.orders.faults = faults
            yield TradingSession(config, journal, handles, paper=paper, offline=offline)
    finally:
        journal.close()


def _venue_ids(config, wanted: list[str], offline: bool) -> list[str]:
    from perpcarry.scan.engine import ScanOptions, select_venues

    return select_venues(config, ScanOptions(venues=tuple(wanted) or None, offline=offline))


def _decimal(value: str | None, option: str) -> Decimal | None:
    from perpcarry.domain.errors import UsageError

    if value is None:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise UsageError(f"{option}: not a number: {value!r}") from None
    if not number.is_finite() or number <= 0 or number > Decimal("1e12"):
        raise UsageError(f"{option}: must be a number above 0 and at most 1e12, got {value}")
    return number


def _run(work: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(work())


def open_position(
    venue: Annotated[str, typer.Argument(help="Venue id, e.g. binance.")],
    base: Annotated[str, typer.Argument(help="Base asset, e.g. BTC.")],
    notional: Annotated[str | None, typer.Option(
        "--notional", help="Size in quote (USD) at the perp's mark.")] = None,
    quantity: Annotated[str | None, typer.Option(
        "--quantity", help="Size in base units.")] = None,
    executor: ExecutorOption = None, slices: SlicesOption = None, paper: PaperOption = False,
    live: LiveOption = False, offline: OfflineOption = False, yes: YesOption = False,
    as_json: JsonOption = False,
) -> int:
    """Open a carry position: buy spot and short the same base quantity of the perp."""
    from perpcarry.domain.errors import UsageError

    is_paper = _mode(paper, live, offline)
    if (notional is None) == (quantity is None):
        raise UsageError("give one of --notional USD or --quantity BASE")
    size_notional = _decimal(notional, "--notional")
    size_quantity = _decimal(quantity, "--quantity")
    config = load()
    venue_ids = _venue_ids(config, [venue], offline)

    async def work():
        async with session(config, venue_ids, paper=is_paper, offline=offline,
                           trading=True) as trading:
            chosen = trading.executor(executor)
            if not is_paper and not yes:
                await _confirm(trading, venue, base, size_notional, size_quantity)
            return await trading.open(
                venue, base, notional=size_notional, quantity=size_quantity,
                executor=chosen, slices=slices or trading.settings.slices)

    return _report(_run(work), as_json, "open")


def close_position(
    target: Annotated[list[str], typer.Argument(help="A position id, or VENUE BASE.")],
    executor: ExecutorOption = None, slices: SlicesOption = None, paper: PaperOption = False,
    live: LiveOption = False, offline: OfflineOption = False, yes: YesOption = False,
    as_json: JsonOption = False,
) -> int:
    """Close a carry position: buy the perp back (reduce-only), then sell the spot held."""
    from perpcarry.domain.errors import UsageError

    is_paper = _mode(paper, live, offline)
    if len(target) not in (1, 2):
        raise UsageError("close takes a position id, or VENUE BASE")
    config = load()

    async def work():
        from perpcarry.execution.journal import Journal
        from perpcarry.execution.service import journal_path

        with Journal.open(journal_path(config.data_dir, is_paper), trading=False) as journal:
            position = _find_position(journal, target)
        async with session(config, _venue_ids(config, [position.venue], offline),
                           paper=is_paper, offline=offline, trading=True) as trading:
            if not is_paper and not yes:
                typer.confirm(f"Close {position.venue} {position.base}: buy back "
                              f"{position.perp_quantity} perp, sell {position.spot_quantity} "
                              "spot?", abort=True)
            return await trading.close(position, executor=trading.executor(executor),
                                       slices=slices or trading.settings.slices)

    return _report(_run(work), as_json, "close")


def _find_position(journal, target: list[str]):
    from perpcarry.domain.errors import UsageError

    open_positions = journal.positions()
    if len(target) == 1:
        found = journal.position(target[0])
        if found is None:
            raise UsageError(f"no position {target[0]!r} in the journal {journal.path}")
        return found
    venue, base = target[0], target[1].upper()
    matches = [p for p in open_positions if p.venue == venue and p.base == base]
    if not matches:
        raise UsageError(f"no open {base} position on {venue} in the journal {journal.path}")
    if len(matches) > 1:
        ids = ", ".join(p.position_id for p in matches)
        raise UsageError(f"{len(matches)} open {base} positions on {venue} ({ids}): name one")
    return matches[0]


async def _confirm(trading, venue: str, base: str, notional, quantity) -> None:
    pair, price = await trading.pair_and_price(venue, base)
    size = quantity if quantity is not None else notional / price
    fees = await trading.config.registry.fee_model(venue).fee_schedule(
        trading.config.venues[venue], trading.venues[venue].market_data)
    leverage = trading.settings.leverage
    cost = size * price * (fees.spot_taker + fees.perp_taker)
    typer.confirm(
        f"LIVE on {venue}: buy {size:.8f} {pair.spot.symbol} and short {size:.8f} "
        f"{pair.perp.symbol} at about {price} ({size * price:.2f} {pair.perp.settle} each "
        f"leg); taker fees about {cost:.2f}; perp margin {size * price / leverage:.2f} at "
        f"{leverage}x. Proceed?", abort=True)


def _report(result, as_json: bool, action: str) -> int:
    document = {"schema_version": JSON_SCHEMA_VERSION, "action": action,
                "intent_id": result.intent_id, "position_id": result.position_id,
                "state": result.state.value, "spot_change": str(result.spot_change),
                "perp_change": str(result.perp_change), "note": result.note}
    if as_json:
        emit_json(document)
    else:
        console.print(f"{action} {result.position_id}: {result.state.value}; spot "
                      f"{result.spot_change:+f}, perp short {result.perp_change:+f}"
                      + (f" ({result.note})" if result.note else ""), highlight=False)
    return 0 if result.state.value == "done" else 1


def positions(paper: PaperOption = False, live: LiveOption = False,
              include_closed: Annotated[bool, typer.Option(
                  "--all", help="Closed positions too.")] = False,
              as_json: JsonOption = False) -> int:
    """Carry positions from the journal: both legs, delta, entry basis, fees, state, age."""
    from perpcarry.cli.risk import halt_note
    from perpcarry.execution.journal import Journal
    from perpcarry.execution.service import journal_path

    is_paper = _mode(paper, live, False)
    config = load()
    with Journal.open(journal_path(config.data_dir, is_paper), trading=False) as journal:
        document = positions_json(journal, is_paper, include_closed)
    rows = document["positions"]
    if as_json:
        emit_json(document)
        return 0
    halted = halt_note(config, is_paper)
    if halted is not None:
        console.print(halted, highlight=False, markup=False, soft_wrap=True)
    if not rows:
        console.print("no open positions" if not include_closed else "no positions")
        return 0
    from perpcarry.cli.tables import Column, fitted_table, hidden_note, output_console

    out = output_console()
    columns = (Column("id", justify="left"), Column("venue", justify="left"),
               Column("base", justify="left"), Column("spot"), Column("perp\nshort"),
               Column("delta", drop=2), Column("entry\nbasis bps", drop=3),
               Column("fees", drop=4, justify="left"), Column("state", justify="left"),
               Column("age", drop=1))
    cells = [(row["position_id"], row["venue"], row["base"], row["spot_quantity"],
              row["perp_quantity"], row["delta"],
              _basis_cell(row), ", ".join(f"{v} {k}" for k, v in row["fees"].items()) or "0",
              _state_cell(row), row["age"]) for row in rows]
    table, left_out = fitted_table(out, "Carry positions (journal)", columns, cells)
    out.print(table)
    note = hidden_note(left_out)
    if note:
        out.print(note)
    return 0


def positions_json(journal, paper: bool, include_closed: bool) -> dict[str, Any]:
    """The ``positions --json`` document of ``journal`` (the dashboard serves it too)."""
    from perpcarry.cli.risk import halt_json

    latest = journal.latest_intents()
    return {"schema_version": JSON_SCHEMA_VERSION, "paper": paper,
            "positions": [position_json(p, latest.get(p.position_id))
                          for p in journal.positions(include_closed=include_closed)],
            **halt_json(journal)}


def _basis_cell(row: dict[str, Any]) -> str:
    if row["entry_basis"] is not None:
        return f"{Decimal(row['entry_basis']) * 10_000:.1f}"
    # An adopted position's spot cost is unknown: not the same as no quantity to price.
    return "unknown" if row["spot_cost"] is None or row["perp_proceeds"] is None else "n/a"


def _state_cell(row: dict[str, Any]) -> str:
    notes = ["adopted"] if row["adopted_at"] is not None else []
    last = row["last_intent"]
    if last is not None and last["state"] == "partial":
        notes.append(f"partial {last['action']}")
    return row["state"] + (f" ({', '.join(notes)})" if notes else "")


def position_json(p, last_intent=None) -> dict[str, Any]:
    """One position as ``positions --json`` lists it; unknown costs (an adopted position's
    spot cost) are null, and so is what is derived from them. ``last_intent``: its latest
    open or close (None for an adopted position never traded since)."""
    spot_price = (p.spot_cost / p.spot_quantity
                  if p.spot_cost is not None and p.spot_quantity else None)
    perp_price = (p.perp_proceeds / p.perp_quantity
                  if p.perp_proceeds is not None and p.perp_quantity else None)
    basis = perp_price / spot_price - 1 if spot_price and perp_price else None
    age = datetime.now(UTC) - p.opened_at
    return {"position_id": p.position_id, "venue": p.venue, "base": p.base,
            "spot_symbol": p.spot_symbol, "perp_symbol": p.perp_symbol,
            "spot_quantity": decimal_text(p.spot_quantity),
            "perp_quantity": decimal_text(p.perp_quantity), "delta": decimal_text(p.delta),
            "spot_cost": decimal_text(p.spot_cost),
            "perp_proceeds": decimal_text(p.perp_proceeds),
            "entry_basis": None if basis is None else str(basis.quantize(Decimal("1e-8"))),
            "fees": {k: decimal_text(v) for k, v in p.fees.items()}, "state": p.state.value,
            "last_intent": None if last_intent is None else {
                "intent_id": last_intent.intent_id, "action": last_intent.action,
                "state": last_intent.state.value,
                "target_base": str(last_intent.target_base), "note": last_intent.note},
            "opened_at": p.opened_at.isoformat(),
            "adopted_at": p.adopted_at.isoformat() if p.adopted_at else None,
            "closed_at": p.closed_at.isoformat() if p.closed_at else None,
            "age": f"{age.days}d{age.seconds // 3600}h{age.seconds % 3600 // 60:02d}m"}


def reconcile(
    targets: Annotated[list[str] | None, typer.Argument(
        metavar="VENUE:SYMBOL", help="With --adopt: only these perp positions, e.g. "
        "binance:BTC/USDT:USDT.", show_default=False)] = None,
    adopt: Annotated[bool, typer.Option(
        "--adopt", help="Make perp shorts the journal does not know, hedged by spot held on "
        "the same venue, journal positions (no order is sent).")] = False,
    paper: PaperOption = False, live: LiveOption = False, offline: OfflineOption = False,
    yes: YesOption = False, as_json: JsonOption = False,
) -> int:
    """Finish or unwind unfinished intents, then compare the journal's positions with the
    venues': confirm, close naked legs, report (or --adopt) positions the journal does not
    know."""
    from perpcarry.execution.journal import Journal
    from perpcarry.execution.recovery import Adoption
    from perpcarry.execution.service import journal_path

    is_paper = _mode(paper, live, offline)
    config = load()
    wanted = _adoption_targets(config, targets or [], adopt)
    with Journal.open(journal_path(config.data_dir, is_paper), trading=False) as journal:
        involved = {p.venue for p in journal.positions()} | {
            i.venue for i in journal.unfinished_intents()}
    if adopt:
        # Adoption looks where it is pointed, else at every venue a scan would.
        involved |= ({v for v, _ in wanted} if wanted
                     else set(_venue_ids(config, [], offline)))
    venue_ids = sorted(involved) or _venue_ids(config, [], offline)

    def ask(question: str) -> bool:
        return typer.confirm(f"LIVE: {question}", err=True)

    adoption = (Adoption(wanted or None, None if is_paper or yes else ask) if adopt
                else None)

    async def work():
        async with session(config, venue_ids, paper=is_paper, offline=offline,
                           trading=True) as trading:
            return await trading.reconcile(adoption)

    report = _run(work)
    findings = [f.as_dict() for f in report.findings]
    if as_json:
        emit_json({"schema_version": JSON_SCHEMA_VERSION, "paper": is_paper,
                   "clean": report.clean, "findings": findings})
    elif not findings:
        console.print("nothing to reconcile: no pending intent, no position")
    else:
        for f in findings:
            console.print(f"{f['venue']} {f['subject']}: {f['kind']}: {f['detail']} -> "
                          f"{f['action']}", highlight=False)
    return 0 if report.clean else 1


def _adoption_targets(config, targets: list[str], adopt: bool) -> frozenset[tuple[str, str]]:
    """``VENUE:SYMBOL`` arguments as (venue, perp symbol); one line for a malformed one."""
    from perpcarry.domain.errors import UsageError

    if targets and not adopt:
        raise UsageError(f"{targets[0]}: VENUE:SYMBOL arguments name positions to adopt: "
                         "add --adopt")
    installed = config.registry.venues
    wanted = set()
    for target in targets:
        venue, _, symbol = target.partition(":")
        if not venue or not symbol:
            raise UsageError(f"--adopt {target}: expected VENUE:SYMBOL, e.g. "
                             "binance:BTC/USDT:USDT")
        if venue not in installed:
            raise UsageError(f"--adopt {target}: unknown venue {venue} (installed: "
                             f"{', '.join(sorted(installed)) or 'none'})")
        wanted.add((venue, symbol))
    return frozenset(wanted)
