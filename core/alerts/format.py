"""What an alert says: its title and body, the "N more suppressed" notice, and the daily
summary built from the ledger's per-venue figures. Pure text, no I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from perpcarry.events import Event, EventKind, Severity

LABELS = {
    EventKind.FILL: "Fill",
    EventKind.UNWIND: "Unwind",
    EventKind.NAKED_LEG: "Naked leg",
    EventKind.FUNDING: "Funding payment",
    EventKind.MARGIN_ALARM: "Margin alarm",
    EventKind.BREAKER: "Circuit breaker tripped",
    EventKind.KILL: "Kill switch",
    EventKind.VENUE_DOWN: "Venue down",
    EventKind.DAILY_SUMMARY: "Daily summary",
}
# The figures each ledger row must carry, as the ledger's per-venue pnl returns them.
SUMMARY_FIELDS = ("venue", "funding", "fees", "net", "realised_apr")


def _when(time: datetime) -> str:
    return time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def alert_text(event: Event) -> tuple[str, str]:
    """The title and body of the alert for ``event``."""
    title = " · ".join(part for part in (LABELS[event.kind], event.venue, event.subject)
                       if part)
    if event.severity is Severity.CRITICAL:
        title = f"CRITICAL {title}"
    lines = [event.message, ""]
    if event.kind is EventKind.DAILY_SUMMARY:
        lines += event.data["venues"]
    else:
        lines += [f"{key}: {_shown(value)}" for key, value in event.data.items()]
    lines.append(f"at {_when(event.time)}")
    return f"perpcarry: {title}", "\n".join(lines)


def _shown(value: Any) -> str:
    if isinstance(value, list):  # a list of pairs, such as fees [[amount, currency]]
        return ", ".join(" ".join(map(str, v)) if isinstance(v, list) else _shown(v)
                         for v in value)
    return "n/a" if value is None else str(value)


def suppressed_text(suppressed: Counter[str], start: datetime,
                    end: datetime) -> tuple[str, str]:
    """The notice that closes a window in which alerts were held back."""
    count = sum(suppressed.values())
    minutes = (end - start).total_seconds() / 60
    kinds = ", ".join(f"{n} {kind}" for kind, n in suppressed.most_common())
    return (f"perpcarry: {count} more alert{'s' if count != 1 else ''} suppressed",
            f"{count} more alerts were not sent in the {minutes:g} minutes from "
            f"{_when(start)} (rate limit of [alerts]): {kinds}.\n"
            "Every event is in the journal (kind \"event\").")


def daily_summary(ledger_rows: list[Mapping[str, Any]], time: datetime) -> Event:
    """The ``daily_summary`` event from the ledger's per-venue rows ({venue, funding, fees,
    net, realised_apr}; realised_apr a fraction a year, None when not yet known). A row
    missing a figure is shown with what is missing and left out of the totals."""
    lines, totals, complete = [], {"funding": Decimal(0), "fees": Decimal(0),
                                   "net": Decimal(0)}, 0
    for row in ledger_rows:
        venue = row.get("venue") or "(venue not named)"
        missing = [name for name in SUMMARY_FIELDS[1:4] if _number(row.get(name)) is None]
        if missing:
            lines.append(f"{venue}: not summed, the ledger gave no {', '.join(missing)}")
            continue
        figures = {name: _number(row[name]) for name in totals}
        for name, amount in figures.items():
            totals[name] += amount
        complete += 1
        apr = _number(row.get("realised_apr"))
        apr_text = "n/a" if apr is None else f"{apr * 100:.2f} %"
        lines.append(f"{venue}: funding {figures['funding']:+,.2f}, fees "
                     f"{figures['fees']:+,.2f}, net {figures['net']:+,.2f}, realised APR "
                     f"{apr_text}")
    message = (f"net {totals['net']:+,.2f} on {complete} venue{'s' if complete != 1 else ''}"
               f" (funding {totals['funding']:+,.2f}, fees {totals['fees']:+,.2f})"
               if complete else "no venue's figures in the ledger yet")
    return Event(EventKind.DAILY_SUMMARY, Severity.INFO, f"daily summary: {message}", time,
                 data={"venues": lines, **{name: str(v) for name, v in totals.items()}})


def _number(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None
