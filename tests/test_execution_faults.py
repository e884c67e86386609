"""The fault matrix of two-leg execution (issue 13): every fault, once through the paper
venue with the fault injected and once through the live ccxt path against the fake Binance.

Each case asserts what it ends in (the intent's state, which orders reached the venue) and
then the invariants, read from the venue's side (``Harness.assert_invariants``): no naked
leg above the tolerance, no client id sent twice, a new attempt only after the earlier one
was absent, the journal's position equal to the venue's, every order journalled first.
"""

from __future__ import annotations

import re
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass
from decimal import Decimal

import pytest
from execution_support import (
    ETH_PRICE,
    Harness,
    Killed,
    open_fake,
    open_paper,
)
from fake_binance import FakeBinance, Fault

from perpcarry.config.loader import load_config
from perpcarry.domain.errors import (
    ClockSkew,
    InsufficientFunds,
    InvalidOrder,
    RateLimitError,
)
from perpcarry.execution.checks import TradeContext
from perpcarry.execution.engine import ExecutionIncomplete
from perpcarry.execution.executors import Concurrent, PerpFirst
from perpcarry.execution.journal import IntentState, OrderEvent, Purpose
from perpcarry.venues.orders import Leg, Wallet

# The fake listens on 127.0.0.1 only; every other host stays blocked.
pytestmark = pytest.mark.block_network(allowed_hosts=["127.0.0.1"])

PERP_ROUTE, SPOT_ROUTE = "POST /fapi/v1/order", "POST /api/v3/order"
ROUTE = {Leg.PERP: PERP_ROUTE, Leg.SPOT: SPOT_ROUTE}
TARGET = {"paper": Decimal("0.02"), "fake": Decimal("0.1")}  # BTC on paper, ETH on the fake
E, U = Purpose.ENTRY, Purpose.UNWIND


def reject(error=None):
    return lambda faults: faults.reject(error)


def unknown(accepted: bool):
    return lambda faults: faults.outcome_unknown(accepted=accepted)


def partial(ratio: str):
    return lambda faults: faults.partial_fill(Decimal(ratio))


@dataclass(frozen=True)
class Case:
    """One row: the fault on each backend, on which leg, and what it must end in.

    ``sends`` counts the client ids that reached the venue per (leg, purpose)."""

    name: str
    leg: Leg
    paper: tuple  # PaperFaults actions, in order, on ``leg``
    fake: tuple[Fault, ...]  # injected on ``leg``'s order route
    state: IntentState
    sends: dict
    executor: type = PerpFirst
    fake_setup: object = None  # a change to the fake's account before the run
    incomplete: bool = False  # the run stops on an unknown outcome; recovery finishes it


def short_of_usdt(fake: FakeBinance) -> None:
    fake.spot_balances["USDT"] = Decimal("100")  # the spot buy is refused: -2010


CASES = [
    Case("futures leg rejected", Leg.PERP,
         (reject(InvalidOrder("binance", "Order's notional must be no smaller than 20")),),
         (Fault.MIN_NOTIONAL,), IntentState.FAILED, {(Leg.PERP, E): 1}),
    Case("spot leg rejected after the futures leg filled", Leg.SPOT,
         (reject(InsufficientFunds("binance", "Account has insufficient balance")),), (),
         IntentState.UNWOUND, {(Leg.PERP, E): 1, (Leg.SPOT, E): 1, (Leg.PERP, U): 1},
         fake_setup=short_of_usdt),
    Case("timeout, executed server-side, futures leg", Leg.PERP, (unknown(True),),
         (Fault.TIMEOUT_AFTER_ACCEPT,), IntentState.DONE, {(Leg.PERP, E): 1, (Leg.SPOT, E): 1}),
    Case("timeout, executed server-side, spot leg", Leg.SPOT, (unknown(True),),
         (Fault.TIMEOUT_AFTER_ACCEPT,), IntentState.DONE, {(Leg.PERP, E): 1, (Leg.SPOT, E): 1}),
    Case("5xx after accept", Leg.PERP, (unknown(True),), (Fault.ERROR_5XX_AFTER_ACCEPT,),
         IntentState.DONE, {(Leg.PERP, E): 1, (Leg.SPOT, E): 1}),
    Case("-1007 execution status unknown", Leg.SPOT, (unknown(True),),
         (Fault.UNKNOWN_STATUS_1007,), IntentState.DONE, {(Leg.PERP, E): 1, (Leg.SPOT, E): 1}),
    # Both legs end hedged at the filled half: partial, not done.
    Case("partial fill, futures leg", Leg.PERP, (partial("0.5"),), (Fault.PARTIAL_FILL,),
         IntentState.PARTIAL, {(Leg.PERP, E): 1, (Leg.SPOT, E): 1}),
    Case("partial fill, spot leg", Leg.SPOT, (partial("0.5"),), (Fault.PARTIAL_FILL,),
         IntentState.PARTIAL, {(Leg.PERP, E): 1, (Leg.SPOT, E): 1, (Leg.PERP, U): 1}),
    Case("429 burst mid-entry", Leg.SPOT,
         (reject(RateLimitError("binance", "rate limited", 7.0)),) * 2,
         (Fault.RATE_LIMIT_RETRY_AFTER,) * 2, IntentState.UNWOUND,
         {(Leg.PERP, E): 1, (Leg.SPOT, E): 2, (Leg.PERP, U): 1}),
    Case("maintenance (503) mid-entry", Leg.SPOT, (unknown(False),), (Fault.MAINTENANCE_503,),
         IntentState.DONE, {(Leg.PERP, E): 1, (Leg.SPOT, E): 2}),
    Case("-1021 clock skew", Leg.SPOT,
         (reject(ClockSkew("binance", "request timestamp refused, not executed")),),
         (Fault.TIMESTAMP_OUTSIDE_RECV_WINDOW,), IntentState.DONE,
         {(Leg.PERP, E): 1, (Leg.SPOT, E): 2}),
    Case("-2019 insufficient margin, spot filled alongside", Leg.PERP,
         (reject(InsufficientFunds("binance", "Margin is insufficient.")),),
         (Fault.INSUFFICIENT_MARGIN,), IntentState.UNWOUND,
         {(Leg.PERP, E): 1, (Leg.SPOT, E): 1, (Leg.SPOT, U): 1}, executor=Concurrent),
    Case("min-notional reject on the second leg", Leg.SPOT,
         (reject(InvalidOrder("binance", "Filter failure: NOTIONAL")),), (Fault.MIN_NOTIONAL,),
         IntentState.UNWOUND, {(Leg.PERP, E): 1, (Leg.SPOT, E): 1, (Leg.PERP, U): 1}),
    Case("timeout, then every query unanswered: left pending, recovered", Leg.PERP,
         (unknown(True),),
         (Fault.TIMEOUT_AFTER_ACCEPT,), IntentState.UNWOUND,
         {(Leg.PERP, E): 1, (Leg.PERP, U): 1}, incomplete=True),
]


@pytest.fixture
async def fake():
    server = FakeBinance(prices={"ETHUSDT": ETH_PRICE, "BTCUSDT": Decimal("100000")})
    server.futures_wallet = Decimal("1000")
    server.spot_balances = {"USDT": Decimal("3000"), "ETH": Decimal(0)}
    server.timeout_seconds = 0.5
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(params=["paper", "fake"])
async def harness(request, tmp_path, fake):
    """The same case on both paths (the fake Binance idles on the paper one)."""
    async with AsyncExitStack() as stack:
        if request.param == "paper":
            yield await open_paper(stack, tmp_path / "data")
            return
        built, client = await open_fake(fake, tmp_path / "data")
        try:
            yield built
        finally:
            built.journal.close()
            await client.close()


def inject(harness: Harness, case: Case) -> None:
    if harness.fake is None:
        for action in case.paper:
            harness.venue.fault(case.leg, action)
        if case.incomplete:
            harness.faults.fail_queries(1000)
        return
    harness.fake.inject(ROUTE[case.leg], *case.fake)
    if case.incomplete:
        harness.fake.inject(f"GET {ROUTE[case.leg].split()[1]}",
                            *[Fault.ERROR_5XX_AFTER_ACCEPT] * 200)
    if case.fake_setup is not None:
        case.fake_setup(harness.fake)


def clear_query_faults(harness: Harness) -> None:
    if harness.fake is None:
        harness.faults.failing_queries = 0
    else:
        harness.fake._faults.clear()


def sends_by_leg(harness: Harness) -> dict:
    sent = harness.sends()
    return dict(Counter((o.leg, o.purpose) for o in harness.orders()
                        if o.client_order_id in sent))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_fault_matrix(harness: Harness, case: Case):
    inject(harness, case)
    execution = harness.execution()
    executor = case.executor()
    intent = execution.plan("open", harness.journal.new_id(), TARGET[harness.kind], executor)
    if case.incomplete:
        with pytest.raises(ExecutionIncomplete, match="reconcile"):
            await execution.run(executor)
        assert harness.journal.intent(intent.intent_id).state is IntentState.PENDING
        clear_query_faults(harness)
        report = await harness.recover()
        assert [f.kind for f in report.findings] == ["resolved"]
    else:
        await execution.run(executor)
    assert harness.journal.intent(intent.intent_id).state is case.state
    assert sends_by_leg(harness) == case.sends
    await harness.assert_invariants()


@pytest.mark.parametrize("executor", [PerpFirst, Concurrent])
async def test_process_killed_between_the_legs(harness: Harness, executor):
    """The process dies as the second order is about to leave; the next process recovers
    from the journal alone, in a fresh engine: the filled leg is taken back."""
    harness.venue.kill_at = 2
    execution = harness.execution()
    intent = execution.plan("open", harness.journal.new_id(), TARGET[harness.kind],
                            executor())
    with pytest.raises(Killed):
        await execution.run(executor())
    harness.venue.kill_at = None
    harness.reopen()
    report = await harness.recover()
    assert [(f.kind, f.action) for f in report.findings] == [("resolved",
                                                              "finished as unwound")]
    assert harness.journal.intent(intent.intent_id).state is IntentState.UNWOUND
    assert sends_by_leg(harness) == {(Leg.PERP, E): 1, (Leg.PERP, U): 1}
    # Marked sent, then the process died before the request left: recovery found it
    # absent, and it stays unsent.
    [spot] = [o for o in harness.orders(E) if o.leg is Leg.SPOT]
    assert spot.state is OrderEvent.ABSENT and spot.client_order_id not in harness.sends()
    await harness.assert_invariants()


class OffStep(PerpFirst):
    """A third-party executor that cuts the target into slices off the venues' steps."""

    name = "off-step"

    def slices(self, target, limits):
        return (target / 3, target - target / 3)


async def test_precision_reject_cannot_be_reached(harness: Harness):
    """-1111 (quantity precision) is unreachable: an off-step slice is refused before
    anything is journalled or sent, and a target off the step is floored to it."""
    if harness.fake is not None:
        harness.fake.inject(PERP_ROUTE, Fault.PRECISION)
        harness.fake.inject(SPOT_ROUTE, Fault.PRECISION)
    execution = harness.execution()
    with pytest.raises(InvalidOrder, match="not a multiple of the step"):
        execution.plan("open", harness.journal.new_id(), TARGET[harness.kind], OffStep())
    assert harness.orders() == [] and harness.journal.positions(include_closed=True) == []
    assert not harness.sends()
    off_step = TARGET[harness.kind] + Decimal("0.0005")
    intent = execution.plan("open", harness.journal.new_id(), off_step, PerpFirst())
    assert intent.target_base == TARGET[harness.kind]
    if harness.fake is not None:
        harness.fake._faults.clear()  # what the venue would say to an off-step order
    await execution.run(PerpFirst())
    assert harness.journal.intent(intent.intent_id).state is IntentState.DONE
    for order in harness.orders():
        market = harness.pair.perp if order.leg is Leg.PERP else harness.pair.spot
        assert order.quantity % (market.quantity_step * market.contract_size) == 0
    await harness.assert_invariants()


async def test_below_min_notional_is_refused_before_anything_is_sent(harness: Harness):
    execution = harness.execution()
    # A tenth of the perp's minimum notional at the reference price.
    tiny = harness.pair.perp.min_notional / harness.price / 10
    with pytest.raises(InvalidOrder, match="below the smallest order both legs accept"):
        execution.plan("open", harness.journal.new_id(), tiny, PerpFirst())
    assert harness.orders() == [] and not harness.sends()


async def test_spot_balance_short_is_vetoed_before_sending_and_the_perp_unwound(harness):
    """The built-in pre-trade check reads the wallet the spot buy draws on: too little
    there, the buy is vetoed (never sent) and the filled perp is bought back. Unwinds are
    never vetoed."""
    config = load_config(None)
    if harness.fake is not None:
        short_of_usdt(harness.fake)
    else:
        await harness.venue.inner.transfer("USDT", Decimal(79_500), Wallet.SPOT,
                                           Wallet.FUTURES)
    execution = harness.execution(checks=config.registry.pre_trade_vetoes)
    execution.context = TradeContext(
        "binance", "open", harness.price, await harness.venue.fetch_balances(),
        config.registry.venues["binance"].order_capabilities, Decimal(2), True, None, None)
    intent = execution.plan("open", harness.journal.new_id(), TARGET[harness.kind],
                            PerpFirst())
    result = await execution.run(PerpFirst())
    assert result.state is IntentState.UNWOUND
    assert re.fullmatch(r"vetoed by checks: \d+\.00 USDT free in the spot wallet, "
                        r"\d+\.\d\d needed", result.note)
    assert sends_by_leg(harness) == {(Leg.PERP, E): 1, (Leg.PERP, U): 1}
    [spot] = [o for o in harness.journal.orders(intent.intent_id) if o.leg is Leg.SPOT]
    assert spot.state is OrderEvent.REJECTED
    await harness.assert_invariants()


async def test_the_perp_fee_is_read_after_the_spot_leg_is_sent(tmp_path, fake):
    """Binance's USDⓈ-M answer carries no fee: reading it costs a round trip, which would sit
    inside the naked window. The spot order goes out first; the fee lands in the journal
    right after, and the position's fees include it."""
    built, client = await open_fake(fake, tmp_path / "data")
    try:
        execution = built.execution()
        intent = execution.plan("open", built.journal.new_id(), TARGET["fake"], PerpFirst())
        result = await execution.run(PerpFirst())
        assert result.state is IntentState.DONE
        paths = [(r.method, r.path) for r in fake.requests]
        spot_sent = paths.index(("POST", "/api/v3/order"))
        fee_read = paths.index(("GET", "/fapi/v1/userTrades"))
        assert paths.index(("POST", "/fapi/v1/order")) < spot_sent < fee_read
        [perp] = [o for o in built.journal.orders(intent.intent_id) if o.leg is Leg.PERP]
        assert not perp.fees_pending and [f.currency for f in perp.fees] == ["USDT"]
        position = built.journal.position(intent.position_id)
        assert position.fees["USDT"] >= perp.fees[0].amount
        await built.assert_invariants()
    finally:
        built.journal.close()
        await client.close()
