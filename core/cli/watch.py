"""``perpcarry watch``: funding, predicted rate, basis and spread of carry pairs across
venues, live from the venues' websocket streams (REST polling where a venue declares no
stream). See docs/streams.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Annotated

import typer

from perpcarry.cli.common import console, load, split_option

# Kinds the board shows; perp books are not a column.
WATCHED = ("mark", "funding", "spot_book")
# Without a stream, REST is polled this often (the scan's bulk endpoints, one per kind).
REST_POLL_SECONDS = 10.0


def watch(
    venues: Annotated[list[str] | None, typer.Option(
        "--venues", help="Venue ids, comma-separated (default: every enabled venue).")] = None,
    symbols: Annotated[list[str] | None, typer.Option(
        "--symbols", help="Bases, comma-separated (default: every carry pair).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON line per update instead of the table.")] = False,
    for_seconds: Annotated[float | None, typer.Option(
        "--for", metavar="SECONDS", min=0.1, help="Stop after this many seconds.")] = None,
    updates: Annotated[int | None, typer.Option(
        "--updates", metavar="N", min=1, help="Stop after N updates.")] = None,
) -> int:
    """Watch funding, predicted rate, basis and spread per pair across venues, live."""
    from perpcarry.scan.engine import ScanOptions, select_venues

    config = load()
    venue_ids = select_venues(config, ScanOptions(venues=split_option(venues, "--venues")))
    bases = split_option(symbols, "--symbols")
    return asyncio.run(_watch(config, venue_ids, bases, as_json, for_seconds, updates))


async def _watch(config, venue_ids: list[str], bases: tuple[str, ...] | None, as_json: bool,
                 for_seconds: float | None, limit: int | None) -> int:
    from perpcarry.domain.errors import UsageError, VenueError
    from perpcarry.streams.board import Board
    from perpcarry.streams.session import HubSet
    from perpcarry.venues.protocol import VenueContext, carry_pairs
    from perpcarry.venues.streams import StreamKind

    kinds = tuple(StreamKind(k) for k in WATCHED)
    clients, pairs, failed = {}, {}, []
    try:
        for venue_id in venue_ids:
            spec = config.registry.venues[venue_id]
            client = clients[venue_id] = spec.factory(config.venues[venue_id],
                                                      VenueContext(cache_dir=config.cache_dir))
            try:
                found = carry_pairs(await client.load_markets())
            except VenueError as err:
                failed.append(err)
                console.print(f"[yellow]{venue_id}: not watched ({err})[/]", highlight=False)
                continue
            pairs[venue_id] = [p for p in found if bases is None or p.spot.base in bases]
        if not pairs:  # not one venue answered: that, not the symbols, is the error
            raise failed[0]
        if not any(pairs.values()):
            wanted = ", ".join(bases) if bases else "any base"
            raise UsageError(f"--symbols: no carry pair of {wanted} on "
                             f"{', '.join(pairs)}")
        board = Board(pairs)
        done = asyncio.Event()
        printer = _Printer(board, as_json, limit, done)
        hubs = HubSet(config, clients)
        hubs.listeners.append(printer.on_update)
        hubs.start(pairs, kinds)
        pollers = [asyncio.create_task(_poll_rest(v, clients[v], hubs.get(v), kinds, printer))
                   for v in pairs if pairs[v]]
        try:
            with printer.live(), contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), for_seconds)
        finally:
            for task in pollers:
                task.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
            await hubs.close()
        return 0
    finally:
        for client in clients.values():
            await client.close()


async def _poll_rest(venue_id: str, client, hub, kinds, printer) -> None:
    """Fill in, from REST on a fixed period, the kinds the venue does not stream (all of
    them without a hub: no streams declared, or ``[streams] enabled = false``)."""
    from loguru import logger

    from perpcarry.streams.rest import rest_updates

    polled = [k for k in kinds if hub is None or hub.capabilities.feed_of(k) is None]
    while polled:
        updates, failures = await rest_updates(client, polled)
        for update in updates:
            printer.on_update(venue_id, update, "rest")
        for what, why in failures.items():
            logger.warning("{}: REST poll of {} failed: {}", venue_id, what, why)
        await asyncio.sleep(REST_POLL_SECONDS)


class _Printer:
    """Prints each update (a JSON line) or redraws the table; stops after ``limit``."""

    def __init__(self, board, as_json: bool, limit: int | None, done: asyncio.Event) -> None:
        self.board = board
        self.as_json = as_json
        self.limit = limit
        self.done = done
        self.count = 0
        self._live = None

    @contextlib.contextmanager
    def live(self):
        if self.as_json:
            yield
            return
        from rich.live import Live

        with Live(self._table(), console=console, refresh_per_second=4,
                  transient=False) as live:
            self._live = live
            yield
            live.update(self._table())

    def on_update(self, venue: str, update, source: str) -> None:
        if self.done.is_set():
            return
        row = self.board.apply(venue, update, source)
        if row is None:
            return
        self.count += 1
        if self.as_json:
            record = {"kind": update.kind.value, **row.as_dict()}
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()
        elif self._live is not None:
            self._live.update(self._table())
        if self.limit is not None and self.count >= self.limit:
            self.done.set()

    def _table(self):
        from rich.table import Table

        table = Table(title="perpcarry watch", title_justify="left")
        for name in ("venue", "pair", "predicted rate", "next funding", "mark", "spot mid",
                     "basis", "spread", "source"):
            table.add_column(name, justify="left" if name in ("venue", "pair", "source")
                             else "right")
        for row in sorted(self.board.rows.values(), key=lambda r: (r.base, r.venue)):
            table.add_row(
                row.venue, f"{row.base}/{row.pair.spot.quote}",
                _pct(row.rate, 4), f"{row.next_funding_time:%m-%d %H:%M}"
                if row.next_funding_time else "—",
                _num(row.mark), _num(row.spot_mid), _pct(row.basis, 3),
                f"{row.spread_bps:.3g} bps" if row.spread_bps is not None else "—",
                row.source)
        return table


def _pct(value, digits: int) -> str:
    return "—" if value is None else f"{float(value) * 100:+.{digits}f}%"


def _num(value) -> str:
    return "—" if value is None else f"{value:,f}"
