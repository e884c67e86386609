"""The account book's rules, without a network: pushes in any order never move an order
backwards, a repeated final push is a duplicate, a REST read always counts, waiters wake on
their order's update and are released (to query REST) when the stream leaves live, and a
venue refusal echoing the credentials is redacted."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from itertools import pairwise
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from perpcarry.streams.account import AccountBook, redact
from perpcarry.venues.orders import Fee, OrderState, OrderStatus, OrderType, Side
from perpcarry.venues.streams import OrderUpdate

CID = "pci1pe00000"
NEW = OrderState("binance", "ETH/USDT:USDT", "ETH", CID, "1", Side.SELL, OrderType.MARKET,
                 OrderStatus.NEW, Decimal("0.006"), Decimal(0), None, (), False, None, None)
PARTIAL = replace(NEW, status=OrderStatus.PARTIALLY_FILLED, filled_quantity=Decimal("0.002"),
                  average_price=Decimal("3925.56"))
FILLED = replace(PARTIAL, status=OrderStatus.FILLED, filled_quantity=Decimal("0.006"),
                 fees=(Fee(Decimal("0.01177668"), "USDT"),))
# What ccxt returned for a repeated final event: its cached fee merged in twice.
FILLED_AGAIN = replace(FILLED, fees=(Fee(Decimal("0.02355336"), "USDT"),))


def _book() -> AccountBook:
    return AccountBook("binance", None, lambda: [])


@given(st.lists(st.sampled_from([NEW, PARTIAL, FILLED, FILLED_AGAIN]), min_size=1,
                max_size=12))
def test_pushes_in_any_order_never_move_an_order_backwards(pushes):
    book = _book()
    kept = []
    for state in pushes:
        if book.store(OrderUpdate(state)) is None:
            kept.append(state)
    # Each kept state has at least the fills of the one before; nothing follows a final one.
    assert all(b.filled_quantity >= a.filled_quantity for a, b in pairwise(kept))
    assert all(not a.status.is_final for a in kept[:-1])
    assert book.order_states[CID] == kept[-1]
    assert sum(book.counts.values()) == 0  # store() alone does not count; accept() does


def test_a_rest_read_is_the_truth_even_after_a_final_push():
    book = _book()
    book.store(OrderUpdate(FILLED_AGAIN))
    assert book.store(OrderUpdate(FILLED)) == "duplicates"
    book._store_order(FILLED, pushed=False)
    assert book.order_states[CID] == FILLED


async def test_a_waiter_wakes_on_its_update_and_is_released_when_the_stream_dies():
    book = _book()
    assert await book.wait(CID, 5) is None  # not live: never waited on
    book.set_live(True)
    waiting = asyncio.create_task(book.wait(CID, 5))
    await asyncio.sleep(0)
    book.store(OrderUpdate(FILLED))
    assert await asyncio.wait_for(waiting, 1) == FILLED
    assert await asyncio.wait_for(book.wait(CID, 5), 1) == FILLED  # final: at once
    other = asyncio.create_task(book.wait("pci2pe00000", 5))
    await asyncio.sleep(0)
    book.set_live(False)
    assert await asyncio.wait_for(other, 1) is None


def test_a_refusal_echoing_the_login_is_redacted():
    venue = SimpleNamespace(credential_keys={"api_key": "apiKey", "secret": "secret"},
                            config=SimpleNamespace(api_key=SecretStr("9rFT6uR4uz9Imkw4Wx"),
                                                   secret=SecretStr("s3cr3t")))
    # Bybit's auth refusal as ccxt keeps an example of it (pro/bybit.py).
    echoed = ('bybit {"success":false,"ret_msg":"error:USVC1111","request":{"op":"auth",'
              '"args":["9rFT6uR4uz9Imkw4Wx","1653405853543","542e71bd"]}}')
    assert redact(echoed, venue) == echoed.replace("9rFT6uR4uz9Imkw4Wx", "***")
