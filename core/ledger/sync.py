"""Funding payments from the venues into the journal, each attributed to its position.

Venues report funding per account and symbol, not per carry position: a payment belongs to
the journal position that held that perp on that venue when it settled. A payment no
journal position explains (a perp traded by hand, a position not adopted) is recorded
unattributed and reported, never dropped: it is real money on the account.

Each sync asks a venue only for what may be new: from the newest payment already recorded
there, less an overlap (a venue may post a settlement late), or, the first time, from the
oldest position ever opened there. Payments are keyed by venue and payment id, so the
overlap and a sync run twice record nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from loguru import logger

from perpcarry.execution.journal import Journal, Position
from perpcarry.venues.orders import FundingPayment, OrderVenue

# Venues post a settlement within minutes; a day covers a late one and costs one page.
OVERLAP = timedelta(days=1)


async def sync_funding(journal: Journal, venues: Mapping[str, OrderVenue], *,
                       until: datetime | None = None) -> list[FundingPayment]:
    """Sync every venue in turn (:func:`sync_venue`); the payments recorded now. A venue
    that cannot answer raises its ``VenueError`` after the venues before it are recorded;
    a caller that must go on without it syncs venue by venue."""
    new: list[FundingPayment] = []
    for venue_id, venue in venues.items():
        new += await sync_venue(journal, venue_id, venue, until=until)
    return new


async def sync_venue(journal: Journal, venue_id: str, venue: OrderVenue, *,
                     until: datetime | None = None) -> list[FundingPayment]:
    """Fetch ``venue_id``'s funding payments that may be new, attribute each and record
    them; the ones recorded now. A venue with no journal position and no recorded payment
    is not asked (nothing could be attributed from it)."""
    positions = [p for p in journal.positions(include_closed=True) if p.venue == venue_id]
    last = journal.last_funding_time(venue_id)
    if last is not None:
        since = last - OVERLAP
    elif positions:
        since = min(p.opened_at for p in positions)
    else:
        return []
    payments = await venue.fetch_funding_payments(since, until)
    attributed = [(p, holder(positions, p)) for p in payments if p.venue == venue_id]
    new = journal.record_funding(attributed)
    for payment, position_id in attributed:
        if position_id is None and payment in new:
            logger.warning("{}: funding of {} {} at {:%Y-%m-%d %H:%M} UTC on {}: no journal "
                           "position held it; recorded unattributed", venue_id,
                           payment.amount, payment.currency, payment.time, payment.symbol)
    return new


def holder(positions: list[Position], payment: FundingPayment) -> str | None:
    """The id of the position that held ``payment``'s perp when it settled: open at that
    instant (opened at or before it, not closed before it); the oldest when two were."""
    held = [p for p in positions
            if p.perp_symbol == payment.symbol and p.opened_at <= payment.time
            and (p.closed_at is None or p.closed_at >= payment.time)]
    return min(held, key=lambda p: p.opened_at).position_id if held else None
