"""The paper venue on the bundled real snapshots: prices, fees, wallets, funding, faults,
and state that outlives the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

import pytest

from perpcarry.ccxt.replay import replaying
from perpcarry.config.loader import load_config
from perpcarry.domain.errors import (
    DuplicateClientOrderId,
    InsufficientFunds,
    InvalidOrder,
    LocalStateError,
    OutcomeUnknown,
    VenueError,
)
from perpcarry.domain.types import MarketKind
from perpcarry.paper import PaperFaults, open_paper_venue
from perpcarry.paper.store import PaperStore, delete_state, state_path
from perpcarry.venues.orders import (
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderVenue,
    Side,
    TimeInForce,
    Wallet,
)
from perpcarry.venues.protocol import VenueContext

ROOT = Path(__file__).parents[1]
BINANCE_SNAPSHOT = ROOT / "plugins" / "binance" / "snapshot" / "snapshot.json"
BINANCE_BOOKS = ROOT / "cassettes" / "binance" / "books_spot_2024-01-05.json"
# The Binance snapshot's BTCUSDT perp: mark price and predicted rate at 2025-09-09 00:00 UTC.
BTC_MARK = Decimal("112015.09961957")
BTC_RATE = Decimal("0.00003799")
SNAPSHOT_TIME = datetime(2025, 9, 9, tzinfo=UTC)
# Binance's default (VIP0) schedule: spot taker 0.10 %, USDⓈ-M taker 0.05 %.
SPOT_TAKER, PERP_TAKER = Decimal("0.001"), Decimal("0.0005")


@dataclass
class Clock:
    now: datetime = SNAPSHOT_TIME

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def paper(data_dir, tmp_path, clock):
    """Opens a paper venue of a venue id over its snapshot (plus extra cassettes)."""
    opened = []

    async def open_venue(venue_id: str, *extra: Path, faults: PaperFaults | None = None):
        config = load_config(None)
        recording = replaying(config.registry.venues[venue_id].offline_snapshot, *extra)
        recording.__enter__()
        venue = open_paper_venue(config, venue_id, VenueContext(
            cache_dir=tmp_path / "cache", offline=True, clock=clock), faults)
        opened.append((venue, recording))
        markets = await venue.view.markets()
        return venue, markets["BTC/USDT"], markets["BTC/USDT:USDT"]

    yield open_venue
    for venue, recording in opened:
        venue.store.close()
        recording.__exit__(None, None, None)


def _ticks(price: Decimal, tick: Decimal, rounding) -> Decimal:
    return (price / tick).to_integral_value(rounding) * tick


async def test_market_orders_fill_at_mark_plus_half_spread_with_the_venues_fees(paper):
    venue, spot, perp = await paper("binance")
    assert isinstance(venue, OrderVenue)
    quantity = Decimal("0.01")
    buy = await venue.place_order(OrderRequest(spot, Side.BUY, quantity, "pcT1s00000"))
    # No book offline: the spot buy fills at the perp's mark plus 2 bps, up to the tick.
    expected = _ticks(BTC_MARK * Decimal("1.0002"), spot.price_tick, ROUND_CEILING)
    assert (buy.average_price, buy.price_source) == (expected, "perp mark+2bps")
    # Binance charges a spot buy's fee in the base asset received.
    assert [(f.amount, f.currency) for f in buy.fees] == [(quantity * SPOT_TAKER, "BTC")]
    await venue.transfer("USDT", Decimal(5000), Wallet.SPOT, Wallet.FUTURES)
    short = await venue.place_order(OrderRequest(perp, Side.SELL, quantity, "pcT1p00000"))
    sell_price = _ticks(BTC_MARK * Decimal("0.9998"), perp.price_tick, ROUND_FLOOR)
    assert (short.average_price, short.price_source) == (sell_price, "mark-2bps")
    assert [(f.amount, f.currency) for f in short.fees] == [
        (quantity * sell_price * PERP_TAKER, "USDT")]
    balances = await venue.fetch_balances()
    assert balances[Wallet.SPOT]["BTC"].total == quantity - quantity * SPOT_TAKER
    assert balances[Wallet.SPOT]["USDT"].total == 100_000 - 5000 - quantity * expected


async def test_a_known_book_sets_the_fill_price(paper):
    venue, spot, _ = await paper("binance", BINANCE_BOOKS)
    buy = await venue.place_order(OrderRequest(spot, Side.BUY, Decimal("0.01"), "pcT2s00000"))
    # The recorded bookTicker's BTCUSDT ask.
    assert (buy.average_price, buy.price_source) == (Decimal("43714.04"), "book ask")


async def test_a_halted_book_quoting_zero_is_no_book(paper):
    venue, spot, _ = await paper("binance", BINANCE_BOOKS)
    books = await venue.view.book(MarketKind.SPOT)
    top = books.books["BTC/USDT"]
    books.books["BTC/USDT"] = replace(top, bid=Decimal(0), ask=Decimal(0))
    buy = await venue.place_order(OrderRequest(spot, Side.BUY, Decimal("0.01"), "pcT2s00001"))
    assert buy.price_source == "perp mark+2bps" and buy.average_price > 100_000


async def test_half_spread_comes_from_config(paper, monkeypatch):
    monkeypatch.setenv("PERPCARRY_PAPER__HALF_SPREAD_BPS", "10")
    venue, _, perp = await paper("bybit")
    buy = await venue.place_order(OrderRequest(perp, Side.BUY, Decimal("0.001"), "pcT3p00000"))
    mark = (await venue.view.funding()).quotes[perp.symbol].mark_price
    assert buy.price_source == "mark+10bps"
    assert buy.average_price == _ticks(mark * Decimal("1.001"), perp.price_tick, ROUND_CEILING)


async def test_binance_margin_must_be_transferred_before_a_short(paper):
    venue, _, perp = await paper("binance")
    with pytest.raises(InsufficientFunds, match="futures wallet: transfer from spot first"):
        await venue.place_order(OrderRequest(perp, Side.SELL, Decimal("0.01"), "pcT4p00000"))
    assert await venue.fetch_order(perp, "pcT4p00000") is None
    assert (await venue.fetch_balances())[Wallet.SPOT]["USDT"].total == 100_000


async def test_bybit_unified_wallet_margins_a_short_without_a_transfer(paper):
    venue, spot, perp = await paper("bybit")
    await venue.place_order(OrderRequest(spot, Side.BUY, Decimal("0.01"), "pcT5s00000"))
    short = await venue.place_order(OrderRequest(perp, Side.SELL, Decimal("0.01"),
                                                 "pcT5p00000"))
    assert short.status is OrderStatus.FILLED
    balances = await venue.fetch_balances()
    assert set(balances) == {Wallet.UNIFIED, Wallet.FUNDING}
    assert balances[Wallet.UNIFIED]["USDT"].used == short.filled_quantity * short.average_price


async def test_no_book_and_no_mark_refuses_the_order(paper):
    venue, spot, _ = await paper("bybit")
    snapshot = await venue.view.funding()
    quote = snapshot.quotes["BTC/USDT:USDT"]
    snapshot.quotes["BTC/USDT:USDT"] = replace(quote, mark_price=None, index_price=None)
    with pytest.raises(VenueError, match="BTC/USDT: no book and no mark price"):
        await venue.place_order(OrderRequest(spot, Side.BUY, Decimal("0.01"), "pcT6s00000"))
    assert await venue.fetch_order(spot, "pcT6s00000") is None


async def test_max_quantity_is_refused_as_live(paper):
    venue, _, perp = await paper("binance")
    # ccxt's reading of the recorded exchangeInfo: MARKET_LOT_SIZE maxQty of BTCUSDT.
    raw = venue.view.client.raw_markets[perp.symbol]["limits"]["market"]["max"]
    limited = replace(perp, max_market_quantity=Decimal(str(raw)))
    (await venue.view.markets())[perp.symbol] = limited
    with pytest.raises(InvalidOrder, match="above the maximum quantity 120"):
        await venue.place_order(OrderRequest(limited, Side.SELL, Decimal("120.001"),
                                             "pcT7p00000"))


async def test_a_client_id_is_used_once(paper):
    venue, spot, _ = await paper("bybit")
    request = OrderRequest(spot, Side.BUY, Decimal("0.001"), "pcT8s00000")
    await venue.place_order(request)
    with pytest.raises(DuplicateClientOrderId):
        await venue.place_order(request)
    assert len(await venue.fetch_recent_orders(spot)) == 1


async def test_post_only_that_would_take_expires_and_a_resting_one_fills_as_maker(paper):
    venue, spot, _ = await paper("bybit")
    mark = (await venue.view.funding()).quotes["BTC/USDT:USDT"].mark_price
    taking = await venue.place_order(OrderRequest(
        spot, Side.BUY, Decimal("0.01"), "pcT9s00000", OrderType.LIMIT, mark * 2,
        TimeInForce.POST_ONLY))
    assert (taking.status, taking.filled_quantity) == (OrderStatus.EXPIRED, 0)
    bid = _ticks(mark * Decimal("0.99"), spot.price_tick, ROUND_FLOOR)
    resting = await venue.place_order(OrderRequest(
        spot, Side.BUY, Decimal("0.01"), "pcT9s00001", OrderType.LIMIT, bid,
        TimeInForce.POST_ONLY))
    assert resting.status is OrderStatus.NEW
    unified = (await venue.fetch_balances())[Wallet.UNIFIED]
    assert unified["USDT"].used == Decimal("0.01") * bid  # held for the bid
    # The price falls 2 %: the bid is crossed and fills at its limit, with the maker fee.
    snapshot = await venue.view.funding()
    quote = snapshot.quotes["BTC/USDT:USDT"]
    snapshot.quotes["BTC/USDT:USDT"] = replace(quote, mark_price=mark * Decimal("0.98"))
    filled = await venue.fetch_order(spot, "pcT9s00001")
    fees = await venue.fees()
    assert (filled.status, filled.average_price) == (OrderStatus.FILLED, bid)
    assert filled.fees[0].amount == Decimal("0.01") * fees.spot_maker
    assert filled.price_source == "limit (maker)"


async def test_faults_reject_partial_fill_and_lost_answers(paper):
    faults = PaperFaults()
    venue, _, perp = await paper("bybit", faults=faults)
    faults.reject(InsufficientFunds("bybit", "simulated margin call"))
    with pytest.raises(InsufficientFunds, match="simulated margin call"):
        await venue.place_order(OrderRequest(perp, Side.SELL, Decimal("0.004"), "pcTAp00000"))
    assert await venue.fetch_order(perp, "pcTAp00000") is None
    faults.partial_fill(Decimal("0.5"))
    partial = await venue.place_order(OrderRequest(perp, Side.SELL, Decimal("0.004"),
                                                   "pcTAp00001"))
    assert (partial.status, partial.filled_quantity) == (OrderStatus.EXPIRED, Decimal("0.002"))
    assert [p.quantity for p in await venue.fetch_positions()] == [Decimal("0.002")]
    faults.outcome_unknown(accepted=True)
    with pytest.raises(OutcomeUnknown):
        await venue.place_order(OrderRequest(perp, Side.SELL, Decimal("0.001"), "pcTAp00002"))
    faults.fail_queries(1)
    with pytest.raises(OutcomeUnknown):
        await venue.fetch_order(perp, "pcTAp00002")
    # Accepted before the answer was lost: the fill is in the account.
    assert (await venue.fetch_order(perp, "pcTAp00002")).status is OrderStatus.FILLED
    assert [p.quantity for p in await venue.fetch_positions()] == [Decimal("0.003")]


async def test_funding_at_the_next_settlement_from_the_snapshot(paper, clock):
    venue, _, perp = await paper("binance")
    await venue.transfer("USDT", Decimal(5000), Wallet.SPOT, Wallet.FUTURES)
    await venue.place_order(OrderRequest(perp, Side.SELL, Decimal("0.02"), "pcTBp00000"))
    before = (await venue.fetch_balances())[Wallet.FUTURES]["USDT"]
    clock.now = datetime(2025, 9, 9, 8, 1, tzinfo=UTC)
    payments = await venue.fetch_funding_payments(SNAPSHOT_TIME)
    # The short receives the positive predicted rate on its notional at the mark.
    assert [(p.time, p.amount, p.currency) for p in payments] == [
        (datetime(2025, 9, 9, 8, tzinfo=UTC), Decimal("0.02") * BTC_MARK * BTC_RATE, "USDT")]
    after = (await venue.fetch_balances())[Wallet.FUTURES]["USDT"]
    assert after.total - before.total == payments[0].amount
    # The settlement after that is in no data: left unsettled, never made up.
    clock.now = datetime(2025, 9, 9, 16, 1, tzinfo=UTC)
    assert len(await venue.fetch_funding_payments(SNAPSHOT_TIME)) == 1


async def test_funding_of_past_settlements_from_the_recorded_history(paper, clock):
    venue, _, perp = await paper("binance")
    clock.now = datetime(2025, 9, 8, 0, 0, tzinfo=UTC)
    await venue.transfer("USDT", Decimal(5000), Wallet.SPOT, Wallet.FUTURES)
    await venue.place_order(OrderRequest(perp, Side.BUY, Decimal("0.01"), "pcTCp00000"))
    clock.now = SNAPSHOT_TIME + timedelta(minutes=10)
    payments = await venue.fetch_funding_payments(datetime(2025, 9, 8, tzinfo=UTC))
    recorded = _recorded_btc_funding()
    expected = [(datetime.fromtimestamp(t // 1000, UTC), -Decimal("0.01") * mark * rate)
                for t, rate, mark in recorded if t > 1757289600000 + 60_000]
    # A long pays a positive rate, at the mark each settlement recorded.
    assert [(p.time, p.amount) for p in payments] == expected and len(expected) == 3


def _recorded_btc_funding() -> list[tuple[int, Decimal, Decimal]]:
    for interaction in json.loads(BINANCE_SNAPSHOT.read_text())["interactions"]:
        if "fundingRate?" in interaction["request"]["uri"] and "=BTCUSDT" in \
                interaction["request"]["uri"]:
            rows = json.loads(interaction["response"]["body"]["string"])
            return [(r["fundingTime"], Decimal(r["fundingRate"]), Decimal(r["markPrice"]))
                    for r in rows]
    raise AssertionError("no BTCUSDT history in the snapshot")


async def test_liquidation_price_of_a_lone_short_by_hand(paper):
    venue, _, perp = await paper("binance")
    await venue.transfer("USDT", Decimal(2000), Wallet.SPOT, Wallet.FUTURES)
    await venue.setup_account(perp, Decimal(10))
    short = await venue.place_order(OrderRequest(perp, Side.SELL, Decimal("0.1"),
                                                 "pcTDp00000"))
    [position] = await venue.fetch_positions()
    cash = Decimal(2000) - short.fees[0].amount
    entry, rate = short.average_price, Decimal("0.005")
    # cash + q (entry - P) = rate q P  =>  P = (cash + q entry) / (q (1 + rate))
    assert position.liquidation_price == (cash + Decimal("0.1") * entry) / (
        Decimal("0.1") * (1 + rate))
    assert position.leverage == 10
    assert position.margin_ratio == Decimal("0.1") * BTC_MARK * rate / (
        cash + Decimal("0.1") * (entry - BTC_MARK))


def test_state_survives_a_killed_process(data_dir, tmp_path):
    """A fill acknowledged by place_order is on disk even if the process dies at once."""
    script = f"""
import asyncio, os
from decimal import Decimal
from pathlib import Path
from perpcarry.ccxt.replay import replaying
from perpcarry.config.loader import load_config
from perpcarry.paper import open_paper_venue
from perpcarry.venues.orders import OrderRequest, Side
from perpcarry.venues.protocol import VenueContext

async def main():
    config = load_config(None)
    with replaying(config.registry.venues["bybit"].offline_snapshot):
        venue = open_paper_venue(config, "bybit", VenueContext(
            cache_dir=Path({str(tmp_path / "cache")!r}), offline=True))
        spot = (await venue.view.markets())["BTC/USDT"]
        await venue.place_order(OrderRequest(spot, Side.BUY, Decimal("0.01"), "pcKILL00"))
        os._exit(9)  # no close, no clean shutdown

asyncio.run(main())
"""
    env = {**os.environ, "PERPCARRY_DATA_DIR": str(data_dir)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    store = PaperStore(state_path(data_dir, "bybit"), "bybit", Wallet.UNIFIED, {},
                       SNAPSHOT_TIME)
    order = store.order("pcKILL00")
    assert order is not None and order.state.status is OrderStatus.FILLED
    assert store.balance(Wallet.UNIFIED, "BTC") == Decimal("0.01") - order.state.fees[0].amount


def test_a_state_file_of_another_schema_is_refused_in_one_line(data_dir):
    path = state_path(data_dir, "okx")
    PaperStore(path, "okx", Wallet.UNIFIED, {"USDT": Decimal(1)}, SNAPSHOT_TIME).close()
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(LocalStateError, match=r"schema version 99.*paper reset --venues okx"):
        PaperStore(path, "okx", Wallet.UNIFIED, {}, SNAPSHOT_TIME)
    delete_state(path)
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LocalStateError, match=r"okx\.sqlite: file is not a database"):
        PaperStore(path, "okx", Wallet.UNIFIED, {}, SNAPSHOT_TIME)
