"""Replay market data: the bundled real history as venues' market data on a simulated clock,
and the paper venues trading on it (perpcarry.replay)."""

from __future__ import annotations

import asyncio
import bisect
import hashlib
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from perpcarry.backtest.history import load_bundled
from perpcarry.config.loader import load_config
from perpcarry.domain.errors import UsageError
from perpcarry.execution.journal import Journal
from perpcarry.execution.service import TradingSession, journal_path
from perpcarry.paper.store import PaperStore, state_path
from perpcarry.plugins.manager import load_registry
from perpcarry.replay import HistoryMarketData, replay_dir, replay_venues
from perpcarry.replay.venues import snapshot_markets
from perpcarry.venues.orders import OrderRequest, Side, Wallet, floor_to_step
from perpcarry.venues.protocol import carry_pairs

MARCH = (datetime(2023, 3, 1, tzinfo=UTC), datetime(2023, 4, 1, tzinfo=UTC))
NOTIONAL = Decimal(10_000)
CENT = Decimal("0.01")


def _decimal(value: float) -> Decimal:
    return Decimal(str(value))


@pytest.fixture(scope="module")
def history() -> pl.DataFrame:
    return load_bundled()


@pytest.fixture(scope="module")
def snapshot_market_lists():
    """Each bundled venue's market definitions, read from its offline snapshot once."""
    registry = load_registry()

    async def read():
        return {venue_id: await snapshot_markets(spec, spec.config_model())
                for venue_id, spec in registry.venues.items()}

    return asyncio.run(read())


def _row(history: pl.DataFrame, venue: str, symbol: str, time: datetime) -> dict:
    rows = history.filter((pl.col("venue") == venue) & (pl.col("symbol") == symbol)
                          & (pl.col("time") == time))
    assert rows.height == 1
    return rows.row(0, named=True)


async def _open_carry(handle, base: str, cid: str) -> Decimal:
    """Spot buy and perp sell of NOTIONAL of ``base`` on a replayed paper venue; the short
    quantity."""
    venue = handle.orders
    pair = next(p for p in carry_pairs(await handle.market_data.load_markets())
                if p.base == base)
    quote = (await handle.market_data.fetch_funding_snapshot()).quotes[pair.perp.symbol]
    quantity = floor_to_step(pair.perp, floor_to_step(pair.spot, NOTIONAL / quote.mark_price))
    if venue.model.margin is not venue.model.spot:  # separate wallets: margin first
        await venue.transfer("USDT", 2 * NOTIONAL, Wallet.SPOT, Wallet.FUTURES)
    await venue.place_order(OrderRequest(pair.spot, Side.BUY, quantity, f"{cid}s000000"))
    await venue.place_order(OrderRequest(pair.perp, Side.SELL, quantity, f"{cid}p000000"))
    return quantity


async def _close_all(handles) -> None:
    for handle in handles.values():
        await handle.orders.close()


# -- the simulated clock ----------------------------------------------------------------------


async def test_steps_are_the_union_of_every_series_settlements(history, tmp_path):
    """Bybit's WIF settles every 4 h, its BTC every 8 h: the replay steps at both."""
    start, end = datetime(2025, 9, 1, tzinfo=UTC), datetime(2025, 9, 2, tzinfo=UTC)
    bybit = history.filter(pl.col("venue") == "bybit")
    clock, handles = await replay_venues(load_config(None), bybit, start, end, tmp_path)
    try:
        assert clock.steps == tuple(start + timedelta(hours=4 * i) for i in range(7))
        assert clock.now() == start
        assert list(clock.run()) == list(clock.steps)
        with pytest.raises(ValueError, match="cannot go back"):
            clock.advance_to(start)
        await clock.sleep(2.5)  # an executor's pause costs no real time
        assert clock.now() == end + timedelta(seconds=2.5)
    finally:
        await _close_all(handles)


async def test_a_range_without_settlements_is_a_usage_error(history, tmp_path):
    start, end = datetime(2019, 1, 1, tzinfo=UTC), datetime(2019, 2, 1, tzinfo=UTC)
    with pytest.raises(UsageError, match=r"--replay 2019-01-01\.\.2019-02-01: no settlement "
                       r"in the history in that range \(it covers 2021-01-01 to 2026-08-2"):
        await replay_venues(load_config(None), history, start, end, tmp_path)
    assert not (tmp_path / "replay").exists()


# -- nothing from after now ---------------------------------------------------------------------


class Replayed:
    """Every bundled venue's whole history as market data on one clock the test moves, and
    each series' times and rows straight from the frame, to check the answers against."""

    def __init__(self, history: pl.DataFrame, markets: dict[str, list]) -> None:
        self.now = datetime(2023, 1, 1, tzinfo=UTC)
        self.venues = [HistoryMarketData(v, history, venue_markets, lambda: self.now)
                       for v, venue_markets in markets.items()]
        self.series = {key: (rows["time"].to_list(), rows.to_dicts()) for key, rows in
                       history.sort("time").partition_by("venue", "symbol",
                                                         as_dict=True).items()}

    def __repr__(self) -> str:  # hypothesis prints its arguments: not 100,000 rows
        return f"Replayed(now={self.now})"


@pytest.fixture(scope="module")
def replayed(history, snapshot_market_lists) -> Replayed:
    return Replayed(history, snapshot_market_lists)


@settings(max_examples=150, deadline=None)
@given(now=st.datetimes(min_value=datetime(2020, 12, 1), max_value=datetime(2026, 9, 1),
                        timezones=st.just(UTC)))
@example(now=datetime(2024, 7, 1, 8, tzinfo=UTC))  # the day after OKX's history ends
@example(now=datetime(2023, 6, 1, 16, tzinfo=UTC))  # exactly on a settlement
def test_no_value_from_after_now_is_ever_returned(replayed, now):
    replayed.now = now
    asyncio.run(_known_at(replayed, now))


async def _known_at(replayed: Replayed, now: datetime) -> None:
    """Every quote and history record of ``venues`` is the newest the history held at
    ``now``; where the next settlement was due and is not in the data, there is no quote."""
    for data in replayed.venues:
        snapshot = await data.fetch_funding_snapshot()
        skipped = {s.symbol: s.reason for s in snapshot.skipped}
        perps = [m.symbol for m in await data.load_markets() if m.settle]
        for symbol in perps:
            times, rows = replayed.series[(data.venue_id, symbol)]
            known = bisect.bisect_right(times, now)  # rows at or before now
            records = await data.fetch_funding_history(
                symbol, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
            assert len(records) == known
            quote = snapshot.quotes.get(symbol)
            if not known:
                assert quote is None and "the history starts at" in skipped[symbol]
                continue
            latest = rows[known - 1]
            assert records[-1].funding_time == latest["time"] <= now
            due = latest["time"] + timedelta(hours=latest["interval_hours"])
            if now >= due:  # the next settlement is not in the data: no quote is made up
                assert quote is None
                assert skipped[symbol].startswith(
                    f"no settlement in the history at {due:%Y-%m-%d %H:%M}")
                continue
            assert quote.timestamp == latest["time"] <= now < quote.next_funding_time == due
            assert not quote.is_predicted
            assert quote.rate == _decimal(latest["rate"])
            assert quote.mark_price == (None if latest["mark_price"] is None
                                        else _decimal(latest["mark_price"]))
            assert quote.index_price == (None if latest["spot_price"] is None
                                         else _decimal(latest["spot_price"]))


# -- paper fills and funding on the history ---------------------------------------------------


async def test_fills_are_at_the_recorded_prices_plus_the_labelled_half_spread(history,
                                                                             tmp_path):
    config = load_config(None)
    half_spread = config.settings.paper.half_spread_bps
    clock, handles = await replay_venues(config, history, *MARCH, tmp_path)
    try:
        clock.advance_to(datetime(2023, 3, 10, 16, tzinfo=UTC))
        for venue_id in ("binance", "okx"):
            handle = handles[venue_id]
            pair = next(p for p in carry_pairs(await handle.market_data.load_markets())
                        if p.base == "ETH")
            row = _row(history, venue_id, pair.perp.symbol, clock.now())
            await _open_carry(handle, "ETH", f"pcF{venue_id[0]}")
            (buy,) = await handle.orders.fetch_recent_orders(pair.spot)
            (sell,) = await handle.orders.fetch_recent_orders(pair.perp)
            spread = Decimal(1) + half_spread / 10_000
            spot_price = (_decimal(row["spot_price"]) * spread / pair.spot.price_tick
                          ).to_integral_value(ROUND_CEILING) * pair.spot.price_tick
            perp_price = (_decimal(row["mark_price"]) * (2 - spread) / pair.perp.price_tick
                          ).to_integral_value(ROUND_FLOOR) * pair.perp.price_tick
            bps = f"{half_spread.normalize():f}bps"
            assert (buy.average_price, buy.price_source) == (spot_price, f"index+{bps}")
            assert (sell.average_price, sell.price_source) == (perp_price, f"mark-{bps}")
    finally:
        await _close_all(handles)


@pytest.mark.parametrize("stepped", [True, False], ids=["every-step", "one-jump"])
async def test_funding_over_a_month_is_the_history_rate_times_mark_times_quantity(
        history, tmp_path, stepped):
    """Read at every step (each settlement from the current quote) or once at the end (every
    settlement from the venue's funding history), the paper accounts credit the same."""
    clock, handles = await replay_venues(load_config(None), history, *MARCH, tmp_path)
    try:
        opened = clock.now()
        shorts = {}
        for n, (venue_id, handle) in enumerate(handles.items()):
            for base in ("BTC", "ETH"):
                quantity = await _open_carry(handle, base, f"pcM{n}{base[0]}")
                shorts[(venue_id, f"{base}/USDT:USDT")] = quantity
        if stepped:
            for _ in clock.run():
                for handle in handles.values():
                    await handle.orders.fetch_positions()
        else:
            clock.advance_to(MARCH[1])
        for (venue_id, symbol), quantity in shorts.items():
            payments = [p for p in await handles[venue_id].orders.fetch_funding_payments(opened)
                        if p.symbol == symbol]
            rows = history.filter((pl.col("venue") == venue_id) & (pl.col("symbol") == symbol)
                                  & (pl.col("time") > opened) & (pl.col("time") <= MARCH[1]))
            expected = sum((quantity * _decimal(rate) * _decimal(mark) for rate, mark
                            in rows.select("rate", "mark_price").iter_rows()), Decimal(0))
            assert len(payments) == 93  # 31 days of 8h settlements after the open
            assert [p.time for p in payments] == rows["time"].to_list()
            credited = sum((p.amount for p in payments), Decimal(0))
            assert credited.quantize(CENT) == expected.quantize(CENT), (venue_id, symbol)
    finally:
        await _close_all(handles)


async def test_the_executor_trades_on_replayed_venues_and_its_pauses_are_simulated(
        history, tmp_path):
    """The sliced executor opens through a TradingSession on the replay's handles: its
    pauses move the simulated clock (no real wait), and with no books in the history its
    basis watch does not stop the slices."""
    config = load_config(None)
    clock, handles = await replay_venues(config, history, *MARCH, tmp_path)
    journal = Journal.open(journal_path(replay_dir(tmp_path, *MARCH), paper=True), trading=True)
    try:
        session = TradingSession(config, journal, handles, paper=True, offline=True,
                                 sleep=clock.sleep)
        result = await session.open("okx", "ETH", notional=NOTIONAL, quantity=None,
                                    executor=session.executor("sliced"), slices=3)
        pause = config.settings.execution.slice_pause_seconds
        assert clock.now() == MARCH[0] + timedelta(seconds=2 * pause)
        assert result.note is None and result.perp_change > 0
        (order, *_) = await handles["okx"].orders.fetch_recent_orders(
            (await session.pair("okx", "ETH")).perp)
        half_spread = config.settings.paper.half_spread_bps.normalize()
        assert order.price_source == f"mark-{half_spread:f}bps"
    finally:
        journal.close()
        await _close_all(handles)


# -- what cannot be replayed is said ----------------------------------------------------------


async def test_a_symbol_missing_from_the_snapshot_is_left_out_with_its_reason(
        history, snapshot_market_lists, tmp_path, logged_warnings):
    """Binance's history lists APT/USDT:USDT (2025-2026); its bundled snapshot does not."""
    start, end = datetime(2025, 9, 1, tzinfo=UTC), datetime(2025, 9, 2, tzinfo=UTC)
    reason = "not listed in binance's market snapshot: left out of the replay"
    binance = history.filter(pl.col("venue") == "binance")
    _, handles = await replay_venues(load_config(None), binance, start, end, tmp_path)
    try:
        data = handles["binance"].market_data
        assert ("APT/USDT:USDT", reason) in {(s.symbol, s.reason) for s in data.skipped}
        symbols = {m.symbol for m in await data.load_markets()}
        assert "APT/USDT:USDT" not in symbols and "BTC/USDT:USDT" in symbols
        snapshot = await data.fetch_funding_snapshot()
        assert "APT/USDT:USDT" not in snapshot.quotes and "BTC/USDT:USDT" in snapshot.quotes
        assert ("APT/USDT:USDT", reason) in {(s.symbol, s.reason) for s in snapshot.skipped}
        assert f"replay: binance APT/USDT:USDT: {reason}" in logged_warnings
    finally:
        await _close_all(handles)


def test_a_series_with_an_unknown_rate_or_interval_is_left_out(history, snapshot_market_lists):
    """A loaded dataset (``--data``) may lack a rate, or have an interval of 2.5 h: the series
    is not replayed, rather than settled at a made-up number."""
    okx = history.filter(pl.col("venue") == "okx")
    broken = okx.with_columns(
        rate=pl.when((pl.col("symbol") == "BTC/USDT:USDT") & (pl.col("time") == MARCH[0]))
        .then(None).otherwise(pl.col("rate")),
        interval_hours=pl.when(pl.col("symbol") == "ETH/USDT:USDT").then(2.5)
        .otherwise(pl.col("interval_hours")))
    data = HistoryMarketData("okx", broken, snapshot_market_lists["okx"], lambda: MARCH[1])
    assert {(s.symbol, s.reason) for s in data.skipped} == {
        ("BTC/USDT:USDT", "a settlement in the history has no rate"),
        ("ETH/USDT:USDT", "a settlement interval in the history is not a whole number of "
                          "hours")}
    assert asyncio.run(data.load_markets()) == []


# -- a replay's state is its own ----------------------------------------------------------------


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_replay_never_touches_the_users_paper_accounts(history, tmp_path,
                                                              logged_warnings):
    config = load_config(None)
    user_account = state_path(tmp_path, "binance")
    PaperStore(user_account, "binance", Wallet.SPOT, {"USDT": Decimal(123)},
               datetime(2026, 1, 1, tzinfo=UTC)).close()
    before = _digest(user_account)
    directory = replay_dir(tmp_path, *MARCH)
    assert directory == tmp_path / "replay" / "2023-03-01_2023-04-01"
    for _ in range(2):  # the second replay of the range wipes the first
        clock, handles = await replay_venues(config, history, *MARCH, tmp_path)
        try:
            replayed = handles["binance"].orders
            assert replayed.store.path == state_path(directory, "binance")
            # Each replay starts afresh, at the configured balances (not the user's 123).
            assert replayed.store.order_count() == 0
            balances = await replayed.fetch_balances()
            assert balances[Wallet.SPOT]["USDT"].total == 100_000
            await _open_carry(handles["binance"], "BTC", "pcI0B")
            clock.advance_to(MARCH[1])
            assert await replayed.fetch_funding_payments(MARCH[0])
        finally:
            await _close_all(handles)
        assert _digest(user_account) == before
    assert logged_warnings == [f"replay: wiping {directory} (what the last replay of this "
                               "range left)"]
