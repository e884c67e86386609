"""The order conformance kit on Bybit and OKX over their offline snapshots: real markets and
marks, and not one order interaction. The checks a venue decides before sending (steps,
minimum notional, maximum quantity) run for real: a request would fail as not recorded, so
an ``InvalidOrder`` proves nothing was sent. The checks that need a round trip with the
kit's own client ids cannot replay real captures (those carry other ids and amounts), and
no answer is invented for them: each is declared with the test that covers the same
behaviour on the real captures, and a meta test checks that every test named exists."""

from __future__ import annotations

import ast
import re
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr

from perpcarry.ccxt.replay import replaying
from perpcarry.config.loader import load_config
from perpcarry.domain.errors import NotRecorded
from perpcarry.testing import OrderHarness, OrderVenueConformance
from perpcarry.testing.orders import CHECKS, PRE_SEND_CHECKS
from perpcarry.venues.protocol import VenueContext
from perpcarry_bybit import BybitConfig
from perpcarry_bybit.venue import BybitVenue
from perpcarry_okx import OkxConfig
from perpcarry_okx.venue import OkxVenue

TESTS = Path(__file__).parent
BYBIT = "tests/test_orders_bybit.py"
OKX = "tests/test_orders_okx.py"
NO_LOST_ANSWER = "a recording cannot lose an answer or fail a query on demand"

BYBIT_ROUND_TRIPS = {
    "client_id_round_trip": (
        f"our orderLinkId sent and queried back on ccxt's real Bybit captures by "
        f"{BYBIT}::test_spot_post_only_sends_our_order_link_id_and_no_broker and "
        f"{BYBIT}::test_linear_order_not_open_is_found_in_the_history"),
    "state_machine": (
        f"filled, canceled and 'filled before the cancel' read on real captures and Bybit's "
        f"documented example by {BYBIT}::test_spot_buy_reports_the_fill_net_of_the_fee_in_base "
        f"and {BYBIT}::test_cancel_of_an_order_that_filled_first_reports_it_filled"),
    "reduce_only": (
        "the refusal is Bybit's, decided on the live position, and no capture holds one; "
        f"the flag reaching Bybit as ccxt's own request: "
        f"{BYBIT}::test_reduce_only_perp_order_body_is_ccxts_plus_our_id"),
    "fee_currency": (
        f"fees in base (spot buy) and settle coin (linear) on real fills: "
        f"{BYBIT}::test_spot_buy_reports_the_fill_net_of_the_fee_in_base and "
        f"{BYBIT}::test_linear_order_not_open_is_found_in_the_history"),
    "funding_sign": (
        f"sign of 14 real funding executions: "
        f"{BYBIT}::test_funding_payments_are_positive_when_received"),
    "balances_after_fills": (
        "no capture holds the balances before and after one fill; the unified and funding "
        f"wallets read from real captures: "
        f"{BYBIT}::test_balances_of_the_unified_and_funding_wallets"),
    "outcome_unknown": (
        f"{NO_LOST_ANSWER}; an acknowledged order not found yet is OutcomeUnknown on ccxt's "
        f"real capture: {BYBIT}::test_spot_post_only_sends_our_order_link_id_and_no_broker"),
}

OKX_ROUND_TRIPS = {
    "client_id_round_trip": (
        f"our clOrdId sent and queried back on ccxt's real OKX captures by "
        f"{OKX}::test_swap_post_only_is_sent_in_contracts_with_td_mode_and_our_id and "
        f"{OKX}::test_spot_buy_fee_in_base_is_taken_off_the_delivered_quantity"),
    "state_machine": (
        f"new, filled and canceled read on real captures and OKX's documented example by "
        f"{OKX}::test_swap_post_only_is_sent_in_contracts_with_td_mode_and_our_id, "
        f"{OKX}::test_recent_orders_read_filled_and_canceled_history and "
        f"{OKX}::test_cancel_acknowledged_is_read_back_and_may_have_filled"),
    "reduce_only": (
        "the refusal is OKX's, decided on the live position, and no capture holds one; the "
        f"flag reaching OKX in contracts: {OKX}::test_reduce_only_swap_order_in_contracts"),
    "fee_currency": (
        f"fees in base (spot buy) and settle coin (swap) on real fills: "
        f"{OKX}::test_spot_buy_fee_in_base_is_taken_off_the_delivered_quantity and "
        f"{OKX}::test_recent_orders_read_filled_and_canceled_history"),
    "funding_sign": (
        "no real OKX funding bill exists in any capture; only the bill paging is tested, "
        f"on made-up bills: {OKX}::test_funding_bills_page_backward_by_bill_id"),
    "balances_after_fills": (
        "no capture holds the balances before and after one fill; the trading and funding "
        f"accounts read from OKX's documented example: "
        f"{OKX}::test_balances_of_the_trading_and_funding_accounts"),
    "outcome_unknown": (
        f"{NO_LOST_ANSWER}; an acknowledged order not found yet is OutcomeUnknown on ccxt's "
        f"real capture: {OKX}::test_reduce_only_swap_order_in_contracts"),
    # ccxt's limits.cost.min is None on every OKX market: OKX publishes minimum sizes
    # (minSz), no minimum notional.
    "min_notional": "OKX publishes no minimum notional (minSz only): there is no rule to check",
}


@asynccontextmanager
async def recorded_harness(venue, snapshot: Path, base: str, unsupported: dict[str, str]):
    """``venue`` on its offline snapshot (real markets and marks, no order interaction),
    replayed for the whole check; the price is the snapshot's mark of ``base``'s perp."""
    with replaying(snapshot):
        try:
            await venue.load_markets()
            quote = (await venue.fetch_funding_snapshot()).quotes[f"{base}/USDT:USDT"]
            assert quote.mark_price is not None, f"the snapshot has no mark for {base}"
            spot = await venue.market(f"{base}/USDT")
            perp = await venue.market(f"{base}/USDT:USDT")
            capabilities = load_config(None).registry.venues[venue.venue_id] \
                .order_capabilities
            yield OrderHarness(venue, capabilities, spot, perp, quote.mark_price,
                               unsupported=dict(unsupported), not_recorded=NotRecorded)
        finally:
            await venue.close()


class TestBybitOnItsRealMarkets(OrderVenueConformance):
    """DOGE: of the snapshot's priced pairs, the one whose spot minimum quantity is worth
    less than its minimum notional (6.9 DOGE at 0.12669 under 1 USDT), so that rule can be
    hit."""

    def order_harness(self, tmp_path):
        config = BybitConfig(enabled=True, api_key=SecretStr("fake-test-key-not-real"),
                             secret=SecretStr("fake-test-secret-not-real"))
        venue = BybitVenue(config, VenueContext(cache_dir=tmp_path, offline=True))
        snapshot = TESTS.parent / "plugins" / "bybit" / "snapshot" / "snapshot.json"
        return recorded_harness(venue, snapshot, "DOGE", BYBIT_ROUND_TRIPS)


class TestOkxOnItsRealMarkets(OrderVenueConformance):
    """BTC: the perp trades in contracts of 0.01 BTC, so base units must convert exactly."""

    def order_harness(self, tmp_path):
        config = OkxConfig(enabled=True, api_key=SecretStr("fake-test-key-not-real"),
                           secret=SecretStr("fake-test-secret-not-real"),
                           passphrase=SecretStr("fake-test-passphrase"))
        venue = OkxVenue(config, VenueContext(cache_dir=tmp_path, offline=True))
        snapshot = TESTS.parent / "plugins" / "okx" / "snapshot" / "snapshot.json"
        return recorded_harness(venue, snapshot, "BTC", OKX_ROUND_TRIPS)


@pytest.mark.parametrize("declared", [BYBIT_ROUND_TRIPS, OKX_ROUND_TRIPS],
                         ids=["bybit", "okx"])
def test_every_round_trip_is_declared_with_tests_that_exist(declared):
    # Only the pre-send checks run on a recording; every other check names its reason.
    assert set(declared) | PRE_SEND_CHECKS >= CHECKS
    for check, reason in declared.items():
        named = re.findall(r"(tests/\w+\.py)::(\w+)", reason)
        if check == "min_notional":
            continue  # no rule to check, nothing to name
        assert named, f"{check}: the reason names no test"
        for path, name in named:
            tree = ast.parse((TESTS.parent / path).read_text())
            tests = {node.name for node in tree.body
                     if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
            assert name in tests, f"{check}: {path}::{name} does not exist"


class _Undeclared(TestBybitOnItsRealMarkets):
    """The Bybit harness with nothing declared."""

    @asynccontextmanager
    async def order_harness(self, tmp_path):
        async with super().order_harness(tmp_path) as harness:
            harness.unsupported = {}
            yield harness


def test_kit_fails_an_undeclared_round_trip_on_a_recording(tmp_path):
    with pytest.raises(AssertionError, match="fee_currency needs a round trip"):
        _Undeclared().test_fee_currency(tmp_path)
