"""What the run loop leaves for the dashboard besides the journal's trading tables: one
``cycle`` event per cycle (each venue's equity, the recovery findings, the venues that gave
no market data) and the latest scan, as the ``scan --json`` document, in a file beside the
journal. Written by :class:`perpcarry.run.loop.CarryLoop`, read by the dashboard; both
sides live here so the format is defined once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

CYCLE_KIND = "cycle"
_PAGE = 1000


def scan_path(journal_path: Path) -> Path:
    """Where the latest scan of the loop trading on ``journal_path`` is kept."""
    return journal_path.with_name(journal_path.stem + ".scan.json")


def record_cycle(journal, at: datetime, equity: dict[str, float] | None,
                 findings: list[dict[str, str]], failures: dict[str, str],
                 scan: dict[str, Any] | None) -> None:
    """Journal one cycle's figures, and replace the latest scan file with ``scan`` (the
    ``scan --json`` document; None when the market data came from elsewhere, a replay)."""
    journal.append_event(CYCLE_KIND, {
        "at": at.isoformat(), "equity": equity, "findings": findings, "failures": failures})
    if scan is not None:
        target = scan_path(journal.path)
        partial = target.with_name(target.name + ".partial")
        partial.write_text(json.dumps(scan | {"recorded_at": at.isoformat()}, default=str))
        os.replace(partial, target)  # a reader never sees half a file


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
    """Every recorded cycle: ``at``, ``equity`` (by venue, None when unknown), ``findings``
    and ``failures``."""
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
