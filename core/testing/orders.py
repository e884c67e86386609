"""The conformance kit of the order half: what every :class:`OrderVenue` must do, run
against a harness the venue's tests provide (recordings, a fake exchange, the paper venue).

Subclass :class:`OrderVenueConformance` and give it ``order_harness``, an async context
manager yielding a fresh :class:`OrderHarness` per check::

    class TestPaperOrders(OrderVenueConformance):
        @asynccontextmanager
        async def order_harness(self, tmp_path):
            venue = ...
            yield OrderHarness(venue, capabilities, spot, perp, price, faults=...)

A check the harness cannot support (outcome-unknown on a recording, a funding settlement
without a clock) is named in ``OrderHarness.unsupported`` with the reason; the kit reports
it as a skip carrying that reason. A check missing what it needs without such a declaration
fails: nothing is skipped silently.

A harness on a recording that holds no order interactions (the real markets of a venue and
nothing else) sets ``OrderHarness.not_recorded`` to the error a request missing from the
recording raises. The checks decided before sending (:data:`PRE_SEND_CHECKS`) then run
for real: a refusal that raises ``InvalidOrder`` and not that error was never sent, and an
order the rules accept is shown to reach the wire by raising it. Every other check needs a
round trip and must be declared unsupported by such a harness.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Protocol

import pytest

from perpcarry.domain.errors import DuplicateClientOrderId, InvalidOrder, OutcomeUnknown
from perpcarry.domain.types import Market
from perpcarry.venues.orders import (
    Leg,
    OrderCapabilities,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    OrderVenue,
    Side,
    TimeInForce,
    Wallet,
    client_order_id,
    resolve_outcome,
)

CHECKS = frozenset({
    "client_id_round_trip", "state_machine", "quantity_steps", "min_notional",
    "max_quantity", "reduce_only", "fee_currency", "funding_sign", "balances_after_fills",
    "outcome_unknown",
})
# The checks a venue decides before sending anything (steps, minimum notional, maximum).
PRE_SEND_CHECKS = frozenset({"quantity_steps", "min_notional", "max_quantity"})


class FaultControl(Protocol):
    """Faults a harness can make its venue produce (the paper venue's ``PaperFaults``)."""

    def reject(self, error=None) -> None: ...

    def outcome_unknown(self, *, accepted: bool) -> None: ...

    def fail_queries(self, count: int) -> None: ...


async def _no_wait(seconds: float) -> None:
    return None


@dataclass
class OrderHarness:
    """One venue under test, fresh for each check.

    ``price`` is a current price of the base in the perp's settle currency, for sizing
    orders. ``settle_funding`` moves the venue past the perp's next funding settlement and
    returns the rate that settles. ``extra_fee_currencies`` are assets the venue may charge
    fees in besides the traded ones (BNB). Client ids are ``intent_id``'s, numbered in
    order, so a recording replays them; a harness on a live sandbox gives a fresh one."""

    venue: OrderVenue
    capabilities: OrderCapabilities
    spot: Market
    perp: Market
    price: Decimal
    faults: FaultControl | None = None
    settle_funding: Callable[[], Awaitable[Decimal]] | None = None
    extra_fee_currencies: frozenset[str] = frozenset()
    sleep: Callable[[float], Awaitable[None]] = _no_wait
    unsupported: dict[str, str] = field(default_factory=dict)
    # The error a request missing from the harness's recording raises, where the harness
    # replays a recording with no order interactions (see the module docstring).
    not_recorded: type[Exception] | None = None
    intent_id: str = "kit"
    _ids: int = 0

    def next_id(self, leg: Leg = Leg.SPOT) -> str:
        """The next client order id of this check (the kit never reuses one)."""
        self._ids += 1
        return client_order_id(self.intent_id, leg, self._ids, 0)

    def size(self, market: Market, times: int = 1) -> Decimal:
        """The smallest quantity (base units, whole steps) the venue accepts for a market
        order at ``price``, times ``times``."""
        step = market.quantity_step * market.contract_size
        least = market.min_quantity * market.contract_size
        if market.min_notional is not None:
            # 10 % over the minimum notional: the fill price may sit below ``price``.
            least = max(least, market.min_notional * Decimal("1.1") / self.price)
        steps = (least / step).to_integral_value(ROUND_CEILING)
        return steps * step * times


    def min_notional_market(self) -> Market | None:
        """The harness market on which an order of at least the minimum quantity can fall
        below the minimum notional; None when neither has one."""
        for market in (self.spot, self.perp):
            least = market.min_quantity * market.contract_size
            if market.min_notional is not None and least * self.price < market.min_notional:
                return market
        return None

    def max_quantity_market(self) -> tuple[Market, Decimal] | None:
        """The harness market with a maximum order quantity (order units) for market
        orders, and that maximum; None when neither has one."""
        for market in (self.spot, self.perp):
            maximum = market.max_market_quantity or market.max_quantity
            if maximum is not None:
                return market, maximum
        return None


class OrderVenueConformance:
    """The checks; subclasses provide ``order_harness``."""

    def order_harness(self, tmp_path: Path) -> AbstractAsyncContextManager[OrderHarness]:
        raise NotImplementedError("a conformance subclass provides order_harness(tmp_path)")

    def _run(self, tmp_path: Path, check: str, body) -> None:
        assert check in CHECKS

        async def run() -> str | None:
            async with self.order_harness(tmp_path) as harness:
                unknown = set(harness.unsupported) - CHECKS
                assert not unknown, f"harness declares unknown checks {sorted(unknown)}"
                reason = harness.unsupported.get(check)
                if reason is not None:
                    assert reason.strip(), f"{check}: declared unsupported without a reason"
                    return reason
                assert harness.not_recorded is None or check in PRE_SEND_CHECKS, (
                    f"{check} needs a round trip, which a recording without order "
                    "interactions cannot give: declare it unsupported")
                await body(harness)
                return None

        reason = asyncio.run(run())
        if reason is not None:
            pytest.skip(f"{check} declared unsupported by the harness: {reason}")

    # -- client ids ---------------------------------------------------------------------

    def test_client_id_round_trip(self, tmp_path: Path):
        async def body(h: OrderHarness):
            cid = h.next_id()
            placed = await h.venue.place_order(
                OrderRequest(h.spot, Side.BUY, h.size(h.spot), cid))
            assert placed.client_order_id == cid and placed.symbol == h.spot.symbol
            fetched = await h.venue.fetch_order(h.spot, cid)
            assert fetched is not None and fetched.client_order_id == cid
            assert fetched.venue_order_id == placed.venue_order_id
            recent = await h.venue.fetch_recent_orders(h.spot)
            assert cid in [o.client_order_id for o in recent]
            assert await h.venue.fetch_order(h.spot, h.next_id()) is None, \
                "an unknown client id is None, not an error"

        self._run(tmp_path, "client_id_round_trip", body)

    # -- the state machine --------------------------------------------------------------

    def test_state_machine(self, tmp_path: Path):
        async def body(h: OrderHarness):
            filled = await h.venue.place_order(
                OrderRequest(h.spot, Side.BUY, h.size(h.spot), h.next_id()))
            assert filled.status is OrderStatus.FILLED, filled
            assert filled.filled_quantity == filled.quantity and filled.average_price
            # A post-only bid 10 % under the market rests.
            quantity = h.size(h.spot, 2)
            bid = _on_tick(h.spot, h.price * Decimal("0.9"))
            cid = h.next_id()
            resting = await h.venue.place_order(OrderRequest(
                h.spot, Side.BUY, quantity, cid, OrderType.LIMIT, bid, TimeInForce.POST_ONLY))
            assert resting.status is OrderStatus.NEW and resting.filled_quantity == 0
            assert cid in [o.client_order_id for o in await h.venue.fetch_open_orders(h.spot)]
            canceled = await h.venue.cancel_order(h.spot, cid)
            assert canceled is not None and canceled.status is OrderStatus.CANCELED
            assert cid not in [o.client_order_id
                               for o in await h.venue.fetch_open_orders(h.spot)]
            again = await h.venue.cancel_order(h.spot, cid)
            assert again is not None and again.status is OrderStatus.CANCELED, \
                "a final state never changes"
            assert await h.venue.cancel_order(h.spot, h.next_id()) is None

        self._run(tmp_path, "state_machine", body)

    # -- size rules ---------------------------------------------------------------------

    def test_quantity_steps(self, tmp_path: Path):
        async def body(h: OrderHarness):
            for market in (h.spot, h.perp):
                step = market.quantity_step * market.contract_size
                cid = h.next_id()
                with pytest.raises(InvalidOrder):
                    await h.venue.place_order(
                        OrderRequest(market, Side.BUY, h.size(market) + step / 2, cid))
                await _never_sent(h, market, cid)
            whole_steps = OrderRequest(h.perp, Side.SELL, h.size(h.perp, 3), h.next_id(Leg.PERP))
            if h.not_recorded is not None:
                with pytest.raises(h.not_recorded):  # accepted by the rules: sent
                    await h.venue.place_order(whole_steps)
                return
            await _fund_perp(h, h.size(h.perp, 3))
            placed = await h.venue.place_order(whole_steps)
            units = placed.filled_quantity / h.perp.contract_size
            assert placed.filled_quantity > 0 and units % h.perp.quantity_step == 0

        self._run(tmp_path, "quantity_steps", body)

    def test_min_notional(self, tmp_path: Path):
        async def body(h: OrderHarness):
            market = h.min_notional_market()
            assert market is not None, ("no harness market has a minimum notional above its "
                                        "minimum quantity's worth: pick one that has, or "
                                        "declare min_notional unsupported")
            step = market.quantity_step * market.contract_size
            below = (market.min_notional / h.price * Decimal("0.9") // step) * step
            below = max(below, market.min_quantity * market.contract_size)
            cid = h.next_id()
            # A market order's notional is known only at its fill (a venue may price it at
            # an average over minutes): the rule a venue enforces before sending is checked
            # on an immediate-or-cancel order at the market's price.
            with pytest.raises(InvalidOrder, match="notional"):
                await h.venue.place_order(OrderRequest(
                    market, Side.BUY, below, cid, OrderType.LIMIT,
                    _on_tick(market, h.price), TimeInForce.IOC))
            await _never_sent(h, market, cid)

        self._run(tmp_path, "min_notional", body)

    def test_max_quantity(self, tmp_path: Path):
        async def body(h: OrderHarness):
            limited = h.max_quantity_market()
            assert limited is not None, ("neither harness market has a maximum quantity: "
                                         "pick one that has, or declare max_quantity "
                                         "unsupported")
            market, maximum = limited
            # The smallest quantity on the step above the maximum (which need not be on it).
            above = ((maximum // market.quantity_step + 1) * market.quantity_step
                     * market.contract_size)
            cid = h.next_id()
            with pytest.raises(InvalidOrder, match="maximum"):
                await h.venue.place_order(OrderRequest(market, Side.BUY, above, cid))
            await _never_sent(h, market, cid)

        self._run(tmp_path, "max_quantity", body)

    def test_reduce_only(self, tmp_path: Path):
        async def body(h: OrderHarness):
            quantity = h.size(h.perp)
            for side in Side:
                cid = h.next_id(Leg.PERP)
                with pytest.raises(InvalidOrder):
                    await h.venue.place_order(
                        OrderRequest(h.perp, side, quantity, cid, reduce_only=True))
                assert await h.venue.fetch_order(h.perp, cid) is None
            await _fund_perp(h, quantity)
            await h.venue.place_order(OrderRequest(h.perp, Side.SELL, quantity,
                                                   h.next_id(Leg.PERP)))
            with pytest.raises(InvalidOrder):  # would flip the short into a long
                await h.venue.place_order(OrderRequest(
                    h.perp, Side.BUY, quantity * 2, h.next_id(Leg.PERP), reduce_only=True))
            closed = await h.venue.place_order(OrderRequest(
                h.perp, Side.BUY, quantity, h.next_id(Leg.PERP), reduce_only=True))
            assert closed.status is OrderStatus.FILLED
            assert h.perp.symbol not in [p.symbol for p in await h.venue.fetch_positions()]

        self._run(tmp_path, "reduce_only", body)

    # -- money --------------------------------------------------------------------------

    def test_fee_currency(self, tmp_path: Path):
        async def body(h: OrderHarness):
            spot = await h.venue.place_order(
                OrderRequest(h.spot, Side.BUY, h.size(h.spot), h.next_id()))
            await _fund_perp(h, h.size(h.perp))
            perp = await h.venue.place_order(
                OrderRequest(h.perp, Side.SELL, h.size(h.perp), h.next_id(Leg.PERP)))
            if perp.fees_pending:  # the venue's answer had no fee: a query reads it
                assert not perp.fees and perp.delivered_quantity == perp.filled_quantity
                perp = await h.venue.fetch_order(h.perp, perp.client_order_id)
            assert not spot.fees_pending, "a spot fill's fee may be in base: never deferred"
            for order, allowed in ((spot, {h.spot.base, h.spot.quote}),
                                   (perp, {h.perp.settle})):
                assert order.fees, f"a taker fill of {order.symbol} reports its fee"
                for fee in order.fees:
                    assert fee.currency in allowed | h.extra_fee_currencies, (order.symbol, fee)
                    assert fee.amount >= 0, "a taker fee is paid, never received"

        self._run(tmp_path, "fee_currency", body)

    def test_funding_sign(self, tmp_path: Path):
        async def body(h: OrderHarness):
            assert h.settle_funding is not None, ("the harness cannot settle funding: give "
                                                  "settle_funding or declare funding_sign "
                                                  "unsupported")
            quantity = h.size(h.perp)
            await _fund_perp(h, quantity)
            opened = await h.venue.place_order(
                OrderRequest(h.perp, Side.SELL, quantity, h.next_id(Leg.PERP)))
            assert opened.created_at is not None, "a placed order reports when"
            rate = await h.settle_funding()
            payments = [p for p in await h.venue.fetch_funding_payments(opened.created_at)
                        if p.symbol == h.perp.symbol]
            assert len(payments) == 1, payments
            payment = payments[0]
            assert payment.currency == h.perp.settle
            # A positive rate: the short receives; a negative one, it pays.
            assert (payment.amount > 0) == (rate > 0) and (payment.amount < 0) == (rate < 0)

        self._run(tmp_path, "funding_sign", body)

    def test_balances_after_fills(self, tmp_path: Path):
        async def body(h: OrderHarness):
            spot_wallet = Wallet.SPOT if h.capabilities.separate_wallets else Wallet.UNIFIED
            before = (await h.venue.fetch_balances())[spot_wallet]
            order = await h.venue.place_order(
                OrderRequest(h.spot, Side.BUY, h.size(h.spot, 2), h.next_id()))
            after = (await h.venue.fetch_balances())[spot_wallet]
            quote_fee = sum((f.amount for f in order.fees if f.currency == h.spot.quote),
                            Decimal(0))
            _close(_total(after, h.spot.base) - _total(before, h.spot.base),
                   order.delivered_quantity, f"{h.spot.base} received")
            _close(_total(before, h.spot.quote) - _total(after, h.spot.quote),
                   order.filled_quantity * order.average_price + quote_fee,
                   f"{h.spot.quote} paid")
            if h.capabilities.separate_wallets:
                amount = h.size(h.perp) * h.price
                await h.venue.transfer(h.perp.settle, amount, Wallet.SPOT, Wallet.FUTURES)
                moved = await h.venue.fetch_balances()
                _close(_total(after, h.perp.settle) - _total(moved[Wallet.SPOT],
                                                             h.perp.settle),
                       amount, "transferred out of spot")
                assert _total(moved[Wallet.FUTURES], h.perp.settle) >= amount

        self._run(tmp_path, "balances_after_fills", body)

    # -- outcome unknown ----------------------------------------------------------------

    def test_outcome_unknown(self, tmp_path: Path):
        async def body(h: OrderHarness):
            assert h.faults is not None, ("the harness has no fault control: give faults or "
                                          "declare outcome_unknown unsupported")
            quantity = h.size(h.spot)
            # Accepted, then the answer lost: found by client id, and never sent twice. The
            # order rests (a post-only bid 10 % under the market): every venue refuses a
            # client id while its order is open, and some venues only then.
            cid = h.next_id()
            resting = OrderRequest(h.spot, Side.BUY, h.size(h.spot, 2), cid, OrderType.LIMIT,
                                   _on_tick(h.spot, h.price * Decimal("0.9")),
                                   TimeInForce.POST_ONLY)
            h.faults.outcome_unknown(accepted=True)
            with pytest.raises(OutcomeUnknown):
                await h.venue.place_order(resting)
            found = await resolve_outcome(h.venue, h.spot, cid, sleep=h.sleep)
            assert isinstance(found, OrderState) and found.client_order_id == cid
            assert found.status is OrderStatus.NEW, found
            with pytest.raises(DuplicateClientOrderId):
                await h.venue.place_order(resting)
            # Lost before the venue saw it: proven absent.
            lost = h.next_id()
            h.faults.outcome_unknown(accepted=False)
            with pytest.raises(OutcomeUnknown):
                await h.venue.place_order(OrderRequest(h.spot, Side.BUY, quantity, lost))
            assert await resolve_outcome(h.venue, h.spot, lost, sleep=h.sleep) is None
            # Queries that get no answer keep the outcome unknown.
            h.faults.fail_queries(100)
            with pytest.raises(OutcomeUnknown):
                await resolve_outcome(h.venue, h.spot, lost, sleep=h.sleep)

        self._run(tmp_path, "outcome_unknown", body)


async def _never_sent(h: OrderHarness, market: Market, client_id: str) -> None:
    """The refused order is unknown to the venue. On a recording without order interactions
    the refusal itself proves it: a request would have raised ``not_recorded``."""
    if h.not_recorded is None:
        assert await h.venue.fetch_order(market, client_id) is None


async def _fund_perp(h: OrderHarness, quantity: Decimal) -> None:
    """Move the margin a short of ``quantity`` needs where the venue keeps it apart."""
    if h.capabilities.separate_wallets:
        margin = quantity * h.price * Decimal(2)
        await h.venue.transfer(h.perp.settle, margin, Wallet.SPOT, Wallet.FUTURES)


def _on_tick(market: Market, price: Decimal) -> Decimal:
    return (price // market.price_tick) * market.price_tick


def _total(wallet: dict, currency: str) -> Decimal:
    balance = wallet.get(currency)
    return balance.total if balance else Decimal(0)


def _close(actual: Decimal, expected: Decimal, what: str) -> None:
    """Equal up to the last digit a venue reports (1e-8 of the amount, or 1e-8)."""
    tolerance = max(abs(expected), Decimal(1)) * Decimal("1e-8")
    assert abs(actual - expected) <= tolerance, f"{what}: {actual}, expected {expected}"


__all__ = ["CHECKS", "PRE_SEND_CHECKS", "FaultControl", "OrderHarness", "OrderVenueConformance"]
