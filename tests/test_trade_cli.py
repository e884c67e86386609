"""``perpcarry open``, ``positions``, ``close`` and ``reconcile`` end to end on a fresh clone
with no config (``--paper --offline``), what reconcile finds when the venue and the journal
disagree, and the one-line refusals."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from perpcarry.ccxt.replay import replaying
from perpcarry.config.loader import load_config
from perpcarry.paper import open_paper_venue
from perpcarry.venues.orders import OrderRequest, OrderType, Side, TimeInForce, Wallet
from perpcarry.venues.protocol import VenueContext

PERP, SPOT = "BTC/USDT:USDT", "BTC/USDT"


pytestmark = pytest.mark.usefixtures("data_dir")


def by_hand(tmp_path, act):
    """``act(venue, markets)`` on Binance's paper account, as a user trading by hand would."""

    async def run():
        config = load_config(None)
        with replaying(config.registry.venues["binance"].offline_snapshot):
            venue = open_paper_venue(config, "binance", VenueContext(
                cache_dir=tmp_path / "hand-cache", offline=True))
            try:
                return await act(venue, await venue.view.markets())
            finally:
                await venue.close()

    return asyncio.run(run())


def held(tmp_path) -> tuple[Decimal, Decimal]:
    """BTC spot held and BTC perp short, as the paper venue has them."""

    async def read(venue, _markets):
        balances = await venue.fetch_balances()
        shorts = [p.quantity for p in await venue.fetch_positions() if p.symbol == PERP]
        return (balances[Wallet.SPOT].get("BTC").total if "BTC" in balances[Wallet.SPOT]
                else Decimal(0), shorts[0] if shorts else Decimal(0))

    return by_hand(tmp_path, read)


def cli_json(run_cli, *args: str):
    result = run_cli(*args, "--json")
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None


def test_open_positions_close_reconcile_on_a_fresh_clone(run_cli, tmp_path):
    code, opened = cli_json(run_cli, "open", "--paper", "--offline", "binance", "BTC",
                            "--notional", "1000", "--yes")
    assert code == 0 and opened["state"] == "done"
    # 1000 USDT at the snapshot's mark is 0.008 BTC on the perp's 0.001 step; the spot
    # leg delivers it less Binance's 0.1 % taker fee taken in BTC.
    assert Decimal(opened["perp_change"]) == Decimal("0.008")
    assert Decimal(opened["spot_change"]) == Decimal("0.007992")
    assert held(tmp_path) == (Decimal("0.007992"), Decimal("0.008"))

    code, listed = cli_json(run_cli, "positions")
    [row] = listed["positions"]
    assert (row["position_id"], row["venue"], row["base"], row["state"]) == (
        opened["position_id"], "binance", "BTC", "open")
    assert Decimal(row["delta"]) == Decimal("-0.000008")

    code, closed = cli_json(run_cli, "close", "--paper", "--offline", "binance", "BTC")
    assert code == 0 and closed["state"] == "done"
    assert Decimal(closed["perp_change"]) == Decimal("-0.008")
    spot, short = held(tmp_path)
    assert short == 0 and spot < Decimal("0.00001")  # below the spot's step: dust
    assert cli_json(run_cli, "positions")[1]["positions"] == []

    code, report = cli_json(run_cli, "reconcile", "--paper", "--offline")
    assert (code, report["clean"], report["findings"]) == (0, True, [])


def test_reconcile_reports_what_the_journal_does_not_know_and_touches_nothing(run_cli,
                                                                              tmp_path):
    async def trade(venue, markets):
        await venue.transfer("USDT", Decimal(3000), Wallet.SPOT, Wallet.FUTURES)
        await venue.place_order(OrderRequest(markets[PERP], Side.SELL, Decimal("0.01"),
                                             "hand1"))
        # A resting buy far below the market: a working order.
        await venue.place_order(OrderRequest(markets[SPOT], Side.BUY, Decimal("0.01"),
                                             "hand2", OrderType.LIMIT, Decimal(10_000),
                                             TimeInForce.POST_ONLY))

    by_hand(tmp_path, trade)
    code, report = cli_json(run_cli, "reconcile", "--paper", "--offline")
    assert code == 1 and not report["clean"]
    kinds = {(f["kind"], f["subject"], f["action"]) for f in report["findings"]}
    assert kinds == {("unknown_position", PERP, "not touched"),
                     ("unknown_order", SPOT, "not touched")}
    assert held(tmp_path) == (Decimal(0), Decimal("0.01"))


def test_reconcile_closes_a_spot_leg_left_naked_by_a_perp_closed_by_hand(run_cli, tmp_path):
    code, opened = cli_json(run_cli, "open", "--paper", "--offline", "binance", "BTC",
                            "--notional", "1000", "--yes")
    assert code == 0

    async def buy_back(venue, markets):
        await venue.place_order(OrderRequest(markets[PERP], Side.BUY, Decimal("0.008"),
                                             "hand3", reduce_only=True))

    by_hand(tmp_path, buy_back)
    code, report = cli_json(run_cli, "reconcile", "--paper", "--offline")
    [finding] = report["findings"]
    assert (finding["kind"], finding["subject"]) == ("naked_leg", opened["position_id"])
    assert finding["action"].startswith("closed: sell")
    spot, short = held(tmp_path)
    assert short == 0 and spot < Decimal("0.00001")
    # Repaired: the next reconcile has nothing left to say.
    assert cli_json(run_cli, "reconcile", "--paper", "--offline")[1]["findings"] == []


@pytest.mark.parametrize(("args", "message"), [
    (("open", "binance", "BTC", "--offline"), "give one of --notional USD or --quantity BASE"),
    (("open", "binance", "BTC", "--notional", "1000", "--quantity", "1"),
     "give one of --notional USD or --quantity BASE"),
    (("open", "binance", "BTC", "--notional", "-5"), "--notional: must be a number above 0"),
    (("open", "binance", "BTC", "--notional", "1000", "--paper", "--live"),
     "--paper and --live: choose one"),
    (("close", "--paper", "--offline", "binance", "BTC"),
     "no open BTC position on binance in the journal"),
    (("open", "--offline", "binance", "NOPE", "--notional", "1000", "--yes"),
     "binance lists no carry pair for NOPE"),
])
def test_user_mistakes_are_one_line_and_exit_2(run_cli, args, message):
    result = run_cli(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_paper_faults_hook_is_refused_when_malformed_or_live(run_cli, monkeypatch):
    monkeypatch.setenv("PERPCARRY_PAPER_FAULTS", "2=explode")
    result = run_cli("reconcile", "--paper", "--offline")
    assert result.exit_code == 2
    assert "PERPCARRY_PAPER_FAULTS: '2=explode' is not N=KIND" in result.stderr


def test_a_scheduled_spot_rejection_is_unwound_and_says_why(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PERPCARRY_PAPER_FAULTS", "2=reject")
    code, opened = cli_json(run_cli, "open", "--paper", "--offline", "binance", "BTC",
                            "--notional", "1000", "--yes")
    assert code == 1 and opened["state"] == "unwound"
    assert "rejected (simulated by PaperFaults)" in opened["note"]
    assert held(tmp_path) == (Decimal(0), Decimal(0))
