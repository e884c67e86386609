"""``perpcarry account``, ``orders`` and ``paper reset`` end to end: a fresh clone with no
config, paper positions written by the paper venue, and the one-line refusals."""

from __future__ import annotations

import asyncio
import io
import json
import re
from decimal import Decimal

import pytest

from perpcarry.ccxt.replay import replaying
from perpcarry.config.loader import load_config
from perpcarry.paper import open_paper_venue
from perpcarry.venues.orders import OrderRequest, Side, Wallet
from perpcarry.venues.protocol import VenueContext

WALLETS = {"binance": ["spot", "futures", "funding"], "bybit": ["unified", "funding"],
           "okx": ["unified", "funding"]}


pytestmark = pytest.mark.usefixtures("data_dir")


def _binance_carry(tmp_path) -> dict:
    """Buy 0.05 BTC spot, move margin, short 0.05 BTC perp on Binance's paper account."""

    async def run():
        config = load_config(None)
        with replaying(config.registry.venues["binance"].offline_snapshot):
            venue = open_paper_venue(config, "binance", VenueContext(
                cache_dir=tmp_path / "cache", offline=True))
            try:
                markets = await venue.view.markets()
                quantity = Decimal("0.05")
                await venue.place_order(OrderRequest(markets["BTC/USDT"], Side.BUY, quantity,
                                                     "pcCLI1s00000"))
                await venue.transfer("USDT", Decimal(3000), Wallet.SPOT, Wallet.FUTURES)
                await venue.setup_account(markets["BTC/USDT:USDT"], Decimal(3))
                await venue.place_order(OrderRequest(markets["BTC/USDT:USDT"], Side.SELL,
                                                     quantity, "pcCLI1p00000"))
                [position] = await venue.fetch_positions()
                return {"position": position, "balances": await venue.fetch_balances()}
            finally:
                await venue.close()

    return asyncio.run(run())


def test_fresh_clone_shows_the_three_venues_paper_wallets(run_cli):
    result = run_cli("account", "--paper", "--offline")
    assert result.exit_code == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    seen = {tuple(cell.strip() for cell in row.strip("│").split("│")[:3]) for row in rows}
    for venue, wallets in WALLETS.items():
        for wallet in wallets:
            assert any(v == venue and w == wallet for v, w, _ in seen), (venue, wallet)
    # Starting balances: 100000 USDT in Binance's spot wallet, in the unified ones elsewhere.
    assert ("binance", "spot", "USDT") in seen and ("binance", "futures", "(empty)") in seen
    assert ("bybit", "unified", "USDT") in seen and ("okx", "unified", "USDT") in seen
    assert "no open perp positions" in result.stdout


def test_account_json_lists_wallets_and_starting_balances(run_cli):
    result = run_cli("account", "--paper", "--offline", "--json")
    payload = json.loads(result.stdout)
    assert payload["paper"] and payload["offline"] and payload["failures"] == {}
    by_venue = {v["venue"]: v for v in payload["venues"]}
    assert {v: by_venue[v]["wallets"] for v in WALLETS} == WALLETS
    assert by_venue["binance"]["balances"] == [
        {"wallet": "spot", "currency": "USDT", "free": "100000", "used": "0",
         "total": "100000"}]


def test_starting_balances_from_config(run_cli, write_config):
    path = write_config("[paper]\nbalances = { USDT = 2500 }\n"
                        "[paper.venues.okx]\nbalances = { USDC = 10, USDT = 7 }\n")
    payload = json.loads(run_cli("--config", str(path), "account", "--paper", "--offline",
                                 "--json").stdout)
    totals = {(v["venue"], b["currency"]): b["total"] for v in payload["venues"]
              for b in v["balances"]}
    assert totals == {("binance", "USDT"): "2500", ("bybit", "USDT"): "2500",
                      ("okx", "USDC"): "10", ("okx", "USDT"): "7"}


@pytest.mark.parametrize(("toml", "message"), [
    ("[paper]\nbalances = { usdt = 5 }\n", "paper.balances: currency 'usdt'"),
    ("[paper]\nbalances = { USDT = -5 }\n", "paper.balances: USDT: a starting balance"),
    ("[paper.venues.kraken]\nbalances = { USDT = 5 }\n", "paper.venues.kraken: unknown venue"),
])
def test_bad_paper_config_is_one_line_exit_2(run_cli, write_config, toml, message):
    result = run_cli("--config", str(write_config(toml)), "account", "--paper", "--offline")
    assert result.exit_code == 2 and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_positions_show_margin_ratio_and_liquidation_untruncated(run_cli, tmp_path,
                                                                 monkeypatch):
    carry = _binance_carry(tmp_path)
    position = carry["position"]
    monkeypatch.setenv("COLUMNS", "80")
    result = run_cli("account", "--paper", "--offline", "--venues", "binance")
    assert result.exit_code == 0, result.stderr
    assert "…" not in result.stdout
    row = next(line for line in result.stdout.splitlines() if "BTC/USDT:USDT" in line)
    cells = [cell.strip() for cell in row.strip("│").split("│")]
    assert cells[:4] == ["binance", "BTC/USDT:USDT", "short", "0.05"]
    liq = position.liquidation_price.quantize(Decimal("1e-8")).normalize()
    assert cells[8] == format(liq, "f")
    assert cells[7] == f"{float(position.margin_ratio) * 100:.2f}%"
    assert cells[9] == f"{float(position.liquidation_distance) * 100:.2f}%"
    payload = json.loads(run_cli("account", "--paper", "--offline", "--venues", "binance",
                                 "--json").stdout)
    [as_json] = payload["venues"][0]["positions"]
    assert as_json["liquidation_price"] == str(position.liquidation_price)
    assert as_json["side"] == "short" and as_json["leverage"] == "3"


def test_orders_lists_client_ids_and_fills(run_cli, tmp_path):
    _binance_carry(tmp_path)
    payload = json.loads(run_cli("orders", "--paper", "--offline", "--venues", "binance",
                                 "--json").stdout)
    orders = {o["client_order_id"]: o for o in payload["orders"]}
    assert set(orders) == {"pcCLI1s00000", "pcCLI1p00000"}
    spot, perp = orders["pcCLI1s00000"], orders["pcCLI1p00000"]
    assert (spot["status"], spot["filled_quantity"], spot["price_source"]) == (
        "filled", "0.05", "perp mark+2bps")
    assert [(Decimal(f["amount"]), f["currency"]) for f in spot["fees"]] == [
        (Decimal("0.05") * Decimal("0.001"), "BTC")]
    assert perp["fees"][0]["currency"] == "USDT" and perp["price_source"] == "mark-2bps"
    table = run_cli("orders", "--paper", "--offline", "--venues", "binance").stdout
    assert "pcCLI1s00000" in table and "0.00005 BTC" in table and "mark-2bps" in table


def test_orders_of_named_assets_only(run_cli, tmp_path):
    _binance_carry(tmp_path)
    payload = json.loads(run_cli("orders", "--paper", "--offline", "--venues", "binance",
                                 "--symbols", "ETH", "--json").stdout)
    assert payload["orders"] == []


def test_live_account_without_credentials_names_the_env_vars(run_cli):
    result = run_cli("account", "--venues", "binance")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: binance: no API credentials: set PERPCARRY_VENUES__BINANCE__API_KEY and "
        "PERPCARRY_VENUES__BINANCE__SECRET (or api_key, secret under [venues.binance]), or "
        "use --paper\n")


def test_live_account_of_a_venue_without_an_order_half_is_refused(run_cli, monkeypatch):
    """A third-party plugin that ships only the market-data half: its live account is
    refused in one line, with no credential in it."""
    from test_plugins import _fake_plugin

    from perpcarry.config.settings import VenueConfig
    from perpcarry.venues.protocol import VenueCapabilities, VenueSpec

    class MarketDataOnly:
        venue_id = "mdonly"

        async def close(self) -> None:
            return None

    def register_venues(register):
        register(VenueSpec("mdonly", "Market data only", VenueConfig,
                           VenueCapabilities(True, True, True, False, False, (8,)),
                           factory=lambda config, context: MarketDataOnly()))

    _fake_plugin(monkeypatch, "mdonly_plugin", register_venues=register_venues)
    monkeypatch.setenv("PERPCARRY_VENUES__MDONLY__ENABLED", "true")
    monkeypatch.setenv("PERPCARRY_VENUES__MDONLY__API_KEY", "key-123")
    monkeypatch.setenv("PERPCARRY_VENUES__MDONLY__SECRET", "secret-456")
    result = run_cli("account", "--venues", "mdonly")
    assert result.exit_code == 2
    assert "mdonly: the mdonly_plugin plugin does not implement the order half (OrderVenue)" \
        in result.stderr
    assert "key-123" not in result.stderr and "secret-456" not in result.stderr


def test_offline_needs_paper(run_cli):
    result = run_cli("account", "--offline")
    assert (result.exit_code, result.stderr) == (
        2, "error: --offline: a live account cannot be replayed; add --paper\n")


def test_paper_reset_restores_the_starting_balances(run_cli, tmp_path, data_dir):
    _binance_carry(tmp_path)
    result = run_cli("paper", "reset", "--venues", "binance", "--yes")
    assert result.exit_code == 0
    assert re.fullmatch(r"binance: paper account reset to USDT 100000 in the spot wallet "
                        r"\(.*binance\.sqlite\)\n", result.stdout)
    payload = json.loads(run_cli("account", "--paper", "--offline", "--venues", "binance",
                                 "--json").stdout)
    venue = payload["venues"][0]
    assert venue["positions"] == [] and [b["total"] for b in venue["balances"]] == ["100000"]
    assert json.loads(run_cli("orders", "--paper", "--offline", "--venues", "binance",
                              "--symbols", "BTC", "--json").stdout)["orders"] == []


@pytest.mark.parametrize("answer", ["", "n\n"])
def test_paper_reset_asks_first(run_cli, tmp_path, data_dir, monkeypatch, answer):
    _binance_carry(tmp_path)
    state = data_dir / "paper" / "binance.sqlite"
    before = state.stat().st_mtime_ns
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    result = run_cli("paper", "reset", "--venues", "binance")
    assert result.exit_code == 130 and result.stderr == "aborted\n"
    assert state.stat().st_mtime_ns == before
    orders = json.loads(run_cli("orders", "--paper", "--offline", "--venues", "binance",
                                "--json").stdout)["orders"]
    assert len(orders) == 2


def test_a_corrupt_paper_account_is_one_line(run_cli, data_dir):
    state = data_dir / "paper" / "bybit.sqlite"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"garbage" * 1000)
    result = run_cli("account", "--paper", "--offline", "--venues", "bybit")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: paper account {state}: file is not a database")
    assert "perpcarry paper reset --venues bybit" in result.stderr
