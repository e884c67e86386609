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
   journalled repair intent); a perp position or an open order the journal does not know is
   reported and never touched (there is no adoption: see docs/execution.md).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from perpcarry.domain.errors import InvalidOrder, OutcomeUnknown
from perpcarry.domain.types import CarryPair
from perpcarry.execution.engine import ExecutionIncomplete, TwoLegExecution
from perpcarry.execution.journal import Intent, IntentState, Journal, OrderEvent
from perpcarry.venues.orders import Leg, OrderVenue, Side, Wallet, resolve_outcome

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
        return all(f.kind in {"confirmed", "resolved"} for f in self.findings)


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
        filled = any(o.filled for o in journal.orders(intent.intent_id))
        complete = abs(abs(perp) - intent.target_base) <= execution.tolerance
        state = (IntentState.DONE if complete else
                 IntentState.UNWOUND if filled else IntentState.FAILED)
        note = "recovered" if complete else f"recovered: spot {spot}, perp {perp} of " \
                                            f"{intent.target_base} {intent.base}"
        execution.finish(note, failed=state is not IntentState.DONE)
        report.findings.append(Finding("resolved", intent.venue, intent.intent_id, note,
                                       f"finished as {state.value}"))


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


async def reconcile_positions(journal: Journal, venues: Mapping[str, OrderVenue],
                              markets: Markets, report: Reconciliation) -> None:
    """Compare the journal's open positions with each venue's (step 2), closing a naked leg
    above the tolerance. Bulk requests only: positions, balances and open orders once per
    venue."""
    by_venue = defaultdict(list)
    for position in journal.positions():
        by_venue[position.venue].append(position)
    for venue_id, venue in venues.items():
        held = by_venue.get(venue_id, [])
        positions, balances, open_orders = await asyncio.gather(
            venue.fetch_positions(), venue.fetch_balances(), venue.fetch_open_orders())
        _report_open_orders(journal, venue_id, open_orders, report)
        shorts = {p.symbol: p.quantity for p in positions if p.side is Side.SELL}
        spot_total: dict[str, Decimal] = defaultdict(Decimal)
        for wallet in (Wallet.SPOT, Wallet.UNIFIED):
            for currency, balance in balances.get(wallet, {}).items():
                spot_total[currency] += balance.total
        # Several journal positions may share a symbol: compare sums, repair the newest.
        journal_perp: dict[str, Decimal] = defaultdict(Decimal)
        journal_spot: dict[str, Decimal] = defaultdict(Decimal)
        for position in held:
            journal_perp[position.perp_symbol] += position.perp_quantity
            journal_spot[position.base] += position.spot_quantity
        newest = {p.base: p for p in held}
        for base, position in newest.items():
            pair = await markets.pair(venue_id, base)
            tolerance = markets.tolerance(pair)
            venue_short = shorts.get(position.perp_symbol, Decimal(0))
            venue_spot = spot_total.get(base, Decimal(0))
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
            for each in held:
                if each.base == base and perp_gap <= tolerance and spot_gap <= tolerance:
                    report.findings.append(Finding(
                        "confirmed", venue_id, each.position_id,
                        f"spot {each.spot_quantity}, perp {each.perp_quantity} {base}",
                        "none"))
        known = {p.perp_symbol for p in held}
        for position in positions:
            if position.side is Side.SELL and position.symbol in known:
                continue
            report.findings.append(Finding(
                "unknown_position", venue_id, position.symbol,
                f"{'short' if position.side is Side.SELL else 'long'} {position.quantity} "
                "not in the journal (opened by hand?)", "not touched"))


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
