"""The documents the dashboard shows, one per page, built from one journal and the files the
run loop leaves beside it. Where the CLI has the document (``positions --json``,
``pnl --json``, ``scan --json``) it is the CLI's own function that builds it; the pages add
only what the terminal commands do not show (history over time, caps, the event log).

Nothing here asks a venue: the dashboard reads what the run loop recorded, so a figure the
loop has not recorded (a mark for an open position, the margin of a position opened after
the last check) is shown as unknown, never estimated.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from perpcarry.dashboard import feed
from perpcarry.domain.types import decimal_text

SCHEMA_VERSION = 1
# Events an operator reads in the alert log: the event bus's (fills, alarms, the kill
# switch...), the alerter's deliveries, and flags set or cleared (the kill switch and the
# breaker, from any shell or this dashboard).
ALERT_KINDS = {"event", "alert", "flag", "flag_cleared"}
ALERT_LOG_SIZE = 200


@dataclass(frozen=True)
class Book:
    """The journal a dashboard shows: ``label`` names it on every page."""

    path: Path
    label: str  # paper | live | replay | the file given with --journal
    paper: bool

    @property
    def tradable(self) -> bool:
        """Whether ``close`` can trade it: only the journals trading sessions open (a replay
        is the record of a finished simulation)."""
        return self.label in {"paper", "live"}


def positions_document(journal, book: Book) -> dict[str, Any]:
    """``perpcarry positions --all --json`` for the book's journal."""
    from perpcarry.cli.trade import positions_json

    return positions_json(journal, book.paper, include_closed=True)


def pnl_document(journal, book: Book, config) -> dict[str, Any]:
    """``perpcarry pnl --json`` from what the journal holds: no venue is asked, so funding
    is what the run loop synced, and open positions are "not marked". A finished replay's
    journal is ``pnl --replay --json``: at the replay's end, marked at its last prices."""
    from perpcarry.cli.pnl import pnl_json, replay_pnl_json
    from perpcarry.ledger.pnl import ledger_pnl

    record = replay_record(journal)
    if record is not None:
        return replay_pnl_json(config, journal, record, None)
    report = ledger_pnl(journal, now=datetime.now(UTC), marks={},
                        default_leverage=config.settings.execution.leverage)
    return pnl_json(report, book.paper, not book.paper, None, {}, {}, {})


def replay_record(journal):
    """What a finished replay left in its journal (span, last prices); None for any other
    journal, or a replay still running."""
    from perpcarry.run.replay import REPLAY_FLAG, ReplayRecord

    text = journal.flag(REPLAY_FLAG)
    return None if not text else ReplayRecord.load(text)


def scan_document(book: Book) -> dict[str, Any] | None:
    """The latest ``scan --json`` document the run loop recorded; None without one."""
    return feed.latest_scan(book.path)


def overview_document(journal, book: Book, config) -> dict[str, Any]:
    """Equity, realised net PnL and funding received over time; funding, net and APR per
    venue; capital per venue and asset against the caps; the kill switch and the circuit
    breaker (as ``positions --json`` shows them)."""
    pnl = pnl_document(journal, book, config)
    equity = [{"at": c["at"], "equity": sum(c["equity"].values()), "by_venue": c["equity"]}
              for c in feed.cycles(journal) if c["equity"] is not None]
    record = replay_record(journal)
    return {
        "schema_version": SCHEMA_VERSION, "journal": str(book.path), "book": book.label,
        "replay": None if record is None else {"start": record.start.isoformat(),
                                               "end": record.end.isoformat()},
        **_halt(journal),
        "equity": equity,
        "realised_net": _realised_net(pnl["positions"]),
        "funding": _funding(journal),
        "venues": pnl["venues"], "totals": pnl["totals"],
        "capital": _capital(pnl["positions"], equity[-1]["equity"] if equity else None,
                            config.settings.allocator),
    }


def positions_page(journal, book: Book, config) -> dict[str, Any]:
    """The positions page: each position of ``positions --json`` with its PnL from
    ``pnl --json``, the funding rate and next settlement of the latest scan, and its age
    against the strategy's minimum hold."""
    listed = positions_document(journal, book)
    pnl = {r["position_id"]: r for r in pnl_document(journal, book, config)["positions"]}
    scan = scan_document(book)
    rates = {(r["venue"], r["perp_symbol"]): r for r in (scan or {}).get("rows", [])
             + (scan or {}).get("reverse_rows", [])}
    min_hold = config.settings.strategy.min_hold_hours
    record = replay_record(journal)
    now = datetime.now(UTC) if record is None else record.end  # a replay's clock stopped
    rows = []
    margins = margins_document(journal, book, config)
    read = {(m["venue"], m["symbol"]): m for m in margins["perps"]}
    for p in listed["positions"]:
        margin = None if p["closed_at"] else read.get((p["venue"], p["perp_symbol"]))
        earned = pnl.get(p["position_id"], {})
        quote = rates.get((p["venue"], p["perp_symbol"]))
        opened = datetime.fromisoformat(p["opened_at"])
        end = datetime.fromisoformat(p["closed_at"]) if p["closed_at"] else now
        held_hours = (end - opened).total_seconds() / 3600
        rows.append(p | {
            "funding": earned.get("funding"), "fees_quote": earned.get("fees"),
            "net": earned.get("net"), "spread_basis_status": earned.get("spread_basis_status"),
            "realised_apr": earned.get("realised_apr"),
            "expected_apr": earned.get("expected_apr"),
            "funding_rate": quote["funding_rate"] if quote else None,
            "next_funding_time": quote["next_funding_time"] if quote else None,
            "held_hours": round(held_hours, 2),
            "min_hold_met": held_hours >= min_hold,
            "margin": margin,
            "margin_unread": None if margin is not None or p["closed_at"]
            else _unread(margins, p["venue"]),
        })
    return {"schema_version": SCHEMA_VERSION, "journal": str(book.path), "book": book.label,
            "min_hold_hours": min_hold, "scan_at": (scan or {}).get("recorded_at"),
            "margins_at": margins["read_at"], "warning_distance": margins["warning_distance"],
            "floor_distance": margins["floor_distance"],
            "stream_max_age_seconds": margins["stream_max_age_seconds"], "positions": rows}


def margins_document(journal, book: Book, config) -> dict[str, Any]:
    """The risk monitor's last check as the run loop recorded it: each perp's liquidation
    distance, margin ratio, liquidation price and mark, with ``level`` ``floor`` (under
    ``[risk] floor_distance``), ``warning`` (under ``warning_distance``), ``ok``, or None
    when the venue reported no liquidation price; each pool's utilisation and leverage; the
    venues that did not answer. Empty, with ``read_at`` None, before any cycle recorded
    one. Each perp's ``streamed`` is the newest reading the run's stream risk decided on
    since (:func:`_streamed`), None without one."""
    risk = config.settings.risk
    readings = [c["risk"] for c in feed.cycles(journal) if c.get("risk") is not None]
    last = readings[-1] if readings else {"at": None, "perps": [], "pools": [], "down": {}}
    streamed = feed.streamed_readings(book.path)
    max_age = config.settings.streams.max_age_seconds
    now = datetime.now(UTC)
    return {"schema_version": SCHEMA_VERSION, "journal": str(book.path), "book": book.label,
            "read_at": last["at"], "warning_distance": str(risk.warning_distance),
            "floor_distance": str(risk.floor_distance), "stream_max_age_seconds": max_age,
            "perps": [p | {"level": _margin_level(p["distance"], risk),
                           "streamed": _streamed(streamed.get((p["venue"], p["symbol"])),
                                                 now, max_age, risk)}
                      for p in last["perps"]],
            "pools": last["pools"], "down": last["down"]}


def _streamed(reading: dict[str, Any] | None, now: datetime, max_age: float, risk
              ) -> dict[str, Any] | None:
    """A streamed reading as the pages show it: ``mark``, ``at``, ``distance`` and
    ``pool_equity`` (decimal strings, None when unknown), ``age_seconds`` at ``now``,
    ``level`` as the check's, and ``stale`` when older than ``[streams] max_age_seconds``
    (the age the run itself trusts a streamed value to)."""
    if reading is None:
        return None
    # An exchange clock a little ahead of ours would make a fresh push look younger than 0.
    age = max((now - reading["at"]).total_seconds(), 0.0)
    distance = decimal_text(reading["distance"])
    return {"mark": decimal_text(reading["mark"]), "at": reading["at"].isoformat(),
            "distance": distance, "level": _margin_level(distance, risk),
            "pool_equity": decimal_text(reading["pool_equity"]),
            "age_seconds": round(age, 1), "stale": age > max_age}


def _margin_level(distance: str | None, risk) -> str | None:
    if distance is None:
        return None
    if Decimal(distance) < risk.floor_distance:
        return "floor"
    return "warning" if Decimal(distance) < risk.warning_distance else "ok"


def _unread(margins: dict[str, Any], venue: str) -> str:
    """Why an open position has no margin reading."""
    if margins["read_at"] is None:
        return "not read yet: no cycle recorded the risk monitor's check"
    if venue in margins["down"]:
        return f"not read: {venue} did not answer the last check ({margins['down'][venue]})"
    return "not read yet: opened after the last check"


def operations_document(journal, book: Book) -> dict[str, Any]:
    """Unfinished intents and their orders not final, the last cycle's recovery findings,
    each venue's health as the loop saw it, and the alert log."""
    unfinished = journal.unfinished_intents()
    open_orders = [{"client_order_id": o.client_order_id, "intent_id": o.intent_id,
                    "venue": o.venue, "symbol": o.symbol, "side": o.side.value,
                    "quantity": str(o.quantity), "filled": str(o.filled),
                    "state": o.state.value}
                   for intent in unfinished for o in journal.orders(intent.intent_id)
                   if not o.state.is_final]
    cycles = feed.cycles(journal)
    last = cycles[-1] if cycles else None
    log = [_log_line(e) for e in feed.events(journal, ALERT_KINDS)]
    return {
        "schema_version": SCHEMA_VERSION, "journal": str(book.path), "book": book.label,
        "unfinished_intents": [{"intent_id": i.intent_id, "position_id": i.position_id,
                                "action": i.action, "venue": i.venue, "base": i.base,
                                "target_base": str(i.target_base),
                                "created_at": i.created_at.isoformat() if i.created_at
                                else None} for i in unfinished],
        "open_orders": open_orders,
        "last_cycle": None if last is None else last["at"],
        "reconciliation": None if last is None else last["findings"],
        "venues": _venue_health(cycles),
        "alert_log": log[-ALERT_LOG_SIZE:][::-1],
    }


def _halt(journal) -> dict[str, Any]:
    """``kill`` and ``breaker`` as ``positions --json`` has them; a flag perpcarry cannot
    read is shown as such (entries are refused on it too) rather than failing the page."""
    from perpcarry.cli.risk import halt_json
    from perpcarry.execution.journal import JournalError

    try:
        return halt_json(journal) | {"halt_unreadable": None}
    except JournalError as err:
        return {"kill": None, "breaker": None, "halt_unreadable": str(err)}


def _realised_net(positions: list[dict]) -> dict[str, list[dict[str, str]]]:
    """Per quote currency, the cumulative net PnL of the closed positions at each close."""
    closed = sorted((p for p in positions if p["closed_at"] and p["net"] is not None),
                    key=lambda p: p["closed_at"])
    series: dict[str, list[dict[str, str]]] = defaultdict(list)
    total: dict[str, Decimal] = defaultdict(Decimal)
    for p in closed:
        total[p["quote"]] += Decimal(p["net"])
        series[p["quote"]].append({"at": p["closed_at"], "net": str(total[p["quote"]])})
    return dict(series)


def _funding(journal) -> dict[str, list[dict[str, str]]]:
    """Per venue and currency (``binance USDT``), the cumulative funding the journal
    recorded at each payment: what funding actually paid."""
    series: dict[str, list[dict[str, str]]] = defaultdict(list)
    total: dict[str, Decimal] = defaultdict(Decimal)
    for recorded in journal.funding():
        payment = recorded.payment
        key = f"{payment.venue} {payment.currency}"
        total[key] += payment.amount
        series[key].append({"at": payment.time.isoformat(), "funding": str(total[key])})
    return dict(series)


def _capital(positions: list[dict], equity: float | None, allocator) -> dict[str, Any]:
    """Capital of the open positions per venue and per asset, as a share of the latest
    equity the loop recorded, against ``[allocator]``'s caps (shares unknown without an
    equity)."""
    by: dict[str, dict[str, Decimal]] = {"venue": defaultdict(Decimal),
                                         "asset": defaultdict(Decimal)}
    unknown = []
    for p in positions:
        if p["closed_at"]:
            continue
        if p["capital"] is None:
            unknown.append(p["position_id"])
            continue
        by["venue"][p["venue"]] += Decimal(p["capital"])
        by["asset"][p["base"]] += Decimal(p["capital"])
    caps = {"venue": allocator.max_venue_share, "asset": allocator.max_asset_share}

    def rows(kind: str) -> list[dict[str, Any]]:
        return [{"name": name, "capital": str(amount),
                 "share": None if not equity else float(amount) / equity, "cap": caps[kind]}
                for name, amount in sorted(by[kind].items())]

    return {"equity": equity, "venues": rows("venue"), "assets": rows("asset"),
            "capital_unknown": unknown}


def _venue_health(cycles: list[dict]) -> list[dict[str, Any]]:
    """Per venue: the last cycle it answered in (its balances read), its errors in the
    recorded cycles, and the last one; its rate-limit use at the last cycle that recorded
    it (None before any did)."""
    health: dict[str, dict[str, Any]] = {}

    def row(venue: str) -> dict[str, Any]:
        return health.setdefault(venue, {"venue": venue, "last_success": None, "errors": 0,
                                         "last_error": None, "rate_limit": None})

    for cycle in cycles:
        for venue in cycle["equity"] or {}:
            row(venue)["last_success"] = cycle["at"]
        for venue, why in cycle["failures"].items():
            failing = row(venue)
            failing["errors"] += 1
            failing["last_error"] = f"{cycle['at']}: {why}"
        for venue, use in (cycle.get("rate_limits") or {}).items():
            row(venue)["rate_limit"] = _rate_limit(cycle["at"], use)
    return sorted(health.values(), key=lambda r: r["venue"])


def _rate_limit(at: str, use: dict[str, Any]) -> dict[str, Any]:
    """One venue's recorded rate-limit use, each API group's share of its budget worked
    out (weight used over the minute before ``at`` / the budget)."""
    groups = [{"group": group, "used": b["used"], "budget": b["budget"],
               "share": b["used"] / b["budget"]}
              for group, b in sorted((use["budgets"] or {}).items())]
    return {"at": at, "requests": use["requests"], "groups": groups, "note": use["note"]}


def _log_line(event: dict) -> dict[str, Any]:
    detail = event["detail"] or {}
    if event["kind"] == "alert":
        return {"at": event["at"], "severity": "info" if detail.get("status") == "sent"
                else "warning", "kind": "alert " + str(detail.get("status")),
                "venue": None, "message": f"{detail.get('title')} (delivered: "
                f"{', '.join(detail.get('delivered') or []) or 'none'})"}
    if event["kind"] in {"flag", "flag_cleared"}:
        cleared = event["kind"] == "flag_cleared"
        return {"at": event["at"], "severity": "info" if cleared else "warning",
                "kind": event["kind"], "venue": None,
                "message": "; ".join(_flag_line(name, value, cleared)
                                     for name, value in detail.items())}
    return {"at": detail.get("time", event["at"]), "severity": detail.get("severity"),
            "kind": detail.get("kind"), "venue": detail.get("venue"),
            "message": detail.get("message")}


def _flag_line(name: str, value: str, cleared: bool) -> str:
    """A flag change as a person reads it: the kill switch's and the breaker's reason, a
    replay's span; any other flag as name = value."""
    from perpcarry.risk.state import BREAKER_FLAG, KILL_FLAG
    from perpcarry.run.replay import REPLAY_FLAG, ReplayRecord

    what = {KILL_FLAG: "kill switch", BREAKER_FLAG: "circuit breaker"}.get(name)
    try:
        if name == REPLAY_FLAG:
            record = ReplayRecord.load(value)
            return f"replay finished: {record.start:%Y-%m-%d} → {record.end:%Y-%m-%d}"
        if what is not None:
            reason = json.loads(value)["reason"]
            return f"{what} {'cleared' if cleared else 'engaged'} ({reason})"
    except (ValueError, TypeError, KeyError):
        pass  # not what perpcarry writes: shown as it is
    return f"{name} {'cleared' if cleared else '='} {value}"
