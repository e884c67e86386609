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
    # From `perpcarry scan --offline` (mean estimator, 30 days): only Binance has positive
    # net carry; the best are ALPHA 21.88 %, XMR 14.78 %, NKN 7.83 % (then 7.30 % and less).
    # Bybit and OKX rows are all negative net, so they get nothing.
    candidates, _ = candidates_from_scan(snapshot_rows)
    plan_ = allocate(candidates, Limits.from_config(AllocatorConfig(), 100_000))
    by_base = {p.base: p for p in plan_.positions}
    assert set(by_base) == {"ALPHA", "XMR", "NKN"}
    # k = 1 + 1.5 / 2 = 1.75. Venue cap 50 % = 50,000 of capital on Binance; asset and pair
    # caps 20,000: ALPHA and XMR take 20,000 each, NKN the last 10,000 of the Binance cap.
    assert [p.lp_notional for p in plan_.positions] == pytest.approx(
        [20_000 / 1.75 if p.base != "NKN" else 10_000 / 1.75 for p in plan_.positions])
    assert plan_.lp_objective == pytest.approx(
        (20_000 * by_base["ALPHA"].net_apr + 20_000 * by_base["XMR"].net_apr
         + 10_000 * by_base["NKN"].net_apr) / 1.75)
    # Rounded down to the lot: ALPHA 11,428.57 / 0.0149344 = 765,251.9 -> 765,251 (lot 1);
    # XMR 11,428.57 / 266.27393333 = 42.9203 -> 42.920 (lot 0.001).
    assert by_base["ALPHA"].base_quantity == Decimal("765251")
    assert by_base["XMR"].base_quantity == Decimal("42.920")
    # NKN: 5,714.29 / 0.02692 = 212,269.9 -> 212,269; rounding ALPHA and XMR down frees
    # 0.0121 + 0.1649 of the Binance cap, NKN's own rounding 0.0075: 0.1844 in all, which
    # buys 3 more lots of 0.02692 x 1.75 = 0.0471 -> 212,272.
    assert by_base["NKN"].base_quantity == Decimal("212272")
    assert sum(float(p.capital) for p in plan_.positions) <= 50_000
    assert plan_.unused.caps == pytest.approx(50_000, abs=0.2)
    # Entry order: current funding APR (no books offline, so no premium): XMR 36.43 % first.
    assert plan_.positions[0].base == "XMR" and plan_.positions[0].entry_rank == 1
    assert [(u.kind, u.name) for u in plan_.binding][:3] == [
        ("venue", "binance"), ("asset", "ALPHA"), ("asset", "XMR")]


def test_plan_offline_prints_a_cap_respecting_plan():
    result = CliRunner().invoke(app, ["plan", "--offline", "--capital", "100000"])
    assert result.exit_code == 0, result.output
    assert "XMR/USDT" in result.output and "ALPHA/USDT" in result.output
    assert "Binding at the LP optimum: venue binance" in result.output
    assert "left idle by caps 50,000.0" in result.output


def test_plan_json_respects_overridden_caps():
    result = CliRunner().invoke(app, ["plan", "--offline", "--capital", "100000", "--json",
                                      "--venue-cap", "40", "--asset-cap", "10"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["limits"]["max_venue_share"] == 0.4
    assert all(u["used"] <= 10_000 for u in data["assets"])
    assert sum(float(p["capital"]) for p in data["positions"]) <= 40_000
    assert len(data["positions"]) >= 4   # 40,000 under 10,000 per asset


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
