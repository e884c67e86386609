"""The margin monitor on the paper venues over the bundled snapshots: a carry position whose
price rises until its pool's margin falls below ``margin_floor`` times its initial margin
(the backtest's rule), or its short nears liquidation, is topped up by a transfer (Binance,
separate wallets) or rebalanced with equal legs (Bybit, unified); the top-up comes before
the utilisation ceiling; leverage above the ceiling raises an alarm, and margin use above
the ceiling (once nothing can be topped up) cancels pending orders and closes the smallest
position first. Prices are moved the way tests/test_paper.py moves them: the snapshot's
own mark (and spot index) scaled."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perpcarry.cli.trade import session
from perpcarry.config.loader import load_config
from perpcarry.config.settings import RiskConfig
from perpcarry.domain.errors import ExchangeUnavailable, InvalidValue
from perpcarry.events import EventBus
from perpcarry.risk.monitor import RiskMonitor
from perpcarry.risk.sizing import (
    distance_after_top_up,
    margin_share,
    margin_top_up,
    rebalance_for_margin,
    rebalance_quantity,
    top_up_amount,
)
from perpcarry.venues.orders import OrderRequest, OrderType, Side, TimeInForce, Wallet

PERP, SPOT = "BTC/USDT:USDT", "BTC/USDT"
NOW = datetime(2026, 12, 6, tzinfo=UTC)
# The margin rule out of the way (a floor far below any margin these tests reach), for the
# tests of the other triggers.
NO_MARGIN_RULE = "[strategy]\nmargin_floor = 0.1\n"


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PERPCARRY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PERPCARRY_CACHE_DIR", str(tmp_path / "cache"))

    def write(text: str = "", leverage: int = 5, binance_usdt: int = 100_000):
        path = tmp_path / "perpcarry.toml"
        # Leveraged shorts and a small unified account, so that a rise of the kind the
        # 2023-24 rally made brings a short near its liquidation.
        path.write_text(f"[execution]\nleverage = {leverage}\n"
                        "[paper.venues.bybit]\nbalances = { USDT = 1500 }\n"
                        f"[paper.venues.binance]\nbalances = {{ USDT = {binance_usdt} }}\n"
                        + text)
        return load_config(path)

    return write


async def move_price(trading, venue_id: str, factor: Decimal) -> Decimal:
    """Scale the venue's BTC mark and spot index by ``factor`` for the paper venue and for
    the prices orders are sized with; the new mark."""
    venue = trading.venues[venue_id].orders
    snapshot = await venue.view.funding()
    quote = snapshot.quotes[PERP]
    moved = replace(quote, mark_price=quote.mark_price * factor,
                    index_price=quote.index_price and quote.index_price * factor)
    snapshot.quotes[PERP] = moved

    async def same_snapshot():
        return snapshot

    venue.view.client.fetch_funding_snapshot = same_snapshot
    return moved.mark_price


async def perp_of(trading, venue_id: str):
    [position] = [p for p in await trading.venues[venue_id].orders.fetch_positions()
                  if p.symbol == PERP]
    return position


async def open_btc(trading, venue_id: str, quantity: str):
    result = await trading.open(venue_id, "BTC", notional=None, quantity=Decimal(quantity),
                                executor=trading.executor(None), slices=1)
    assert result.state.value == "done", result.note
    return trading.journal.position(result.position_id)


def risk_events(journal) -> list[dict]:
    """The monitor's events as the bus journalled them."""
    return [e["detail"] for e in journal.events()
            if e["kind"] == "event" and "risk_kind" in e["detail"]["data"]]


def monitor(risk, trading) -> RiskMonitor:
    return RiskMonitor(risk, EventBus(trading.config.registry.pm, trading.journal, None,
                                      trading.journal.clock))


async def test_a_short_near_liquidation_is_topped_up_by_a_transfer(config_file):
    config = config_file("[risk]\nleverage_ceiling = 20\n" + NO_MARGIN_RULE)
    risk = config.settings.risk
    async with session(config, ["binance"], paper=True, offline=True,
                       trading=True) as trading:
        await open_btc(trading, "binance", "0.01")
        before = await perp_of(trading, "binance")
        assert before.liquidation_distance > risk.warning_distance
        report = await monitor(risk, trading).check(trading, NOW)
        assert report.events == [] and report.next_check_seconds == risk.check_seconds

        # Between the floor and the warning level: a warning, and checks come faster.
        await move_price(trading, "binance", Decimal("1.05"))
        warned = await perp_of(trading, "binance")
        assert risk.floor_distance < warned.liquidation_distance < risk.warning_distance
        report = await monitor(risk, trading).check(trading, NOW)
        assert [e.kind for e in report.events] == ["warning"]
        assert report.events[0].numbers["distance"] == warned.liquidation_distance
        assert report.next_check_seconds == risk.danger_check_seconds

        await move_price(trading, "binance", Decimal("1.15") / Decimal("1.05"))
        low = await perp_of(trading, "binance")
        assert low.liquidation_distance < risk.floor_distance
        balances = await trading.venues["binance"].orders.fetch_balances()
        spot_before = balances[Wallet.SPOT]["USDT"].free

        report = await monitor(risk, trading).check(trading, NOW)
        [top_up] = report.events
        assert top_up.kind == "top_up" and top_up.subject == PERP
        moved = top_up.numbers["amount"]
        after = await perp_of(trading, "binance")
        # Restored to the target, and not much past it (the amount is rounded to the cent).
        assert risk.top_up_target <= after.liquidation_distance < risk.top_up_target + \
            Decimal("0.0001")
        balances = await trading.venues["binance"].orders.fetch_balances()
        assert balances[Wallet.SPOT]["USDT"].free == spot_before - moved
        # Journalled before and after, and as a risk event for the dashboard.
        kinds = [e["kind"] for e in trading.journal.events()]
        assert kinds[-3:] == ["transfer_planned", "transfer_done", "event"]
        assert risk_events(trading.journal)[-1]["data"]["risk_kind"] == "top_up"
        # The legs were not touched.
        assert after.quantity == before.quantity


async def test_without_free_quote_a_separate_wallet_venue_rebalances_and_moves_the_proceeds(
        config_file):
    # Just enough USDT for the open: about 3.5 USDT stay free in the spot wallet.
    config = config_file("[risk]\nleverage_ceiling = 20\n" + NO_MARGIN_RULE,
                         binance_usdt=1460)
    risk = config.settings.risk
    async with session(config, ["binance"], paper=True, offline=True,
                       trading=True) as trading:
        position = await open_btc(trading, "binance", "0.01")
        await move_price(trading, "binance", Decimal("1.15"))
        assert (await perp_of(trading, "binance")).liquidation_distance < risk.floor_distance
        report = await monitor(risk, trading).check(trading, NOW)
        # What was free first, then a rebalance for the rest, then its spot proceeds.
        assert [e.kind for e in report.events] == ["top_up", "rebalance", "top_up"]
        assert report.events[0].numbers["amount"] < 4
        after = await perp_of(trading, "binance")
        assert after.liquidation_distance >= risk.top_up_target
        held = trading.journal.position(position.position_id)
        assert held.perp_quantity == after.quantity == Decimal("0.008")
        assert abs(held.delta) <= trading.tolerance(await trading.pair("binance", "BTC"))


async def test_a_venue_that_does_not_answer_is_reported_down(config_file):
    config = config_file()
    async with session(config, ["binance"], paper=True, offline=True,
                       trading=True) as trading:
        await open_btc(trading, "binance", "0.01")
        venue = trading.venues["binance"].orders

        async def unanswered():
            raise ExchangeUnavailable("binance", "HTTP 503: system maintenance")

        venue.fetch_positions = unanswered
        report = await monitor(config.settings.risk, trading).check(trading, NOW)
        assert report.down == {"binance": "binance: HTTP 503: system maintenance"}
        [down] = report.events
        assert (down.kind, down.venue) == ("venue_down", "binance")
        assert report.unrealised_pnl is None and report.equity is None
        assert report.next_check_seconds == config.settings.risk.danger_check_seconds


async def test_a_unified_account_rebalances_with_equal_legs(config_file):
    # At 10x the initial margin held stays under the utilisation ceiling after the rise.
    config = config_file("[risk]\nleverage_ceiling = 20\n" + NO_MARGIN_RULE, leverage=10)
    risk = config.settings.risk
    async with session(config, ["bybit"], paper=True, offline=True, trading=True) as trading:
        position = await open_btc(trading, "bybit", "0.01")
        mark = await move_price(trading, "bybit", Decimal("1.5"))
        low = await perp_of(trading, "bybit")
        assert low.liquidation_distance < risk.floor_distance

        report = await monitor(risk, trading).check(trading, NOW)
        [rebalance] = report.events
        assert (rebalance.kind, rebalance.subject) == ("rebalance", position.position_id)
        # x = q (t - d) / (1 + t), up to the 0.001 step of Bybit's BTC perp.
        expected = rebalance_quantity(low.liquidation_distance, risk.top_up_target,
                                      Decimal("0.01"), Decimal("0.001"))
        assert rebalance.numbers["quantity"] == expected == Decimal("0.002")
        after = await perp_of(trading, "bybit")
        assert after.quantity == Decimal("0.008")
        assert after.liquidation_distance >= risk.top_up_target
        # Both legs came down by the same quantity: the journal and the venue agree.
        now_held = trading.journal.position(position.position_id)
        assert position.spot_quantity - now_held.spot_quantity == expected
        assert abs(now_held.delta) <= trading.tolerance(await trading.pair("bybit", "BTC"))
        balances = await trading.venues["bybit"].orders.fetch_balances()
        assert balances[Wallet.UNIFIED]["BTC"].total == now_held.spot_quantity
        assert after.mark_price == mark


async def test_leverage_above_the_ceiling_raises_an_alarm(config_file):
    config = config_file("[risk]\nleverage_ceiling = 3\n")
    async with session(config, ["binance"], paper=True, offline=True,
                       trading=True) as trading:
        await open_btc(trading, "binance", "0.01")
        perp = await perp_of(trading, "binance")
        futures = (await trading.venues["binance"].orders.fetch_balances())[Wallet.FUTURES]
        leverage = perp.quantity * perp.mark_price / futures["USDT"].total
        # 5x on the venue with 1.5x the margin moved: about 3.3x effective.
        assert Decimal(3) < leverage < Decimal(4)
        report = await monitor(config.settings.risk, trading).check(trading, NOW)
        [alarm] = report.of_kind("leverage_alarm")
        assert alarm.numbers["leverage"] == leverage
        assert f"effective leverage {leverage:.2f}x above the ceiling 3x" in alarm.message
        calm = RiskConfig(leverage_ceiling=Decimal(4))
        assert (await monitor(calm, trading).check(trading, NOW)).of_kind("leverage_alarm") == []


async def tight_binance_pool(trading):
    """Two BTC carries on Binance, what the opens left free in the futures wallet moved back
    to spot, and a resting perp sell far above the market: more than 85 % of the margin
    used. Returns the two journal positions, smaller first."""
    small = await open_btc(trading, "binance", "0.01")
    large = await open_btc(trading, "binance", "0.02")
    venue = trading.venues["binance"].orders
    perp_market = (await venue.view.markets())[PERP]
    futures = (await venue.fetch_balances())[Wallet.FUTURES]["USDT"]
    spare = futures.total - futures.used * Decimal("1.1")
    await venue.transfer("USDT", spare.quantize(Decimal("0.01")), Wallet.FUTURES,
                         Wallet.SPOT)
    await venue.place_order(OrderRequest(perp_market, Side.SELL, Decimal("0.001"),
                                         "hand1", OrderType.LIMIT, Decimal(200_000),
                                         TimeInForce.POST_ONLY))
    futures = (await venue.fetch_balances())[Wallet.FUTURES]["USDT"]
    assert futures.used / futures.total > Decimal("0.85")
    return small, large


async def test_the_margin_rule_tops_up_before_the_utilisation_ceiling(config_file):
    # Default floor (1.25x the initial margin): the pool is topped up from the spot wallet
    # before the ceiling is judged, so nothing is closed.
    config = config_file("[risk]\nleverage_ceiling = 20\n")
    rule = config.settings.strategy
    async with session(config, ["binance"], paper=True, offline=True,
                       trading=True) as trading:
        await tight_binance_pool(trading)
        venue = trading.venues["binance"].orders
        spot_before = (await venue.fetch_balances())[Wallet.SPOT]["USDT"].free
        report = await monitor(config.settings.risk, trading).check(trading, NOW)
        kinds = [e.kind for e in report.events if e.kind != "warning"]
        assert kinds == ["top_up"]
        [top_up] = report.of_kind("top_up")
        assert top_up.subject == "USDT" and "floor 1.25x" in top_up.message
        futures = (await venue.fetch_balances())[Wallet.FUTURES]["USDT"]
        perp = await perp_of(trading, "binance")
        initial = margin_share(perp.quantity * perp.mark_price, 1,
                               trading.settings.leverage)
        # Restored to the target (1.5x the initial margin at the mark), to the cent.
        target = margin_share(perp.quantity * perp.mark_price,
                              trading.settings.margin_buffer, trading.settings.leverage)
        assert target <= futures.total < target + Decimal("0.01")
        assert futures.total > Decimal(str(rule.margin_floor)) * initial
        assert futures.used / futures.total <= Decimal("0.85")
        spot_after = (await venue.fetch_balances())[Wallet.SPOT]["USDT"].free
        assert spot_before - spot_after == top_up.numbers["amount"]
        assert report.of_kind("reduced") == [] and await venue.fetch_open_orders() != []


async def test_a_pool_below_the_margin_floor_is_topped_up_to_the_target_by_a_transfer(
        config_file):
    config = config_file("[risk]\nleverage_ceiling = 20\n")
    async with session(config, ["binance"], paper=True, offline=True,
                       trading=True) as trading:
        await open_btc(trading, "binance", "0.01")
        leverage, target = trading.settings.leverage, trading.settings.margin_buffer
        # At 5x with 1.5x the initial margin posted, a 5 % rise leaves 1.19x: below 1.25x.
        await move_price(trading, "binance", Decimal("1.05"))
        perp = await perp_of(trading, "binance")
        venue = trading.venues["binance"].orders
        futures = (await venue.fetch_balances())[Wallet.FUTURES]["USDT"]
        notional = perp.quantity * perp.mark_price
        assert futures.total < margin_share(notional, Decimal("1.25"), leverage)
        need = margin_top_up(futures.total, notional, leverage, Decimal("1.25"), target)

        report = await monitor(config.settings.risk, trading).check(trading, NOW)
        [top_up] = report.of_kind("top_up")
        assert top_up.numbers["amount"] == need.quantize(Decimal("0.01"),
                                                         rounding="ROUND_CEILING")
        futures = (await venue.fetch_balances())[Wallet.FUTURES]["USDT"]
        assert margin_share(notional, target, leverage) <= futures.total
        assert (await perp_of(trading, "binance")).quantity == perp.quantity
        assert report.of_kind("rebalance") == []
        # Above the floor now: the next check does nothing.
        again = await monitor(config.settings.risk, trading).check(trading, NOW)
        assert again.of_kind("top_up") == again.of_kind("rebalance") == []


async def test_a_unified_pool_below_the_margin_floor_rebalances_with_equal_legs(config_file):
    config = config_file("[risk]\nleverage_ceiling = 20\n", leverage=10)
    async with session(config, ["bybit"], paper=True, offline=True, trading=True) as trading:
        position = await open_btc(trading, "bybit", "0.01")
        leverage, target = trading.settings.leverage, trading.settings.margin_buffer
        # The unified account's USDT is its margin (its 1,500 less the spot bought).
        await move_price(trading, "bybit", Decimal("1.5"))
        perp = await perp_of(trading, "bybit")
        unified = (await trading.venues["bybit"].orders.fetch_balances())[Wallet.UNIFIED]
        notional = perp.quantity * perp.mark_price
        need = margin_top_up(unified["USDT"].total, notional, leverage, Decimal("1.25"),
                             target)
        assert need > 0

        report = await monitor(config.settings.risk, trading).check(trading, NOW)
        [rebalance] = report.of_kind("rebalance")
        assert report.of_kind("top_up") == []
        expected = rebalance_for_margin(need, perp.quantity, perp.mark_price, leverage,
                                        target, Decimal("0.001"))
        assert rebalance.numbers["quantity"] == expected > 0
        after = await perp_of(trading, "bybit")
        assert after.quantity == perp.quantity - expected
        now_held = trading.journal.position(position.position_id)
        assert position.spot_quantity - now_held.spot_quantity == expected
        assert abs(now_held.delta) <= trading.tolerance(await trading.pair("bybit", "BTC"))
        unified = (await trading.venues["bybit"].orders.fetch_balances())[Wallet.UNIFIED]
        # Back above the floor (the sale's fees aside, at the target).
        assert unified["USDT"].total >= margin_share(after.quantity * after.mark_price,
                                                     Decimal("1.25"), leverage)


async def test_margin_use_above_the_ceiling_cancels_orders_and_closes_smallest_first(
        config_file):
    # Nothing topped up (the margin rule out of the way): the ceiling is the last resort.
    config = config_file("[risk]\nutilisation_ceiling = 0.85\nleverage_ceiling = 20\n"
                         + NO_MARGIN_RULE)
    async with session(config, ["binance"], paper=True, offline=True,
                       trading=True) as trading:
        small, large = await tight_binance_pool(trading)
        venue = trading.venues["binance"].orders
        report = await monitor(config.settings.risk, trading).check(trading, NOW)
        # (The short is also within the warning distance: that is reported too.)
        kinds = [e.kind for e in report.events if e.kind != "warning"]
        assert kinds == ["utilisation", "orders_canceled", "reduced"]
        assert "hand1" in report.of_kind("orders_canceled")[0].message
        assert await venue.fetch_open_orders() == []
        [reduced] = report.of_kind("reduced")
        assert reduced.subject == small.position_id
        assert trading.journal.position(small.position_id).state.value == "closed"
        assert trading.journal.position(large.position_id).state.value == "open"
        futures = (await venue.fetch_balances())[Wallet.FUTURES]["USDT"]
        assert futures.used / futures.total <= Decimal("0.85")


@given(st.decimals("0.01", "0.3", places=4), st.decimals("0.31", "0.9", places=4),
       st.decimals("0.001", "100", places=3), st.decimals("1", "200000", places=2),
       st.decimals("0", "0.05", places=4))
def test_a_top_up_of_the_computed_amount_lands_on_the_target(distance, target, quantity,
                                                              mark, rate):
    amount = top_up_amount(distance, target, quantity, mark, rate)
    assert amount > 0
    reached = distance_after_top_up(distance, amount, quantity, mark, rate)
    assert abs(reached - target) < Decimal("1e-20")


@given(st.decimals("0.01", "0.3", places=4), st.decimals("0.31", "0.9", places=4),
       st.integers(1, 10_000), st.sampled_from([Decimal("0.001"), Decimal("0.01")]))
def test_a_rebalance_restores_the_target_and_never_exceeds_the_position(distance, target,
                                                                         steps, step):
    quantity = steps * step
    taken = rebalance_quantity(distance, target, quantity, step)
    assert 0 < taken <= quantity and taken % step == 0
    if taken < quantity:
        # (1 + d) q / (q - x) - 1: the distance once x is off both legs.
        assert (1 + distance) * quantity / (quantity - taken) - 1 >= target


@given(st.decimals("0", "100000", places=2), st.decimals("1", "1000000", places=2),
       st.sampled_from([Decimal(1), Decimal(2), Decimal(5), Decimal(10)]),
       st.decimals("0.5", "1.5", places=2), st.decimals("1.5", "3", places=2))
def test_the_margin_rule_tops_up_below_the_floor_and_lands_on_the_target(
        equity, notional, leverage, floor, target):
    need = margin_top_up(equity, notional, leverage, floor, target)
    if equity >= margin_share(notional, floor, leverage):
        assert need == 0
    else:
        assert need > 0 and equity + need == margin_share(notional, target, leverage)


@given(st.decimals("0.01", "100000", places=2), st.integers(1, 10_000),
       st.sampled_from([Decimal("0.001"), Decimal("0.01")]),
       st.decimals("100", "100000", places=2),
       st.sampled_from([Decimal(1), Decimal(2), Decimal(5)]), st.decimals("1.5", "3", places=2))
def test_a_margin_rebalance_covers_the_need_and_never_exceeds_the_position(
        need, steps, step, mark, leverage, target):
    quantity = steps * step
    taken = rebalance_for_margin(need, quantity, mark, leverage, target, step)
    assert 0 < taken <= quantity and taken % step == 0
    if taken < quantity:
        # The sale's quote plus the margin the bought-back perp no longer needs.
        assert taken * mark + margin_share(taken * mark, target, leverage) >= need


async def test_a_margin_floor_above_the_target_is_refused_naming_it(config_file):
    # The session posts 1.5x the initial margin ([execution] margin_buffer): a floor of 1.6
    # would top up forever.
    config = config_file("[strategy]\nmargin_floor = 1.6\n")
    async with session(config, ["binance"], paper=True, offline=True,
                       trading=True) as trading:
        with pytest.raises(InvalidValue, match=r"^\[strategy\] margin_floor: must not exceed "
                           r"the margin a short is sized with \(1\.5x its initial margin\)"):
            await monitor(config.settings.risk, trading).check(trading, NOW)
