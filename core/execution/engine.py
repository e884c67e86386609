"""Opening and closing a carry position in two legs, with the guarantees every executor gets.

An executor only decides the order of the legs within a slice and how the target is cut
into slices (see :mod:`perpcarry.execution.executors`). This module does the rest, the same
way for all of them:

1. every slice of both legs is sized and checked against the venue's steps, minimum and
   maximum quantities and minimum notional before anything is journalled or sent;
2. the intent and every order it may send are journalled (write-ahead);
3. the executor runs each slice through :class:`SliceLegs`, which sends through
   :class:`~perpcarry.execution.legs.LegSender`;
4. after each slice, and after any failure, the intent's two legs are compared: whatever
   one leg did beyond the other (a rejected second leg, a partial fill, a fee taken in base)
   is reversed by an unwind order on the leg that went further, once it exceeds the
   tolerance;
5. the intent is finished: done, partial (both legs hedged below the target), unwound or
   failed.

An outcome that stays unknown stops the intent where it is (nothing more is sent) and
leaves it pending for recovery; it is never guessed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from loguru import logger

from perpcarry.domain.errors import InvalidOrder, PerpcarryError, VenueError
from perpcarry.domain.types import CarryPair, Market
from perpcarry.execution.crash import crash_point
from perpcarry.execution.journal import (
    Intent,
    IntentState,
    Journal,
    JournalOrder,
    OrderEvent,
    Purpose,
)
from perpcarry.execution.legs import (
    LegFailed,
    LegResult,
    LegSender,
    LegUnresolved,
    OrderUpdates,
)
from perpcarry.venues.orders import (
    Leg,
    OrderRequest,
    OrderVenue,
    Side,
    check_order_size,
    client_order_id,
    floor_to_step,
)

Checks = Callable[[OrderRequest, "TradeContext"], list[str]]
"""The pre-trade checks: every reason to refuse an order (``Registry.pre_trade_vetoes``)."""

if TYPE_CHECKING:
    from perpcarry.execution.checks import TradeContext


class ExecutionIncomplete(PerpcarryError):
    """An order's outcome stayed unknown: the intent is left pending for ``reconcile``."""

    exit_code = 3


@dataclass(frozen=True)
class ExecutionResult:
    intent_id: str
    position_id: str
    state: IntentState
    spot_change: Decimal  # base bought (open) or sold (close) net of fees in base, signed
    perp_change: Decimal  # base shorted (open, positive) or bought back (close, negative)
    note: str | None


@dataclass(frozen=True)
class SliceLimits:
    """What bounds a slice, in base: both legs' per-order maximum and minimum (quantity and
    notional at the reference price), the coarser quantity step, and the slice count asked
    for (``--slices``, ``[execution] slices``)."""

    max_slice: Decimal
    min_slice: Decimal
    step: Decimal
    requested: int


@dataclass(frozen=True)
class Pacing:
    """What an executor may wait on between slices."""

    pause_seconds: float
    sleep: Callable[[float], Awaitable[None]]
    # A reason to stop (the spread or basis moved beyond its limit), or None.
    basis_check: Callable[[], Awaitable[str | None]] | None = None


@runtime_checkable
class Executor(Protocol):
    """An execution strategy: how a target is cut into slices and in which order a slice's
    two legs are sent. Registered through the ``register_executors`` hook; the engine gives
    every executor the same guarantees (write-ahead journal, outcome-unknown resolution,
    unwinding whatever one leg did beyond the other)."""

    name: str
    description: str

    def slices(self, target: Decimal, limits: SliceLimits) -> tuple[Decimal, ...]:
        """Cut ``target`` (base) into slice quantities, each a multiple of ``limits.step``
        between ``limits.min_slice`` and ``limits.max_slice``, summing to ``target``."""

    async def run_slice(self, legs: SliceLegs, quantity: Decimal) -> None:
        """Send one slice through ``legs``. A failure of either leg is raised as it comes
        (``LegFailed``); the engine then reverses whatever the other leg did beyond it."""

    async def between_slices(self, slice_index: int, pacing: Pacing) -> str | None:
        """Called before every slice after the first: a reason to stop slicing, or None to
        go on."""


class SliceLegs:
    """The two legs of one slice, as an executor sends them."""

    def __init__(self, execution: TwoLegExecution, slice_index: int) -> None:
        self._execution = execution
        self.slice_index = slice_index

    async def perp(self, quantity: Decimal) -> LegResult:
        """Send the perp leg of this slice for ``quantity`` base."""
        return await self._execution.send_leg(Leg.PERP, self.slice_index, quantity)

    async def spot(self, quantity: Decimal) -> LegResult:
        """Send the spot leg of this slice for ``quantity`` base (sized down to the spot
        actually held when selling)."""
        return await self._execution.send_leg(Leg.SPOT, self.slice_index, quantity)

    async def both(self, quantity: Decimal) -> None:
        """Send both legs at once; the first failure is raised after both have an outcome."""
        results = await asyncio.gather(self.perp(quantity), self.spot(quantity),
                                       return_exceptions=True)
        for outcome in results:
            if isinstance(outcome, LegUnresolved):
                raise outcome
        for outcome in results:
            if isinstance(outcome, BaseException):
                raise outcome


class TwoLegExecution:
    """One open or close of one carry position on one venue."""

    def __init__(self, journal: Journal, venue: OrderVenue, pair: CarryPair, *,
                 reference_price: Decimal, tolerance: Decimal | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 max_attempts: int = 2, checks: Checks | None = None,
                 updates: OrderUpdates | None = None) -> None:
        self.journal = journal
        self.venue = venue
        self.pair = pair
        self.reference_price = reference_price
        coarser = max(_step(pair.spot), _step(pair.perp))
        self.tolerance = coarser if tolerance is None else tolerance
        self.sleep = sleep
        self.max_attempts = max_attempts
        self.sender = LegSender(journal, venue, sleep, max_attempts=max_attempts,
                                updates=updates)
        self.checks = checks
        # What the pre-trade checks see; set by the caller before ``run``.
        self.context: TradeContext | None = None
        self.intent: Intent | None = None
        self._orders: dict[tuple[Leg, int], JournalOrder] = {}

    # -- planning ----------------------------------------------------------------------

    def plan(self, action: str, position_id: str, target: Decimal, executor: Executor,
             requested_slices: int = 1) -> Intent:
        """Size and check every slice of both legs, then journal the intent and its orders.
        Nothing is journalled when a check fails."""
        step = max(_step(self.pair.spot), _step(self.pair.perp))
        target = floor_to_step_of(target, step)
        max_slice = _max_slice(self.pair)
        min_slice = _min_slice(self.pair, self.reference_price, step)
        if target < min_slice:
            raise InvalidOrder(self.pair.venue, f"{self.pair.label}: {target} {self.pair.base} "
                               f"is below the smallest order both legs accept ({min_slice})")
        slices = executor.slices(target, SliceLimits(max_slice, min_slice, step,
                                                     requested_slices))
        for quantity in slices:
            for market in (self.pair.spot, self.pair.perp):
                check_order_size(market, quantity, self.reference_price)
        intent = Intent(self.journal.new_id(), position_id, action, self.pair.venue,
                        self.pair.base, self.pair.spot.symbol, self.pair.perp.symbol, target,
                        executor.name, tuple(slices))
        orders = [self._entry(intent, leg, index, quantity)
                  for index, quantity in enumerate(slices) for leg in (Leg.PERP, Leg.SPOT)]
        self.journal.begin_intent(intent, orders)
        self.intent = intent
        self._orders = {(o.leg, o.slice): o for o in orders}
        crash_point("after_intent")
        return intent

    def resume(self, intent: Intent) -> None:
        """Continue a journalled intent (recovery): its orders as the journal has them, the
        latest attempt of each."""
        self.intent = intent
        self._orders = {(o.leg, o.slice): o for o in self.journal.orders(intent.intent_id)
                        if o.purpose is Purpose.ENTRY}

    def _entry(self, intent: Intent, leg: Leg, index: int, quantity: Decimal) -> JournalOrder:
        opening = intent.action == "open"
        side = {(Leg.PERP, True): Side.SELL, (Leg.SPOT, True): Side.BUY,
                (Leg.PERP, False): Side.BUY, (Leg.SPOT, False): Side.SELL}[leg, opening]
        market = self.pair.perp if leg is Leg.PERP else self.pair.spot
        return JournalOrder(client_order_id(intent.intent_id, leg, index, 0),
                            intent.intent_id, leg, index, 0, Purpose.ENTRY, self.pair.venue,
                            market.symbol, side, quantity,
                            reduce_only=leg is Leg.PERP and not opening)

    # -- running -----------------------------------------------------------------------

    async def run(self, executor: Executor, pacing: Pacing | None = None) -> ExecutionResult:
        """Run every planned slice, rebalance, and finish the intent."""
        intent = self._require_intent()
        failure: LegFailed | None = None
        stopped: str | None = None
        try:
            for index, quantity in enumerate(intent.slice_plan):
                if index:
                    stopped = await executor.between_slices(
                        index, pacing or Pacing(0, self.sleep))
                    if stopped:
                        break
                try:
                    await executor.run_slice(SliceLegs(self, index), quantity)
                except LegFailed as err:
                    failure = err
                await self.complete_fees()
                await self.rebalance()
                if failure is not None:
                    break
        except LegUnresolved as err:
            raise ExecutionIncomplete(
                f"{intent.venue} {intent.base}: {err}; the intent {intent.intent_id} stays "
                "pending: run `perpcarry reconcile`") from None
        return self.finish(failure.reason if failure else stopped, failed=failure is not None)

    async def send_leg(self, leg: Leg, index: int, quantity: Decimal) -> LegResult:
        intent = self._require_intent()
        order = self._orders[leg, index]
        market = self.pair.perp if leg is Leg.PERP else self.pair.spot
        if order.side is Side.SELL and leg is Leg.SPOT:
            quantity = min(quantity, self.journal.position(intent.position_id).spot_quantity)
        quantity = floor_to_step(market, quantity)
        if quantity <= 0:
            raise LegFailed(order, "nothing to send after sizing to the filled quantity")
        if quantity != order.quantity:
            self.journal.resize(order.client_order_id, quantity)
            order = self.journal.order(order.client_order_id)
        check_order_size(market, quantity, self.reference_price)
        if self.checks is not None and self.context is not None:
            request = OrderRequest(market, order.side, quantity, order.client_order_id,
                                   reduce_only=order.reduce_only)
            vetoes = self.checks(request, self.context)
            if vetoes:
                self.journal.mark(order.client_order_id, OrderEvent.REJECTED,
                                  {"vetoed": vetoes})
                raise LegFailed(order, "vetoed by " + "; ".join(vetoes))
        result = await self.sender.send(order, market)
        crash_point("between_legs")
        return result

    def leg_changes(self) -> tuple[Decimal, Decimal]:
        """What this intent did to each leg so far, in base: spot held (+bought, -sold,
        net of fees in base) and perp short (+sold, -bought), entries and unwinds."""
        spot = perp = Decimal(0)
        for order in self.journal.orders(self._require_intent().intent_id):
            if order.leg is Leg.SPOT:
                spot += order.delivered if order.side is Side.BUY else -order.delivered
            else:
                perp += order.filled if order.side is Side.SELL else -order.filled
        return spot, perp

    async def complete_fees(self) -> None:
        """Read the fees a venue left out of its answer (``OrderState.fees_pending``: a
        perp fill, whose fee is never in base) once both legs of the slice are sent, so the
        fee lookup is never inside the naked window. A lookup that fails leaves the fee
        pending in the journal for the next query; it never changes a quantity."""
        intent = self._require_intent()
        for order in self.journal.orders(intent.intent_id):
            if not order.fees_pending:
                continue
            market = self.pair.perp if order.leg is Leg.PERP else self.pair.spot
            try:
                state = await self.venue.fetch_order(market, order.client_order_id)
            except VenueError as err:
                logger.warning("{}: fee of order {} not read yet: {}", intent.venue,
                               order.client_order_id, err)
                continue
            if state is not None:
                self.journal.record_state(state)

    async def rebalance(self) -> None:
        """Reverse what one leg did beyond the other, when the position's delta exceeds the
        tolerance. An unwind that fills short (a thin book) is followed by another, up to
        ``max_attempts`` unwinds; still beyond the tolerance after them, or an unwind
        refused or of unknown outcome, is ``ExecutionIncomplete``: the intent stays pending
        for ``reconcile``, never finished with a naked leg."""
        intent = self._require_intent()
        for _ in range(self.max_attempts):
            # The whole position's delta, not this intent's alone: a close starts from the
            # open's residual (a fee taken in base), and the two add up.
            excess = self.journal.position(intent.position_id).delta  # > 0: net long base
            if abs(excess) <= self.tolerance or not await self._unwind(intent, excess):
                return
        excess = self.journal.position(intent.position_id).delta
        if abs(excess) > self.tolerance:
            raise ExecutionIncomplete(
                f"{intent.venue} {intent.base}: {self.max_attempts} unwinds filled short; the "
                f"position is unhedged by {excess} {intent.base}: run `perpcarry reconcile`")

    async def _unwind(self, intent: Intent, excess: Decimal) -> bool:
        """One unwind order for ``excess`` (spot minus perp, base); False when it is dust
        the venue will not take (left, and flagged)."""
        opening = intent.action == "open"
        # The leg that went further in the intent's direction is reversed.
        if opening:
            leg, side = (Leg.SPOT, Side.SELL) if excess > 0 else (Leg.PERP, Side.BUY)
        else:
            leg, side = (Leg.PERP, Side.SELL) if excess > 0 else (Leg.SPOT, Side.BUY)
        market = self.pair.perp if leg is Leg.PERP else self.pair.spot
        quantity = floor_to_step(market, abs(excess))
        if leg is Leg.SPOT and side is Side.SELL:
            quantity = min(quantity, floor_to_step(
                market, self.journal.position(intent.position_id).spot_quantity))
        try:
            check_order_size(market, quantity, self.reference_price)
        except InvalidOrder as err:
            # Dust the venue will not take: left, and said.
            self.journal.set_flag(f"residual:{intent.position_id}", str(err))
            return False
        crash_point("before_unwind")
        attempt = sum(1 for o in self.journal.orders(intent.intent_id)
                      if o.purpose is Purpose.UNWIND and o.leg is leg)
        order = JournalOrder(client_order_id(intent.intent_id, leg, 0, attempt, unwind=True),
                             intent.intent_id, leg, 0, attempt, Purpose.UNWIND,
                             intent.venue, market.symbol, side, quantity,
                             reduce_only=leg is Leg.PERP and side is Side.BUY)
        self.journal.plan_order(order)
        try:
            await self.sender.send(order, market)
        except (LegFailed, LegUnresolved) as err:
            reason = err.reason if isinstance(err, LegFailed) else str(err)
            raise ExecutionIncomplete(
                f"{intent.venue} {intent.base}: unwind of {quantity} {intent.base} on the "
                f"{leg.name.lower()} leg failed ({reason}); the position is unhedged by "
                f"{excess} {intent.base}: run `perpcarry reconcile`") from None
        return True

    async def repair(self, position_id: str, leg: Leg, side: Side, quantity: Decimal,
                     reason: str) -> ExecutionResult:
        """Close a naked leg reconciliation found: one journalled unwind order of
        ``quantity`` base on ``leg``, as a repair intent of its own."""
        market = self.pair.perp if leg is Leg.PERP else self.pair.spot
        quantity = floor_to_step(market, quantity)
        check_order_size(market, quantity, self.reference_price)
        intent = Intent(self.journal.new_id(), position_id, "repair", self.pair.venue,
                        self.pair.base, self.pair.spot.symbol, self.pair.perp.symbol,
                        quantity, "reconcile", (quantity,), note=reason)
        order = JournalOrder(client_order_id(intent.intent_id, leg, 0, 0, unwind=True),
                             intent.intent_id, leg, 0, 0, Purpose.UNWIND, self.pair.venue,
                             market.symbol, side, quantity,
                             reduce_only=leg is Leg.PERP and side is Side.BUY)
        self.journal.begin_intent(intent, [order])
        self.intent = intent
        try:
            await self.sender.send(order, market)
        except LegFailed as err:
            return self.finish(f"{reason}; repair failed: {err.reason}", failed=True)
        except LegUnresolved as err:
            raise ExecutionIncomplete(f"{intent.venue} {intent.base}: repair {err}; run "
                                      "`perpcarry reconcile` again") from None
        return self.finish(reason, failed=False)

    def finish(self, note: str | None, *, failed: bool) -> ExecutionResult:
        intent = self._require_intent()
        spot, perp = self.leg_changes()
        # Called once the legs are rebalanced: a perp change beyond the tolerance is hedged.
        # A fee the spot leg paid in base shrinks both legs by design (the perp is sized to
        # the spot delivered): that is the target reached, not a partial.
        base_fees = sum((f.amount for o in self.journal.orders(intent.intent_id)
                         if o.leg is Leg.SPOT for f in o.fees if f.currency == self.pair.base),
                        Decimal(0))
        short_of_target = intent.target_base - abs(perp) > self.tolerance + base_fees
        if intent.action != "repair" and short_of_target and abs(perp) > self.tolerance:
            state = IntentState.PARTIAL
            note = note or f"{abs(perp)} of {intent.target_base} {intent.base} hedged"
        elif not failed:
            state = IntentState.DONE
        elif any(o.filled for o in self.journal.orders(intent.intent_id)):
            state = IntentState.UNWOUND
        else:
            state = IntentState.FAILED
        crash_point("before_finish")
        spot_market = self.pair.spot
        dust = max(spot_market.min_quantity, spot_market.quantity_step) * spot_market.contract_size
        self.journal.finish_intent(intent.intent_id, state, note, spot_dust=dust)
        return ExecutionResult(intent.intent_id, intent.position_id, state, spot, perp, note)

    def _require_intent(self) -> Intent:
        if self.intent is None:
            raise RuntimeError("plan() first")
        return self.intent


def _step(market: Market) -> Decimal:
    return market.quantity_step * market.contract_size


def floor_to_step_of(quantity: Decimal, step: Decimal) -> Decimal:
    return (quantity // step) * step


def _max_slice(pair: CarryPair) -> Decimal:
    """The largest base quantity one market order may carry on both legs."""
    limits = []
    for market in (pair.spot, pair.perp):
        maximum = market.max_market_quantity or market.max_quantity
        if maximum is not None:
            limits.append(maximum * market.contract_size)
    step = max(_step(pair.spot), _step(pair.perp))
    return floor_to_step_of(min(limits), step) if limits else Decimal("Infinity")


def _min_slice(pair: CarryPair, price: Decimal, step: Decimal) -> Decimal:
    """The smallest base quantity both legs accept at ``price``, on the coarser step."""
    smallest = step
    for market in (pair.spot, pair.perp):
        smallest = max(smallest, market.min_quantity * market.contract_size)
        if market.min_notional is not None:
            smallest = max(smallest, market.min_notional / price)
    return -((-smallest) // step) * step  # rounded up to the step
