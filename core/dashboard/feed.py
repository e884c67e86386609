"""What the run loop leaves for the dashboard besides the journal's trading tables: one
``cycle`` event per cycle (each venue's equity, the recovery findings, the venues that gave
no market data, what the risk monitor read, each venue's rate-limit use) and the latest
scan, as the ``scan --json`` document, in a file beside the journal. Written by
:class:`perpcarry.run.loop.CarryLoop`, read by the dashboard; both sides live here so the
format is defined once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from perpcarry.risk.report import RiskReport

CYCLE_KIND = "cycle"
# A paper venue run online: its orders are simulated, its market data is the venue's.
PAPER_ONLINE = "paper: orders simulated (no rate limit); the use shown is its market data's"
_PAGE = 1000


def scan_path(journal_path: Path) -> Path:
    """Where the latest scan of the loop trading on ``journal_path`` is kept."""
    return journal_path.with_name(journal_path.stem + ".scan.json")


def record_cycle(journal, at: datetime, equity: dict[str, float] | None,
                 findings: list[dict[str, str]], failures: dict[str, str],
                 scan: dict[str, Any] | None, *, risk: RiskReport | None = None,
                 rate_limits: dict[str, dict[str, Any]] | None = None) -> None:
    """Journal one cycle's figures, and replace the latest scan file with ``scan`` (the
    ``scan --json`` document; None when the market data came from elsewhere, a replay).
    ``risk`` is the risk monitor's last check, ``rate_limits`` what
    :meth:`RateLimitUse.read` gave (both None: not read this cycle)."""
    journal.append_event(CYCLE_KIND, {
        "at": at.isoformat(), "equity": equity, "findings": findings, "failures": failures,
        "risk": None if risk is None else risk_reading(risk), "rate_limits": rate_limits})
    if scan is not None:
        target = scan_path(journal.path)
        partial = target.with_name(target.name + ".partial")
        partial.write_text(json.dumps(scan | {"recorded_at": at.isoformat()}, default=str))
        os.replace(partial, target)  # a reader never sees half a file


def risk_reading(report: RiskReport) -> dict[str, Any]:
    """What one check of the risk monitor read, as the cycle event holds it: per perp its
    liquidation distance, margin ratio, liquidation price and mark (None where the venue
    reports none), per margin pool its utilisation and leverage, and the venues that did
    not answer. Decimals as strings, so nothing is rounded on the way."""
    def text(value: Decimal | None) -> str | None:
        return None if value is None else str(value)

    return {
        "at": report.at.isoformat(),
        "perps": [{"venue": p.venue, "symbol": p.symbol, "distance": text(p.distance),
                   "margin_ratio": text(p.margin_ratio),
                   "liquidation_price": text(p.liquidation_price), "mark": text(p.mark)}
                  for p in report.perps],
        "pools": [{"venue": p.venue, "settle": p.settle, "utilisation": text(p.utilisation),
                   "leverage": text(p.leverage)} for p in report.pools],
        "down": dict(report.down),
    }


class RateLimitUse:
    """Each venue's rate-limit use, read once per cycle: for a venue whose client keeps
    weight budgets (a ccxt venue, live, or the market data of a paper venue run online), the
    weight each API group used over the last minute against its budget, and the requests
    sent since the previous read (the first: since the venue was opened). A venue nothing
    is sent to has no rate limit to use, and says why."""

    def __init__(self) -> None:
        self._counted: dict[str, int] = {}

    def read(self, venues: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """``venues``: the trading session's handles (``orders`` and ``market_data``)."""
        from perpcarry.ccxt.venue import CcxtVenue

        use = {}
        for venue_id, handle in venues.items():
            client = handle.market_data
            paper = handle.orders is not client  # a paper account trades on its own
            if not isinstance(client, CcxtVenue) or client.context.offline:
                note = (f"{'paper: ' if paper else ''}no venue rate limit (offline: market "
                        "data from the bundled snapshots)" if isinstance(client, CcxtVenue)
                        else "paper: no venue rate limit (market data from the bundled "
                        "history)" if paper
                        else "rate-limit use unknown: this venue's client keeps no weight "
                        "budgets")
                use[venue_id] = {"budgets": None, "requests": None, "note": note}
                continue
            total = client.request_count
            use[venue_id] = {
                "budgets": {group: {"used": budget.used_last_minute(),
                                    "budget": budget.capacity}
                            for group, budget in client.budgets.items()},
                "requests": total - self._counted.get(venue_id, 0),
                "note": PAPER_ONLINE if paper
                        else None}
            self._counted[venue_id] = total
        return use


def events(journal, kinds: set[str] | None = None) -> Iterator[dict]:
    """The journal's events, oldest first, of ``kinds`` (all without it)."""
    seq = 0
    while True:
        page = journal.events(since_seq=seq, limit=_PAGE)
        for event in page:
            if kinds is None or event["kind"] in kinds:
                yield event
        if len(page) < _PAGE:
            return
        seq = page[-1]["seq"]


def cycles(journal) -> list[dict]:
    """Every recorded cycle: ``at``, ``equity`` (by venue, None when unknown), ``findings``,
    ``failures``, and (absent from cycles recorded before they were) ``risk`` and
    ``rate_limits``."""
    return [event["detail"] for event in events(journal, {CYCLE_KIND})]


def latest_scan(journal_path: Path) -> dict[str, Any] | None:
    """The latest scan the loop recorded; None when it recorded none."""
    path = scan_path(journal_path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        from perpcarry.domain.errors import LocalStateError

        raise LocalStateError(f"latest scan {path}: unreadable ({err})") from None
