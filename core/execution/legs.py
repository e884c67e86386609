"""Sending one order of one leg, journalled, to a known outcome.

Every executor sends through :class:`LegSender`, which keeps the rules that make two-leg
execution safe in one place:

- the order is already in the journal (planned) when :meth:`LegSender.send` is called; it
  is marked sent before the request leaves;
- a rejection is final for that order; ``OutcomeUnknown`` is answered by querying the client
  id (:func:`perpcarry.venues.orders.resolve_outcome`), never by sending again;
- only an order proven absent may be followed by a new attempt, under a new client id that
  is journalled before it is sent;
- an acknowledged order is followed until it is final (market and IOC orders end quickly),
  and every state the venue reports is recorded, so the journal's position follows the
  venue's fills. With a live orders stream (:class:`OrderUpdates`) each wait between
  queries ends as soon as the order's update arrives, and a final state from the stream
  ends the following; without one, or when no update comes within the delay, the order is
  queried by client id exactly as without streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Protocol

from perpcarry.domain.errors import (
    DuplicateClientOrderId,
    InsufficientFunds,
    NetworkError,
    OutcomeUnknown,
    RateLimitError,
    VenueError,
)
from perpcarry.domain.types import Market
from perpcarry.execution.crash import crash_point
from perpcarry.execution.journal import Journal, JournalOrder, OrderEvent, Purpose
from perpcarry.venues.orders import (
    OrderRequest,
    OrderState,
    OrderVenue,
    client_order_id,
    resolve_outcome,
)

Sleep = Callable[[float], Awaitable[None]]


class OrderUpdates(Protocol):
    """A venue's order updates as its account stream pushes them (``AccountBook``)."""

    @property
    def live(self) -> bool:
        """Whether the orders stream is live now (a stale one is never waited on)."""

    async def wait(self, client_order_id: str, timeout: float) -> OrderState | None:
        """The order's next update within ``timeout`` seconds (a final one known already:
        at once); None when none came or the stream is not live."""


class LegFailed(Exception):
    """The order did not fill at all and will not: rejected, or proven absent after every
    attempt. ``reason`` is the venue's word."""

    def __init__(self, order: JournalOrder, reason: str, *, funds: bool = False) -> None:
        super().__init__(f"{order.symbol} {order.side.value} {order.quantity}: {reason}")
        self.order = order
        self.reason = reason
        self.funds = funds  # insufficient balance or margin


class LegUnresolved(Exception):
    """The order's outcome is still unknown after querying: nothing more may be sent for
    this intent until recovery resolves it."""

    def __init__(self, order: JournalOrder, reason: str) -> None:
        super().__init__(f"{order.symbol} {order.client_order_id}: {reason}")
        self.order = order


@dataclass(frozen=True)
class LegResult:
    order: JournalOrder  # the journal's record after the last state (filled, canceled, ...)

    @property
    def filled(self) -> Decimal:
        return self.order.filled

    @property
    def delivered(self) -> Decimal:
        return self.order.delivered


class LegSender:
    """Sends journalled orders to one venue."""

    def __init__(self, journal: Journal, venue: OrderVenue, sleep: Sleep = asyncio.sleep,
                 *, max_attempts: int = 2, poll_delays: tuple[float, ...] = (0.05, 0.1, 0.2,
                                                                              0.5, 1, 2),
                 updates: OrderUpdates | None = None) -> None:
        self.journal = journal
        self.venue = venue
        self.sleep = sleep
        self.max_attempts = max_attempts
        self.poll_delays = poll_delays
        self.updates = updates  # None: the venue's orders are only queried

    async def send(self, order: JournalOrder, market: Market) -> LegResult:
        """Send ``order`` (already planned in the journal) and return its final state.
        Raises :class:`LegFailed` when it filled nothing and cannot, and
        :class:`LegUnresolved` when its outcome stays unknown."""
        while True:
            result = await self._attempt(order, market)
            if result is not None:
                return result
            # Proven absent: one more attempt under a new id, journalled first.
            if order.attempt + 1 >= self.max_attempts:
                raise LegFailed(order, f"not accepted after {self.max_attempts} attempts")
            order = replace(order, attempt=order.attempt + 1, state=OrderEvent.PLANNED,
                            client_order_id=client_order_id(
                                order.intent_id, order.leg, order.slice, order.attempt + 1,
                                unwind=order.purpose is Purpose.UNWIND))
            self.journal.plan_order(order)

    async def _attempt(self, order: JournalOrder, market: Market) -> LegResult | None:
        """One client id to a final state; None when it is proven absent."""
        request = OrderRequest(market, order.side, order.quantity, order.client_order_id,
                               reduce_only=order.reduce_only)
        self.journal.mark(order.client_order_id, OrderEvent.SENT)
        crash_point("after_sent")
        try:
            state = await self.venue.place_order(request)
        except DuplicateClientOrderId:
            # Our id is already on the venue: an earlier send of this very order got there.
            state = await self._query(order, market)
            if state is None:
                raise LegUnresolved(order, "venue reports a duplicate id it cannot find"
                                    ) from None
        except OutcomeUnknown as err:
            self.journal.mark(order.client_order_id, OrderEvent.OUTCOME_UNKNOWN,
                              {"reason": _reason(err)})
            crash_point("after_outcome_unknown")
            state = await self._query(order, market)
            if state is None:
                self.journal.mark(order.client_order_id, OrderEvent.ABSENT)
                return None
        except (RateLimitError, NetworkError) as err:
            # Refused before the venue processed it (a rate limit, a refused timestamp, no
            # connection made): the one error table turns every failure after which the venue
            # may have acted into OutcomeUnknown, so this order is absent. Wait, then a new
            # attempt (the same id is never sent twice).
            self.journal.mark(order.client_order_id, OrderEvent.ABSENT,
                              {"refused": _reason(err)})
            retry_after = err.retry_after if isinstance(err, RateLimitError) else None
            await self.sleep(retry_after or self.poll_delays[min(order.attempt,
                                                                 len(self.poll_delays) - 1)])
            return None
        except VenueError as err:
            # A definite refusal (after DuplicateClientOrderId, an InvalidOrder of its own):
            # rejected, margin or balance short, a key without the permission. Nothing was
            # executed and sending again would not change the answer.
            recorded = self._rejected(order, err)
            raise LegFailed(recorded, _reason(err),
                            funds=isinstance(err, InsufficientFunds)) from None
        crash_point("after_acknowledged")
        recorded = self.journal.record_state(state)
        for delay in self.poll_delays:
            if state.status.is_final:
                break
            pushed = await self._next_update(order, delay)
            if pushed is not None:
                state = pushed
            else:
                state = await self._query(order, market)
                if state is None:
                    raise LegUnresolved(order, "acknowledged order no longer found")
            recorded = self.journal.record_state(state)
        if not state.status.is_final:
            # A market or IOC order still working after the polls: cancel what is left.
            state = await self.venue.cancel_order(market, order.client_order_id)
            if state is None:
                raise LegUnresolved(order, "working order vanished while being canceled")
            recorded = self.journal.record_state(state)
        return LegResult(recorded)

    async def _next_update(self, order: JournalOrder, delay: float) -> OrderState | None:
        """The order's update from a live stream within ``delay``; None (after waiting out
        ``delay``, as the polls always did) when there is none: the caller queries REST."""
        if self.updates is None or not self.updates.live:
            await self.sleep(delay)
            return None
        pushed = await self.updates.wait(order.client_order_id, delay)
        if pushed is not None and pushed.filled_quantity and not pushed.fees \
                and not pushed.fees_pending:
            # A fill pushed without its fee (which may be in base, changing what was
            # delivered): the query by client id reads it, as fetch_order always does.
            return None
        return pushed

    async def _query(self, order: JournalOrder, market: Market):
        try:
            return await resolve_outcome(self.venue, market, order.client_order_id,
                                         sleep=self.sleep)
        except OutcomeUnknown as err:
            raise LegUnresolved(order, _reason(err)) from None

    def _rejected(self, order: JournalOrder, err: VenueError) -> JournalOrder:
        self.journal.mark(order.client_order_id, OrderEvent.REJECTED, {"reason": _reason(err)})
        return replace(order, state=OrderEvent.REJECTED)


def _reason(err: VenueError) -> str:
    return str(err).removeprefix(f"{err.venue}: ")


# The journal states after which an order may still change on the venue.
WORKING = frozenset({OrderEvent.SENT, OrderEvent.ACKNOWLEDGED, OrderEvent.PARTIALLY_FILLED,
                     OrderEvent.OUTCOME_UNKNOWN})


def working_orders(journal: Journal, venue_id: str) -> list[tuple[str, str]]:
    """(symbol, client order id) of the orders the journal sent on ``venue_id`` that are not
    final yet: what an account stream's reconcile reads by client id after a reconnect."""
    return [(order.symbol, order.client_order_id)
            for intent in journal.unfinished_intents() if intent.venue == venue_id
            for order in journal.orders(intent.intent_id) if order.state in WORKING]
