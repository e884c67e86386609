"""Recovery and reconciliation: run on every start of a trading command and by
``perpcarry reconcile``.

1. **Unfinished intents.** Every order of a pending intent that may be on the venue (marked
   sent, outcome unknown, acknowledged, partially filled) is queried by its client id: found
   orders are recorded, working ones canceled, the rest marked absent. An order still only
   planned was never sent (the sent mark is committed before the request leaves). The
   intent's legs are then rebalanced by the engine's rule (the leg that went further is
   reversed) and the intent finished. An order whose outcome stays unknown leaves its intent
   pending and is reported; nothing is guessed.
2. **Positions.** The journal's open positions are compared with the venue's own positions,
   balances and open orders, fetched in bulk (one request per kind per venue, whatever the
   number of positions; a price is fetched only for a repair): matching ones are confirmed;
   a perp short the venue does not hold in full is a naked spot leg, a spot balance below
   the journal's is a naked perp leg, and either is closed above the tolerance (through a
   journalled repair intent); a perp position (or the part of a short beyond what the
   journal holds on its symbol) or an open order the journal does not know is reported and
   never touched, unless the user adopts it.
3. **Adoption** (``reconcile --adopt [VENUE:SYMBOL ...]``, only what it names, or every
   unknown position). Only a perp short hedged by spot of its base on the same venue is
   adopted: spot held (free + used, spot or unified wallet) minus what the journal's
   positions there hold is what may hedge it. Within the tolerance of the short, the short
   and that spot become one open journal position; less spot than that, the hedged part (the
   spot floored to the perp's step) is adopted and the rest of the short reported as a
   naked leg. A long perp, a short with no free spot, or a short on another perp than the
   one perpcarry trades for its base is reported, not adopted. The spot cost is recorded as
   unknown and the perp proceeds from the venue's entry price (unknown if it reports none);
   the adoption is an ``adopted`` journal event. Adopting never sends an order.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from perpcarry.domain.errors import InvalidOrder, OutcomeUnknown, UsageError
from perpcarry.domain.types import CarryPair
from perpcarry.execution.engine import ExecutionIncomplete, TwoLegExecution
from perpcarry.execution.journal import Intent, IntentState, Journal, OrderEvent, Position
from perpcarry.venues.orders import (
    Leg,
    OrderVenue,
    PerpPosition,
    Side,
    Wallet,
    floor_to_step,
    resolve_outcome,
)

MAY_BE_ON_VENUE = frozenset({OrderEvent.SENT, OrderEvent.OUTCOME_UNKNOWN,
                             OrderEvent.ACKNOWLEDGED, OrderEvent.PARTIALLY_FILLED})


@dataclass
class Finding:
    """One thing reconciliation found, and what it did about it."""

    # resolved | unresolved | confirmed | naked_leg | unknown_position | unknown_order
    kind: str
    venue: str
    subject: str  # an intent id, a position id or a symbol
    detail: str
    action: str  # what was done: "none", "recorded", "unwound ...", "left pending", ...

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "venue": self.venue, "subject": self.subject,
                "detail": self.detail, "action": self.action}


@dataclass
class Reconciliation:
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return all(f.kind in {"confirmed", "resolved", "adopted"} for f in self.findings)


class Markets(Protocol):
    """What recovery needs of a trading session (:class:`~perpcarry.execution.service.
    TradingSession`): pairs, prices, and executions with the session's settings."""

    async def pair(self, venue_id: str, base: str) -> CarryPair: ...

    async def reference_price(self, pair: CarryPair) -> Decimal: ...

    def tolerance(self, pair: CarryPair) -> Decimal: ...

    def execution(self, pair: CarryPair, price: Decimal) -> TwoLegExecution: ...


async def recover_intents(journal: Journal, venues: Mapping[str, OrderVenue],
                          markets: Markets, report: Reconciliation) -> None:
    """Finish or unwind every pending intent (step 1)."""
    for intent in journal.unfinished_intents():
        venue = venues[intent.venue]
        pair = await markets.pair(intent.venue, intent.base)
        execution = markets.execution(pair, await markets.reference_price(pair))
        execution.resume(intent)
        unresolved = await _resolve_orders(journal, venue, pair, intent, execution.sleep)
        if unresolved:
            report.findings.append(Finding(
                "unresolved", intent.venue, intent.intent_id,
                f"outcome of {', '.join(unresolved)} still unknown", "left pending"))
            continue
        if intent.action == "repair":
            filled = any(o.filled for o in journal.orders(intent.intent_id))
            execution.finish(intent.note, failed=not filled)
            report.findings.append(Finding("resolved", intent.venue, intent.intent_id,
                                           intent.note or "repair",
                                           "finished" if filled else "failed"))
            continue
        try:
            await execution.rebalance()
        except ExecutionIncomplete as err:
            report.findings.append(Finding("unresolved", intent.venue, intent.intent_id,
                                           str(err), "left pending"))
            continue
        spot, perp = execution.leg_changes()
        complete = abs(abs(perp) - intent.target_base) <= execution.tolerance
        note = "recovered" if complete else f"recovered: spot {spot}, perp {perp} of " \
                                            f"{intent.target_base} {intent.base}"
        # The engine names the end: done, partial (hedged below the target), unwound, failed.
        result = execution.finish(note, failed=not complete)
        report.findings.append(Finding("resolved", intent.venue, intent.intent_id, note,
                                       f"finished as {result.state.value}"))


async def _resolve_orders(journal: Journal, venue: OrderVenue, pair: CarryPair,
                          intent: Intent, sleep) -> list[str]:
    unresolved = []
    for order in journal.orders(intent.intent_id):
        if order.state not in MAY_BE_ON_VENUE:
            continue
        market = pair.perp if order.leg is Leg.PERP else pair.spot
        try:
            state = await resolve_outcome(venue, market, order.client_order_id, sleep=sleep)
        except OutcomeUnknown:
            unresolved.append(order.client_order_id)
            continue
        if state is None:
            journal.mark(order.client_order_id, OrderEvent.ABSENT, {"by": "reconcile"})
            continue
        if not state.status.is_final:
            canceled = await venue.cancel_order(market, order.client_order_id)
            state = canceled or state
        journal.record_state(state)
    return unresolved


@dataclass(frozen=True)
class Adoption:
    """What ``reconcile --adopt`` asked for: the perp positions to adopt, as (venue, perp
    symbol), or None for every eligible one; and, for a live account without ``--yes``, a
    question put before each adoption (its text; True to adopt)."""

    targets: frozenset[tuple[str, str]] | None = None
    confirm: Callable[[str], bool] | None = None

    def wants(self, venue_id: str, symbol: str) -> bool:
        return self.targets is None or (venue_id, symbol) in self.targets


@dataclass
class _VenueView:
    """One venue's positions, balances and open orders (one bulk request each) beside what
    the journal holds there."""

    positions: list[PerpPosition]
    spot_total: dict[str, Decimal]  # base held in the spot (or unified) wallet, free + used
    held: list[Position]  # the journal's open positions on the venue
    journal_perp: dict[str, Decimal]  # by perp symbol
    journal_spot: dict[str, Decimal]  # by base
    # Perp positions (or the part of one) the journal does not know: symbol -> (position,
    # base not journalled). Filled by ``_unknown``.
    unknown: dict[str, tuple[PerpPosition, Decimal]] = field(default_factory=dict)


async def reconcile_positions(journal: Journal, venues: Mapping[str, OrderVenue],
                              markets: Markets, report: Reconciliation,
                              adoption: Adoption | None = None) -> None:
    """Compare the journal's open positions with each venue's (step 2), closing a naked leg
    above the tolerance, then report (or, with ``adoption``, adopt) the perp positions the
    journal does not know. Bulk requests only: positions, balances and open orders once per
    venue, all fetched before anything is done, so an adoption target naming nothing is
    refused (``UsageError``) before any repair."""
    by_venue = defaultdict(list)
    for position in journal.positions():
        by_venue[position.venue].append(position)
    fetched = await asyncio.gather(*(asyncio.gather(
        venue.fetch_positions(), venue.fetch_balances(), venue.fetch_open_orders())
        for venue in venues.values()))
    views = {}
    for venue_id, (positions, balances, _) in zip(venues, fetched, strict=True):
        views[venue_id] = view = _view(by_venue.get(venue_id, []), positions, balances)
        await _unknown(venue_id, view, markets)
    if adoption is not None and adoption.targets is not None:
        _check_targets(adoption.targets, views)
    for venue_id, (_, _, open_orders) in zip(venues, fetched, strict=True):
        view = views[venue_id]
        _report_open_orders(journal, venue_id, open_orders, report)
        await _compare(journal, venue_id, view, markets, report)
        for symbol, (position, quantity) in view.unknown.items():
            if adoption is not None and adoption.wants(venue_id, symbol):
                await _adopt(journal, venue_id, view, position, quantity, markets,
                             adoption, report)
                continue
            report.findings.append(Finding(
                "unknown_position", venue_id, symbol, _unknown_detail(position, quantity),
                "not touched"))


def _view(held: list[Position], positions: list[PerpPosition], balances) -> _VenueView:
    spot_total: dict[str, Decimal] = defaultdict(Decimal)
    for wallet in (Wallet.SPOT, Wallet.UNIFIED):
        for currency, balance in balances.get(wallet, {}).items():
            spot_total[currency] += balance.total
    # Several journal positions may share a symbol: compare sums.
    journal_perp: dict[str, Decimal] = defaultdict(Decimal)
    journal_spot: dict[str, Decimal] = defaultdict(Decimal)
    for position in held:
        journal_perp[position.perp_symbol] += position.perp_quantity
        journal_spot[position.base] += position.spot_quantity
    return _VenueView(positions, spot_total, held, journal_perp, journal_spot)


async def _unknown(venue_id: str, view: _VenueView, markets: Markets) -> None:
    """A long perp is never the journal's; a short is, up to what the journal holds on its
    symbol (beyond it by more than the tolerance: the excess was opened by hand)."""
    bases = {p.perp_symbol: p.base for p in view.held}
    for position in view.positions:
        quantity = position.quantity
        if position.side is Side.SELL and position.symbol in bases:
            quantity -= view.journal_perp[position.symbol]
            pair = await markets.pair(venue_id, bases[position.symbol])
            if quantity <= markets.tolerance(pair):
                continue
        view.unknown[position.symbol] = (position, quantity)


def _unknown_detail(position: PerpPosition, quantity: Decimal) -> str:
    side = "short" if position.side is Side.SELL else "long"
    if quantity == position.quantity:
        return f"{side} {position.quantity} not in the journal (opened by hand?)"
    return (f"short {position.quantity}, of which {quantity} not in the journal (opened by "
            "hand?)")


def _check_targets(targets: frozenset[tuple[str, str]], views: dict[str, _VenueView]) -> None:
    for venue_id, symbol in sorted(targets):
        unknown = views[venue_id].unknown
        if symbol not in unknown:
            there = ", ".join(sorted(unknown)) or "none"
            raise UsageError(f"--adopt {venue_id}:{symbol}: {venue_id} has no perp position "
                             f"by that symbol the journal does not know (unknown there: "
                             f"{there})")


async def _compare(journal: Journal, venue_id: str, view: _VenueView, markets: Markets,
                   report: Reconciliation) -> None:
    """The journal's positions on one venue against what it holds; repair the newest of a
    base whose legs disagree beyond the tolerance."""
    shorts = {p.symbol: p.quantity for p in view.positions if p.side is Side.SELL}
    journal_perp, journal_spot = view.journal_perp, view.journal_spot
    newest = {p.base: p for p in view.held}
    for base, position in newest.items():
        pair = await markets.pair(venue_id, base)
        tolerance = markets.tolerance(pair)
        venue_short = shorts.get(position.perp_symbol, Decimal(0))
        venue_spot = view.spot_total.get(base, Decimal(0))
        perp_gap = journal_perp[position.perp_symbol] - venue_short
        spot_gap = journal_spot[base] - venue_spot
        if perp_gap > tolerance or spot_gap > tolerance:
            # Only a repair needs a price (to check the order's size).
            execution = markets.execution(pair, await markets.reference_price(pair))
        if perp_gap > tolerance:
            # No more spot than is held: a fee taken in base left it short of the perp.
            await _repair(journal, execution, report, position, Leg.SPOT, Side.SELL,
                          min(perp_gap, venue_spot),
                          f"venue holds {venue_short} {base} short of "
                          f"{journal_perp[position.perp_symbol]} journalled: spot "
                          f"unhedged by {perp_gap}",
                          spot=position.spot_quantity,
                          perp=position.perp_quantity - perp_gap)
        elif spot_gap > tolerance:
            await _repair(journal, execution, report, position, Leg.PERP, Side.BUY,
                          min(spot_gap, venue_short), f"venue holds {venue_spot} {base} of "
                          f"{journal_spot[base]} journalled: perp unhedged by "
                          f"{spot_gap}", spot=position.spot_quantity - spot_gap,
                          perp=position.perp_quantity)
        for each in view.held:
            if each.base == base and perp_gap <= tolerance and spot_gap <= tolerance:
                report.findings.append(Finding(
                    "confirmed", venue_id, each.position_id,
                    f"spot {each.spot_quantity}, perp {each.perp_quantity} {base}", "none"))


async def _adopt(journal: Journal, venue_id: str, view: _VenueView, position: PerpPosition,
                 quantity: Decimal, markets: Markets, adoption: Adoption,
                 report: Reconciliation) -> None:
    """Make ``quantity`` base of an unknown perp short, hedged by spot no journal position
    claims, a journal position. Never sends an order: what is not hedged is reported."""
    symbol = position.symbol

    def refuse(reason: str) -> None:
        report.findings.append(Finding("unknown_position", venue_id, symbol,
                                       _unknown_detail(position, quantity),
                                       f"not adopted: {reason}; not touched"))

    if position.side is not Side.SELL:
        return refuse("a long perp is not a carry position")
    # A unified symbol is BASE/QUOTE:SETTLE.
    base = symbol.split("/", 1)[0]
    try:
        pair = await markets.pair(venue_id, base)
    except UsageError as err:
        return refuse(str(err))
    if pair.perp.symbol != symbol:
        return refuse(f"perpcarry trades {base} on {venue_id} as {pair.perp.symbol}, so it "
                      "could not close this one")
    tolerance = markets.tolerance(pair)
    # Spot the journal's positions claim is theirs (as journalled before any repair of this
    # run, which trades only their own legs), and so is what this run adopted already.
    free_spot = max(Decimal(0), view.spot_total.get(base, Decimal(0))
                    - view.journal_spot[base])
    perp = quantity if free_spot >= quantity - tolerance else floor_to_step(pair.perp,
                                                                             free_spot)
    spot = min(free_spot, perp)
    if perp <= 0:
        return refuse(f"no {base} spot on {venue_id} beyond what the journal's positions "
                      f"hold hedges it ({free_spot} free of claims)")
    excess = quantity - perp
    question = (f"Adopt {venue_id} {symbol}: perp short {perp} and {spot} {base} spot as a "
                "journal position (no order is sent)?")
    if adoption.confirm is not None and not adoption.confirm(question):
        return refuse("declined")
    adopted = journal.adopt_position(
        venue_id, base, pair.spot.symbol, symbol, spot=spot, perp=perp,
        perp_entry_price=position.entry_price,
        detail={"venue_short": position.quantity, "spot_held": view.spot_total.get(base),
                "unhedged_perp": excess})
    view.journal_spot[base] += spot
    entry = "unknown" if position.entry_price is None else position.entry_price
    report.findings.append(Finding(
        "adopted", venue_id, adopted.position_id,
        f"{symbol}: perp short {perp}, spot {spot} {base}; perp entry {entry}, spot cost "
        "unknown", "adopted as an open position; no order sent"))
    if excess > tolerance:
        report.findings.append(Finding(
            "naked_leg", venue_id, symbol,
            f"perp short {excess} {base} beyond the {free_spot} {base} spot free to hedge "
            "it", "not adopted; not touched (no order sent during adoption)"))


def _report_open_orders(journal: Journal, venue_id: str, open_orders, report: Reconciliation
                        ) -> None:
    """Working orders the journal does not know (placed by hand or by another program) are
    reported, never canceled. Ours were settled by step 1: market and IOC orders end, and
    a pending intent's working order is canceled there."""
    for order in open_orders:
        if journal.order(order.client_order_id or "") is not None:
            continue
        report.findings.append(Finding(
            "unknown_order", venue_id, order.symbol,
            f"{order.side.value} {order.quantity} ({order.client_order_id or order.venue_order_id}"
            ") is working and not in the journal", "not touched"))


async def _repair(journal: Journal, execution: TwoLegExecution, report: Reconciliation,
                  position, leg: Leg, side: Side, quantity: Decimal, reason: str, *,
                  spot: Decimal, perp: Decimal) -> None:
    journal.adjust_position(position.position_id, spot=spot, perp=perp, reason=reason)
    try:
        result = await execution.repair(position.position_id, leg, side, quantity, reason)
    except (InvalidOrder, ExecutionIncomplete) as err:
        report.findings.append(Finding("naked_leg", position.venue, position.position_id,
                                       reason, f"not closed: {err}"))
        return
    action = (f"closed: {side.value} {quantity} {position.base} {leg.name.lower()}"
              if result.state is IntentState.DONE else f"not closed: {result.note}")
    report.findings.append(Finding("naked_leg", position.venue, position.position_id, reason,
                                   action))
