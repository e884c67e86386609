"""``perpcarry pnl``: what each carry position earned (funding, fees, spread and basis,
net, realised APR against the APR expected at entry), per position and per venue.

Funding is synced from the venues into the journal first, venue by venue; a venue that
cannot be reached (or ``--live --offline``, which asks none) is named in one line and the
command shows what the journal holds. ``--paper --offline`` reads the paper accounts over
the bundled snapshots, as every other paper command does. See docs/ledger.md.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import typer

from perpcarry.cli.common import console, emit_json, load, percent
from perpcarry.cli.trade import JsonOption, LiveOption, PaperOption, _mode
from perpcarry.domain.types import decimal_text

JSON_SCHEMA_VERSION = 1
CENTS = Decimal("0.01")

ReplayOption = Annotated[bool, typer.Option(
    "--replay", help="The last `perpcarry run --replay`: its journal, at its last prices.")]
SinceOption = Annotated[str | None, typer.Option(
    "--since", help="Only funding and fills from this UTC date (YYYY-MM-DD) or ISO time on.")]


def pnl(paper: PaperOption = False, live: LiveOption = False,
        offline: Annotated[bool, typer.Option(
            "--offline", help="Paper: the bundled snapshots as market data. Live: ask no "
                              "venue; show what the journal holds.")] = False,
        replay: ReplayOption = False,
        as_json: JsonOption = False, since: SinceOption = None) -> int:
    """Funding received, fees, spread and basis, net PnL and realised APR per position and
    venue, after syncing funding payments from the venues."""
    from perpcarry.execution.journal import Journal
    from perpcarry.execution.service import journal_path
    from perpcarry.ledger.pnl import ledger_pnl

    is_paper = _mode(paper, live, False)
    since_time = _since(since)
    config = load()
    if replay:
        return _replay_pnl(config, is_paper, live, as_json, since_time)
    with Journal.open(journal_path(config.data_dir, is_paper), trading=False) as journal:
        venue_ids = sorted({p.venue for p in journal.positions(include_closed=True)}
                           | {r.payment.venue for r in journal.funding()})
        synced: dict[str, int] = {}
        not_synced: dict[str, str] = {}
        marks: dict[tuple[str, str], Decimal] = {}
        mark_sources: dict[str, str] = {}
        if venue_ids and not (offline and not is_paper):
            asyncio.run(_sync(config, journal, venue_ids, is_paper, offline, synced,
                              not_synced, marks, mark_sources))
        report = ledger_pnl(journal, now=datetime.now(UTC), marks=marks, since=since_time,
                            default_leverage=config.settings.execution.leverage)
    document = pnl_json(report, is_paper, offline and not is_paper, since_time, synced,
                        not_synced, mark_sources)
    if as_json:
        emit_json(document)
    else:
        _render(document)
    # As `account`: 1 only when every venue asked failed to answer.
    return 1 if not_synced and not synced else 0


def _replay_pnl(config, is_paper: bool, live: bool, as_json: bool,
                since_time: datetime | None) -> int:
    """The last replay's ledger: its journal, marked at the replay's last prices and timed
    by its simulated clock (nothing to sync: the replayed accounts are gone)."""
    from perpcarry.domain.errors import UsageError
    from perpcarry.run.replay import open_replay_journal

    if live:
        raise UsageError("--replay and --live: a replay trades the simulated paper accounts")
    with open_replay_journal(config.data_dir) as (journal, last):
        document = replay_pnl_json(config, journal, last, since_time)
    if as_json:
        emit_json(document)
    else:
        console.print(f"replay {last.start:%Y-%m-%d} → {last.end:%Y-%m-%d}, open positions "
                      "marked at the last recorded prices", highlight=False)
        _render(document)
    return 0


def replay_pnl_json(config, journal, last, since_time: datetime | None) -> dict[str, Any]:
    """The ``pnl --replay --json`` document of a finished replay's journal and its record
    ``last`` (the dashboard serves it too)."""
    from perpcarry.ledger.pnl import ledger_pnl

    report = ledger_pnl(journal, now=last.end, marks=last.marks, since=since_time,
                        default_leverage=config.settings.execution.leverage)
    sources = {p.position_id: "spot at its recorded price" for p in report.positions}
    document = pnl_json(report, True, True, since_time, {}, {}, sources)
    document["replay"] = {"start": last.start.isoformat(), "end": last.end.isoformat()}
    return document


def _since(text: str | None) -> datetime | None:
    from perpcarry.domain.errors import UsageError

    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since: not a date (YYYY-MM-DD) or ISO time: {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def _sync(config, journal, venue_ids: list[str], paper: bool, offline: bool,
                synced: dict[str, int], not_synced: dict[str, str],
                marks: dict[tuple[str, str], Decimal], mark_sources: dict[str, str]) -> None:
    """Sync each venue's funding and read its marks; a venue that fails is noted and the
    others go on."""
    from perpcarry.cli.account import open_venues
    from perpcarry.domain.errors import PerpcarryError
    from perpcarry.ledger.sync import sync_venue

    held = [p for p in journal.positions() if p.venue in venue_ids]
    for venue_id in venue_ids:
        if venue_id not in config.registry.venues:
            not_synced[venue_id] = "no installed plugin provides this venue"
            continue
        try:
            async with open_venues(config, [venue_id], paper, offline) as opened:
                venue = opened[venue_id]
                synced[venue_id] = len(await sync_venue(journal, venue_id, venue.orders))
                mine = [p for p in held if p.venue == venue_id]
                if mine:
                    quotes = (await venue.market_data.fetch_funding_snapshot()).quotes
                    for position in mine:
                        quote = quotes.get(position.perp_symbol)
                        if quote is None or not quote.mark_price:
                            continue
                        # The short at its mark; the spot at the venue's spot index, else
                        # at the perp mark (as the paper venue fills spot): the basis at
                        # exit is then taken as zero, and the note says so.
                        marks[(venue_id, position.perp_symbol)] = quote.mark_price
                        marks[(venue_id, position.spot_symbol)] = (quote.index_price
                                                                   or quote.mark_price)
                        mark_sources[position.position_id] = (
                            "spot index" if quote.index_price else "perp mark")
        except PerpcarryError as err:
            not_synced[venue_id] = str(err).removeprefix(f"{venue_id}: ")


def _apr_text(value: Decimal | None) -> str | None:
    from perpcarry.ledger.pnl import apr_text

    return apr_text(value)


def pnl_json(report, paper: bool, offline: bool, since: datetime | None,
             synced: dict[str, int],
             not_synced: dict[str, str], mark_sources: dict[str, str]) -> dict[str, Any]:
    """The ``pnl --json`` document (docs/ledger.md); every amount a decimal string."""
    positions = [{
        "position_id": r.position_id, "venue": r.venue, "base": r.base, "quote": r.quote,
        "state": r.state.value, "opened_at": r.opened_at.isoformat(),
        "closed_at": r.closed_at.isoformat() if r.closed_at else None,
        "days": str(r.days.quantize(Decimal("1e-6"))), "funding": decimal_text(r.funding),
        "fees": decimal_text(r.fees),
        "unconverted": {k: decimal_text(v) for k, v in r.unconverted.items()},
        "spread_basis": decimal_text(r.spread_basis),
        "spread_basis_status": r.spread_basis_status,
        "spot_marked_at": (mark_sources.get(r.position_id)
                           if r.spread_basis_status == "marked" else None),
        "net": decimal_text(r.net), "capital": decimal_text(r.capital),
        "leverage": decimal_text(r.leverage),
        "leverage_source": r.leverage_source, "realised_apr": _apr_text(r.realised_apr),
        "expected_apr": decimal_text(r.expected_apr), "spot_dust": decimal_text(r.spot_dust),
    } for r in report.positions]
    unattributed = [{"venue": u.payment.venue, "symbol": u.payment.symbol,
                     "amount": decimal_text(u.payment.amount), "currency": u.payment.currency,
                     "time": u.payment.time.isoformat(), "payment_id": u.payment.payment_id}
                    for u in report.unattributed]
    return {"schema_version": JSON_SCHEMA_VERSION, "paper": paper, "offline": offline,
            "since": since.isoformat() if since else None, "synced": synced,
            "not_synced": not_synced, "positions": positions,
            "venues": [v.as_dict() for v in report.venues],
            "totals": [t.as_dict() for t in report.totals], "unattributed": unattributed}


def money(text: str | None) -> str:
    """An amount for the table: two decimals; what is unknown says so."""
    return "n/a" if text is None else f"{Decimal(text).quantize(CENTS):f}"


def _apr(text: str | None) -> str:
    return percent(None if text is None else float(text))


def _render(document: dict[str, Any]) -> None:
    from perpcarry.cli.tables import Column, fitted_table, hidden_note, output_console

    if document["offline"]:
        console.print("--offline: no live venue asked, funding not synced; showing what the "
                      "journal holds", soft_wrap=True)
    for venue_id, reason in document["not_synced"].items():
        console.print(f"{venue_id}: funding not synced ({reason}); showing what the journal "
                      "holds", highlight=False, soft_wrap=True)
    if not document["positions"] and not document["unattributed"]:
        console.print("no positions and no funding in the journal")
        return
    out = output_console()
    columns = (Column("id", justify="left"), Column("venue", justify="left"),
               Column("base", justify="left"), Column("state", justify="left", drop=3),
               Column("days", drop=2), Column("funding"), Column("fees"),
               Column("spread\n+basis"), Column("net"), Column("capital", drop=4),
               Column("APR"), Column("expected\nAPR", drop=1))
    cells = [(r["position_id"], r["venue"], r["base"], r["state"],
              f"{Decimal(r['days']):.2f}", money(r["funding"]), money(r["fees"]),
              r["spread_basis_status"] if r["spread_basis"] is None else money(r["spread_basis"]),
              money(r["net"]), money(r["capital"]), _apr(r["realised_apr"]),
              "unknown" if r["expected_apr"] is None else _apr(r["expected_apr"]))
             for r in document["positions"]]
    left_out: list[str] = []
    if cells:
        table, left_out = fitted_table(out, "PnL per position (journal)", columns, cells)
        out.print(table)
    summary_columns = (Column("venue", justify="left"), Column("quote", justify="left"),
                       Column("positions", drop=2), Column("funding"),
                       Column("unattributed", drop=1), Column("fees"),
                       Column("spread\n+basis"), Column("net"), Column("APR"),
                       Column("expected\nAPR", drop=3))
    summary = [(v["venue"], v["quote"], str(v["positions"]), money(v["funding"]),
                money(v["unattributed_funding"]), money(v["fees"]), money(v["spread_basis"]),
                money(v["net"]), _apr(v["realised_apr"]), _apr(v["expected_apr"]))
               for v in document["venues"] + document["totals"]]
    table, hidden = fitted_table(out, "Per venue", summary_columns, summary)
    out.print(table)
    note = hidden_note(sorted(set(left_out) | set(hidden)))
    if note:
        out.print(note)
    for line in _notes(document):
        out.print(line, highlight=False, soft_wrap=True)


def _notes(document: dict[str, Any]) -> list[str]:
    """What the tables cannot say in a cell: unattributed payments, fees not converted,
    positions left out of a net, leverage not recorded at entry."""
    lines = [f"unattributed: {u['venue']} {u['symbol']} {u['amount']} {u['currency']} at "
             f"{u['time']} (no journal position held it)" for u in document["unattributed"]]
    for r in document["positions"]:
        if r["unconverted"]:
            held = ", ".join(f"{v} {k}" for k, v in r["unconverted"].items())
            lines.append(f"{r['position_id']}: {held} in fees not converted (no price)")
        if r["spread_basis"] is None:
            lines.append(f"{r['position_id']}: spread and basis {r['spread_basis_status']}: "
                         "its net is unknown; the venue's net counts its funding and fees only")
    from_config = [r["position_id"] for r in document["positions"]
                   if r["leverage_source"] == "config"]
    at_perp = [r["position_id"] for r in document["positions"]
               if r["spot_marked_at"] == "perp mark"]
    if at_perp:
        lines.append(f"spot of {len(at_perp)} open position(s) marked at the perp mark (the "
                     "venue reports no spot index): the basis at exit is taken as zero")
    if from_config:
        lines.append(f"capital of {len(from_config)} position(s) at [execution] leverage "
                     "(not recorded at entry)")
    return lines
