"""The order half's core rules: client ids, sizes checked before sending, delivered quantity
net of base fees, and outcome-unknown resolution by client id."""

from __future__ import annotations

import re
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perpcarry.domain.errors import InvalidOrder, NetworkError, OutcomeUnknown
from perpcarry.domain.types import Market, MarketKind
from perpcarry.venues.orders import (
    Fee,
    Leg,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    check_order_size,
    client_order_id,
    floor_to_step,
    resolve_outcome,
    to_order_units,
)

D = Decimal
# Binance BTCUSDT spot filters as in the real exchangeInfo of 2023-09-08
# (LOT_SIZE stepSize 0.00001, minQty 0.00001, maxQty 9000; NOTIONAL minNotional 5).
SPOT = Market("binance", "BTC/USDT", "BTCUSDT", "BTC", "USDT", None, MarketKind.SPOT, D(1),
              D("0.00001"), D("0.00001"), D(5), D("0.01"), D(9000), None)
# An OKX swap: contract size 0.01 BTC, lot 0.01 contracts (BTC-USDT-SWAP ctVal/lotSz).
SWAP = Market("okx", "BTC/USDT:USDT", "BTC-USDT-SWAP", "BTC", "USDT", "USDT", MarketKind.PERP,
              D("0.01"), D("0.01"), D("0.01"), None, D("0.1"), D(10000), D(3000))


def test_client_ids_are_deterministic_valid_everywhere_and_distinct():
    ids = {client_order_id("01JABCDEFGHJKMNPQRST", leg, s, a, unwind=u)
           for leg in Leg for s in range(0, 1000, 111) for a in range(0, 100, 33)
           for u in (False, True)}
    assert len(ids) == 2 * 10 * 4 * 2
    assert all(re.fullmatch(r"[A-Za-z0-9]{1,32}", i) for i in ids)
    assert client_order_id("abc", Leg.PERP, 3, 1) == client_order_id("abc", Leg.PERP, 3, 1)


@pytest.mark.parametrize("intent, slice_index, attempt", [
    ("has-dash", 0, 0), ("", 0, 0), ("x" * 21, 0, 0), ("ok", 1000, 0), ("ok", 0, 100),
])
def test_client_id_inputs_out_of_range_are_refused(intent, slice_index, attempt):
    with pytest.raises(ValueError):
        client_order_id(intent, Leg.SPOT, slice_index, attempt)


def test_order_request_refuses_an_invalid_client_id_and_inconsistent_terms():
    with pytest.raises(InvalidOrder, match="client order id"):
        OrderRequest(SPOT, Side.BUY, D("0.001"), "x_1")
    with pytest.raises(InvalidOrder, match="price"):
        OrderRequest(SPOT, Side.BUY, D("0.001"), "pc1", type=OrderType.LIMIT)
    with pytest.raises(InvalidOrder, match="reduce-only"):
        OrderRequest(SPOT, Side.SELL, D("0.001"), "pc1", reduce_only=True)
    limit = OrderRequest(SWAP, Side.SELL, D("0.01"), "pc1", type=OrderType.LIMIT,
                         price=D(30000), time_in_force=TimeInForce.POST_ONLY)
    assert limit.time_in_force is TimeInForce.POST_ONLY


def test_sizes_are_checked_against_every_rule_before_sending():
    assert check_order_size(SPOT, D("0.00123"), D(30000)) == D("0.00123")
    with pytest.raises(InvalidOrder, match="multiple of the step"):
        check_order_size(SPOT, D("0.000123"), D(30000))
    with pytest.raises(InvalidOrder, match=r"notional 3\.0+ is below the minimum 5"):
        check_order_size(SPOT, D("0.0001"), D(30000))  # 3 USDT < 5
    with pytest.raises(InvalidOrder, match="above the maximum"):
        check_order_size(SPOT, D(9001), D(30000))
    # OKX: base 0.5 BTC = 50 contracts; market orders are capped lower than limit orders.
    assert check_order_size(SWAP, D("0.5"), D(30000)) == D(50)
    assert check_order_size(SWAP, D(50), D(30000), OrderType.LIMIT) == D(5000)
    with pytest.raises(InvalidOrder, match="3000 per market order"):
        check_order_size(SWAP, D(50), D(30000))
    with pytest.raises(InvalidOrder, match="not positive"):
        to_order_units(SWAP, D(0))


@given(st.decimals(min_value=D("0.0001"), max_value=D(1000), places=6))
def test_floor_to_step_gives_an_accepted_quantity_never_above_the_input(quantity):
    for market in (SPOT, SWAP):
        floored = floor_to_step(market, quantity)
        assert floored <= quantity
        assert quantity - floored < market.quantity_step * market.contract_size
        if floored > 0:
            to_order_units(market, floored)  # a whole number of steps: no InvalidOrder


def _state(**changes) -> OrderState:
    base = OrderState("binance", "BTC/USDT", "BTC", "pc1", "8389765792", Side.BUY,
                      OrderType.MARKET, OrderStatus.FILLED, D("0.01"), D("0.01"), D(30000),
                      (Fee(D("0.00001"), "BTC"),), False, None, None)
    return replace(base, **changes)


def test_delivered_quantity_is_the_fill_net_of_fees_charged_in_base():
    assert _state().delivered_quantity == D("0.00999")
    assert _state(fees=(Fee(D("0.3"), "USDT"),)).delivered_quantity == D("0.01")
    assert _state(fees=(Fee(D("0.0002"), "BNB"),)).base_fee == 0
    assert _state(side=Side.SELL).delivered_quantity == D("0.01001")
    assert OrderStatus.FILLED.is_final and not OrderStatus.PARTIALLY_FILLED.is_final


class ScriptedVenue:
    """Answers fetch_order from a script: an OrderState, None (not found) or an error."""

    venue_id = "binance"

    def __init__(self, answers):
        self.answers = list(answers)
        self.queries: list[str] = []

    async def fetch_order(self, market, client_order_id):
        self.queries.append(client_order_id)
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        return answer


async def _no_sleep(_seconds: float) -> None:
    return None


async def test_outcome_unknown_resolves_to_the_order_found_by_client_id():
    venue = ScriptedVenue([NetworkError("binance", "timeout"), None, _state()])
    state = await resolve_outcome(venue, SPOT, "pc1", sleep=_no_sleep)
    assert state == _state() and venue.queries == ["pc1"] * 3


async def test_absent_only_after_every_query_says_not_found():
    venue = ScriptedVenue([])
    assert await resolve_outcome(venue, SPOT, "pc1", sleep=_no_sleep, delays=(1, 2)) is None
    assert venue.queries == ["pc1"] * 3


async def test_unanswered_queries_keep_the_outcome_unknown():
    venue = ScriptedVenue([None, OutcomeUnknown("binance", "-1007"), None])
    with pytest.raises(OutcomeUnknown, match="still unknown"):
        await resolve_outcome(venue, SPOT, "pc1", sleep=_no_sleep, delays=(1, 2))
