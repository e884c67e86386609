"""``perpcarry plan`` end to end on the bundled real snapshot, and its argument errors."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
import typer
from typer.testing import CliRunner

from perpcarry.allocation.allocator import Limits, allocate, candidates_from_scan
from perpcarry.cli.app import main_options
from perpcarry.cli.plan import plan
from perpcarry.config.loader import load_config
from perpcarry.config.settings import AllocatorConfig
from perpcarry.domain.errors import UsageError
from perpcarry.scan.engine import ScanOptions, run_scan

# A private app, so these tests do not depend on how perpcarry.cli.app registers the command.
app = typer.Typer(pretty_exceptions_enable=False)
app.callback()(main_options)
app.command()(plan)


@pytest.fixture(scope="module")
def snapshot_rows():
    result = asyncio.run(run_scan(load_config(None), ScanOptions(offline=True)))
    return result.rows


def test_worked_example_from_the_bundled_snapshot(snapshot_rows):
    # From `perpcarry scan --offline` (mean estimator, 30 days). Binance: ALPHA 21.88 %,
    # XMR 14.78 %, NKN 7.83 % (then 7.30 % and less). OKX (2026-01-20 07:00): DOGE 1.46 %,
    # BTC 1.12 %. Bybit (2026-01-20 08:00) rows with a real price: ETH 0.48 %, DOGE 0.17 %
    # (BTC and SOL are negative; the other Bybit rows have no price, so cannot be sized).
    candidates, skipped = candidates_from_scan(snapshot_rows)
    plan_ = allocate(candidates, Limits.from_config(AllocatorConfig(), 100_000))
    by_pair = {(p.venue, p.base): p for p in plan_.positions}
    assert set(by_pair) == {("binance", "ALPHA"), ("binance", "XMR"), ("binance", "NKN"),
                            ("okx", "BTC"), ("okx", "DOGE"), ("bybit", "ETH")}
    # k = 1 + 1.5 / 2 = 1.75. Binance is held to its venue cap (50,000 of capital): ALPHA and
    # XMR 20,000 each (asset cap), NKN the last 10,000. The other 50,000 goes to the best
    # remaining assets: OKX DOGE and BTC 20,000 each (asset caps; Bybit DOGE is worse than
    # OKX DOGE), then Bybit ETH the last 10,000 of the investable capital.
    lp_capital = {("binance", "ALPHA"): 20_000, ("binance", "XMR"): 20_000,
                  ("binance", "NKN"): 10_000, ("okx", "BTC"): 20_000, ("okx", "DOGE"): 20_000,
                  ("bybit", "ETH"): 10_000}
    for key, capital in lp_capital.items():
        assert by_pair[key].lp_notional == pytest.approx(capital / 1.75)
    assert plan_.lp_objective == pytest.approx(
        sum(capital * by_pair[key].net_apr for key, capital in lp_capital.items()) / 1.75)
    # Rounded down to the lot at each row's real reference price (the perp's mark offline):
    # ALPHA 11,428.57 / 0.0149344 = 765,251.9 -> 765,251 (lot 1); XMR 11,428.57 / 266.27393333
    # = 42.9203 -> 42.920 (lot 0.001); OKX BTC 11,428.57 / 90,900 = 0.125727 -> 0.1257
    # (0.01 BTC a contract, lot 0.01 contract); OKX DOGE 11,428.57 / 0.12679 = 90,137.4
    # -> 90,130 (1,000 DOGE a contract, lot 0.01); Bybit ETH 5,714.29 / 3,121.21 = 1.8308
    # -> 1.83 (lot 0.01).
    assert by_pair["binance", "ALPHA"].base_quantity == Decimal("765251")
    assert by_pair["binance", "XMR"].base_quantity == Decimal("42.920")
    assert by_pair["okx", "BTC"].base_quantity == Decimal("0.1257")
    assert by_pair["okx", "BTC"].price == Decimal("90900")
    assert by_pair["okx", "DOGE"].base_quantity == Decimal("90130")
    assert by_pair["bybit", "ETH"].base_quantity == Decimal("1.83")
    assert by_pair["bybit", "ETH"].price == Decimal("3121.21")
    # NKN: 5,714.29 / 0.02692 = 212,269.9 -> 212,269; what rounding frees on the Binance
    # cap buys 3 more lots -> 212,272.
    assert by_pair["binance", "NKN"].base_quantity == Decimal("212272")
    assert sum(float(p.capital) for p in plan_.positions if p.venue == "binance") <= 50_000
    # Nothing is left idle by the caps: only lot rounding is unused.
    assert plan_.unused.caps == pytest.approx(0, abs=1e-6)
    assert plan_.unused.rounding == pytest.approx(10.37, abs=0.01)
    # Entry order: current funding APR (no books offline, so no premium): XMR 36.43 % first.
    assert plan_.positions[0].base == "XMR" and plan_.positions[0].entry_rank == 1
    assert [(u.kind, u.name) for u in plan_.binding][:2] == [
        ("total", "investable"), ("venue", "binance")]
    # The Bybit carry rows without a real price at the snapshot instant are skipped, named.
    unpriced = {s.symbol for s in skipped if s.reason == "no reference price (no book, no mark)"}
    assert unpriced == {f"{base}/USDT" for base in (
        "ORDI", "XRP", "NEAR", "BNB", "WIF", "OP", "LINK", "LTC", "AVAX", "TIA", "INJ", "SUI",
        "TRX", "ARB")}
    assert {s.venue for s in skipped if s.symbol in unpriced} == {"bybit"}


def test_plan_offline_prints_a_cap_respecting_plan():
    result = CliRunner().invoke(app, ["plan", "--offline", "--capital", "100000"])
    assert result.exit_code == 0, result.output
    assert "XMR/USDT" in result.output and "ALPHA/USDT" in result.output
    assert "│ okx     │ BTC/USDT" in result.output and "│ bybit   │ ETH/USDT" in result.output
    assert "venue binance (cap 50,000.00" in result.output
    assert "left idle by caps 0.00, rounding to lot sizes 10.37" in result.output


def test_plan_json_respects_overridden_caps():
    result = CliRunner().invoke(app, ["plan", "--offline", "--capital", "100000", "--json",
                                      "--venue-cap", "40", "--asset-cap", "10"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["limits"]["max_venue_share"] == 0.4
    assert all(u["used"] <= 10_000 for u in data["assets"])
    for venue in ("binance", "bybit", "okx"):
        assert sum(float(p["capital"]) for p in data["positions"]
                   if p["venue"] == venue) <= 40_000
    # 40,000 on Binance under 10,000 per asset; OKX BTC and DOGE, Bybit ETH 10,000 each.
    assert len(data["positions"]) == 7


def test_plan_with_no_possible_allocation_says_why():
    # perpcarry.cli.app.run turns the command's return value into the exit code.
    result = CliRunner().invoke(app, ["plan", "--offline", "--capital", "100000",
                                      "--min-net-apr", "50"], standalone_mode=False)
    assert result.return_value == 1
    assert "No allocation: no candidate reaches the minimum net APR of 50.00%" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--capital", "-5"], "--capital: must be a number above 0 and at most 1e+12, got -5"),
    (["--capital", "1000", "--venue-cap", "150"],
     "--venue-cap: must be a number above 0 and at most 100, got 150"),
    (["--capital", "1000", "--leverage", "0"],
     "--leverage: must be a number at least 1 and at most 5, got 0"),
    (["--capital", "1000", "--cash-reserve", "100"],
     "--cash-reserve: must be a number at least 0 and below 100, got 100"),
    (["--offline"], "no capital: pass --capital or set capital under [allocator]"),
])
def test_invalid_arguments_name_the_option(args, message):
    result = CliRunner().invoke(app, ["plan", *args])
    assert isinstance(result.exception, UsageError)
    assert str(result.exception).startswith(message)
