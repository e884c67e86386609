"""The order conformance kit on the live Binance code path (ccxt over real HTTP) against the
local fake exchange (tests/fake_binance.py): every check runs, none is declared away."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from fake_binance import FakeBinance
from fake_binance_wire import Fault
from test_fake_binance_faults import ADEE, ETH_PRICE, credentials, no_sleep

from perpcarry.config.loader import load_config
from perpcarry.domain.errors import InsufficientFunds, InvalidOrder, RateLimitError
from perpcarry.testing import OrderHarness, OrderVenueConformance
from perpcarry.venues.orders import (
    Leg,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from perpcarry.venues.protocol import VenueContext
from perpcarry_binance.venue import BinanceVenue

# The fake listens on 127.0.0.1 only; every other host stays blocked.
pytestmark = pytest.mark.block_network(allowed_hosts=["127.0.0.1"])

SPOT, PERP = "ETH/USDT", "ETH/USDT:USDT"
ORDER_POSTS = ("POST /api/v3/order", "POST /fapi/v1/order")
ORDER_QUERIES = ("GET /api/v3/order", "GET /fapi/v1/order")
REFUSALS = {InvalidOrder: Fault.PRECISION, InsufficientFunds: Fault.INSUFFICIENT_MARGIN,
            RateLimitError: Fault.RATE_LIMIT}
# A real positive ETHUSDT settlement (the adee fundingRate dump the fault tests use).
SETTLED_RATE = next(Decimal(r["fundingRate"]) for r in
                    json.loads((ADEE / "ETHUSDT_funding.json").read_text())
                    if Decimal(r["fundingRate"]) > 0)


class FakeBinanceFaults:
    """The kit's ``FaultControl`` on the fake's fault injection. The kit does not say which
    market its next order is on, so a fault waits on the spot and USDⓈ-M routes at once
    and the first request to either takes it."""

    def __init__(self, fake: FakeBinance) -> None:
        self.fake = fake

    def reject(self, error=None) -> None:
        """The next order is refused, nothing executed, with Binance's code for ``error``'s
        kind (default: -1111, an invalid order)."""
        fault = REFUSALS.get(type(error)) if error is not None else Fault.PRECISION
        if fault is None:
            raise ValueError(f"the fake has no Binance refusal for {type(error).__name__}")
        self.fake.inject_any(ORDER_POSTS, fault)

    def outcome_unknown(self, *, accepted: bool) -> None:
        fault = Fault.TIMEOUT_AFTER_ACCEPT if accepted else Fault.LOST_BEFORE_ACCEPT
        self.fake.inject_any(ORDER_POSTS, fault)

    def fail_queries(self, count: int) -> None:
        self.fake.inject_any(ORDER_QUERIES, *[Fault.ERROR_5XX_AFTER_ACCEPT] * count)


@asynccontextmanager
async def binance_harness(tmp_path: Path):
    """A fresh fake Binance holding 3000 USDT on spot, ETH at the real 2024-12-12 fill
    price, and a ``BinanceVenue`` pointed at it."""
    fake = FakeBinance(prices={"ETHUSDT": ETH_PRICE, "BTCUSDT": Decimal("100000")})
    fake.spot_balances = {"USDT": Decimal("3000")}
    await fake.start()
    venue = BinanceVenue(credentials(), VenueContext(cache_dir=tmp_path, sleep=no_sleep,
                                                     base_url=fake.url))
    venue.exchange.timeout = 300  # ms, under the fake's 1 s: a lost answer fails fast
    try:
        spot, perp = await venue.market(SPOT), await venue.market(PERP)

        async def settle_funding() -> Decimal:
            fake.settle_funding(perp.venue_symbol, SETTLED_RATE)
            return SETTLED_RATE

        capabilities = load_config(None).registry.venues["binance"].order_capabilities
        yield OrderHarness(venue, capabilities, spot, perp, ETH_PRICE,
                           faults=FakeBinanceFaults(fake), settle_funding=settle_funding,
                           extra_fee_currencies=frozenset({"BNB"}), sleep=no_sleep)
    finally:
        await venue.close()
        await fake.stop()


class TestBinanceOnTheFakeExchange(OrderVenueConformance):
    def order_harness(self, tmp_path):
        return binance_harness(tmp_path)


@pytest.mark.parametrize("error", [None, InvalidOrder("binance", "kit"),
                                   InsufficientFunds("binance", "kit"),
                                   RateLimitError("binance", "kit")])
async def test_fault_control_rejects_the_next_order_of_either_kind_once(tmp_path, error):
    async with binance_harness(tmp_path) as h:
        h.faults.reject(error)
        request = OrderRequest(h.perp, Side.SELL, h.size(h.perp), h.next_id(Leg.PERP))
        with pytest.raises(type(error) if error else InvalidOrder):
            await h.venue.place_order(request)
        assert await h.venue.fetch_order(h.perp, request.client_order_id) is None
        # Taken by the USDⓈ-M order: the spot order after it goes through.
        spot = await h.venue.place_order(
            OrderRequest(h.spot, Side.BUY, h.size(h.spot), h.next_id()))
        assert spot.status is OrderStatus.FILLED


async def test_a_reduce_only_order_below_the_minimum_notional_may_close(tmp_path):
    """USDⓈ-M refuses a notional under 20 "unless you choose reduce only" (-4164): the
    client's pre-send rules must not refuse the close of a small remainder."""
    async with binance_harness(tmp_path) as h:
        small = h.perp.min_quantity  # 0.001 ETH, about 3.9 USDT
        assert small * h.price < h.perp.min_notional
        bid = (h.price * Decimal("1.01") // h.perp.price_tick) * h.perp.price_tick
        with pytest.raises(InvalidOrder, match="notional"):  # it would open: refused
            await h.venue.place_order(OrderRequest(
                h.perp, Side.SELL, small, h.next_id(Leg.PERP), OrderType.LIMIT,
                h.price * Decimal("0.99") // h.perp.price_tick * h.perp.price_tick,
                TimeInForce.IOC))
        await h.venue.place_order(OrderRequest(h.perp, Side.SELL, h.size(h.perp),
                                               h.next_id(Leg.PERP)))
        await h.venue.place_order(OrderRequest(h.perp, Side.BUY,
                                               h.size(h.perp) - small, h.next_id(Leg.PERP),
                                               reduce_only=True))
        closed = await h.venue.place_order(OrderRequest(
            h.perp, Side.BUY, small, h.next_id(Leg.PERP), OrderType.LIMIT, bid,
            TimeInForce.IOC, reduce_only=True))
        assert (closed.status, closed.filled_quantity) == (OrderStatus.FILLED, small)
        assert await h.venue.fetch_positions() == []
