"""What the run loop leaves for the dashboard besides the journal's trading tables: one
``cycle`` event per cycle (each venue's equity, the recovery findings, the venues that gave
no market data, what the risk monitor read, each venue's rate-limit use), the latest scan,
as the ``scan --json`` document, in a file beside the journal, and, between cycles, the
newest streamed mark and liquidation distance of each held perp in another (``StreamFile``).
Written by :class:`perpcarry.run.loop.CarryLoop` and ``perpcarry run``'s hubs, read by the
dashboard; both sides live here so the format is defined once.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from perpcarry.domain.parsing import decimal_field, optional_decimal
from perpcarry.domain.types import decimal_text
from perpcarry.venues.streams import StreamKind

if TYPE_CHECKING:
    from perpcarry.risk.report import RiskReport
    from perpcarry.risk.watch import StreamRisk
    from perpcarry.venues.streams import StreamUpdate

CYCLE_KIND = "cycle"
# A paper venue run online: its orders are simulated, its market data is the venue's.
PAPER_ONLINE = "paper: orders simulated (no rate limit); the use shown is its market data's"
_PAGE = 1000
# The stream file is rewritten at most this often: a listener runs on the event loop for
# every push, and the dashboard re-reads it every 10 s at most.
STREAM_WRITE_SECONDS = 1.0


def scan_path(journal_path: Path) -> Path:
    """Where the latest scan of the loop trading on ``journal_path`` is kept."""
    return journal_path.with_name(journal_path.stem + ".scan.json")


def stream_path(journal_path: Path) -> Path:
    """Where the newest streamed readings of the loop trading on ``journal_path`` are kept."""
    return journal_path.with_name(journal_path.stem + ".stream.json")


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


class StreamFile:
    """A hub listener, after the stream risk: keeps ``<journal stem>.stream.json`` holding,
    per held perp the stream risk watches, its newest streamed reading (mark, the push's
    time, liquidation distance, pool equity; decimals as strings) and ``written_at``; the
    file is removed when the stream risk watches nothing.

    Rewritten at most every ``every`` seconds: a push inside the window only schedules one
    write at its end (of the readings as they are then), so the newest reading always
    reaches the file. A write that fails (disk full, a read-only folder) logs one warning
    until a write succeeds again, and never raises: the run and its risk decisions go on.
    """

    def __init__(self, path: Path, watch: StreamRisk, *, every: float = STREAM_WRITE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.watch = watch
        self.every = every
        self.clock = clock
        self.writes = 0
        # The readings the file holds; None: unknown (a previous run's file may be there),
        # so the first push writes, or removes it when nothing is held.
        self._written: dict | None = None
        self._last = -every  # clock() at the last write
        self._pending: asyncio.TimerHandle | None = None
        self._failing = False

    def __call__(self, venue: str, update: StreamUpdate, source: str) -> None:
        """Called by the hub for every accepted value: only a pushed mark changes a
        reading, and a write already scheduled takes the newest."""
        if update.kind is not StreamKind.MARK or source != "stream" or self._pending:
            return
        if self.watch.readings == self._written:
            return
        wait = self._last + self.every - self.clock()
        if wait <= 0:
            self.write()
        else:
            self._pending = asyncio.get_running_loop().call_later(wait, self._flush)

    def _flush(self) -> None:
        self._pending = None
        if self.watch.readings != self._written:
            self.write()

    def write(self) -> None:
        """Replace the file with the stream risk's readings now (remove it when there are
        none); a failure is logged, never raised."""
        readings = dict(self.watch.readings)
        self._last = self.clock()
        try:
            if not readings:
                self.path.unlink(missing_ok=True)
            else:
                partial = self.path.with_name(self.path.name + ".partial")
                partial.write_text(json.dumps({
                    "written_at": datetime.now(UTC).isoformat(),
                    "perps": [{"venue": venue, "symbol": symbol, "mark": decimal_text(r.mark),
                               "at": r.at.astimezone(UTC).isoformat(),
                               "distance": decimal_text(r.distance),
                               "pool_equity": decimal_text(r.pool_equity)}
                              for (venue, symbol), r in sorted(readings.items())]}))
                os.replace(partial, self.path)  # a reader never sees half a file
        except OSError as err:
            if not self._failing:
                logger.warning("streamed readings for the dashboard not written to {} ({}); "
                               "the run goes on, the dashboard shows the last check's",
                               self.path, err.strerror or err)
            self._failing = True
            return
        self._failing = False
        self._written = readings
        self.writes += 1


def streamed_readings(journal_path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest streamed reading per perp (by venue and symbol) the run left beside
    ``journal_path``: ``mark``, ``distance`` and ``pool_equity`` as Decimals (the last two
    None when unknown) and ``at``, an aware datetime. Empty when there is no file (no run
    streaming, nothing held) or it is not what :class:`StreamFile` writes (logged once)."""
    path = stream_path(journal_path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as err:
        logger.warning("streamed readings {} unreadable ({}): shown without them", path, err)
        return {}
    if not text.strip():
        return {}
    try:
        return {(p["venue"], p["symbol"]): _reading(p) for p in json.loads(text)["perps"]}
    except (ValueError, TypeError, KeyError) as err:
        logger.warning("streamed readings {} damaged ({}: {}): shown without them", path,
                       type(err).__name__, err)
        return {}


def _reading(perp: dict[str, Any]) -> dict[str, Any]:
    """One perp of the stream file, checked: raises on any field of the wrong kind (a
    malformed number is ``MalformedField``, a ValueError)."""
    if not isinstance(perp["venue"], str) or not isinstance(perp["symbol"], str):
        raise TypeError("venue and symbol must be strings")
    at = datetime.fromisoformat(perp["at"])
    if at.tzinfo is None:
        raise ValueError(f"at {perp['at']!r} has no time zone")
    return {"mark": decimal_field(perp, "mark"), "at": at,
            "distance": optional_decimal(perp, "distance"),
            "pool_equity": optional_decimal(perp, "pool_equity")}
