"""Rebuild the example plugin's offline snapshot and error cassettes from real data.

Not run by the tests; it documents provenance (see PROVENANCE.md). A small local HTTP server
answers Hyperliquid's ``POST /info`` queries from the real files under ``../shared`` (next to
the repository, or ``$PERPCARRY_SHARED``); the plugin's own client runs the offline sequence
against it while vcrpy records, and the recorded URIs are rewritten to the real host.

    python tests/example_plugin/cassettes/build_snapshot.py
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sys
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
PLUGIN = HERE.parent
REPO = PLUGIN.parents[1]
SHARED = Path(os.environ.get("PERPCARRY_SHARED", REPO.parent / "shared"))
SNAPSHOT = PLUGIN / "perpcarry_example_hyperliquid" / "snapshot" / "snapshot.json"
KNX = SHARED / "data" / "knx-multivenue"

# The instant: a settlement with 30 days of hourly history behind it and the latest hour the
# knx Hyperliquid candles cover for all four coins (they end 2025-04-17/18).
T = datetime(2025, 4, 17, 12, tzinfo=UTC)
COINS = ("BTC", "ETH", "SOL", "DOGE")

# Perp universe entries exactly as Hyperliquid served them in hyperliquid-dex/
# hyperliquid-python-sdk tests/cassettes/info_test/test_get_info.yaml ({"type": "meta"},
# Date 2023-07-17; commit 5cd90193cbf683a88dc0ff7b0d26b3b5f5a0eaf8). Kept: the four coins
# with funding in knx; real positions there were BTC 0, ETH 1, SOL 5, DOGE 12.
PERP_UNIVERSE = [
    {"maxLeverage": 50, "name": "BTC", "szDecimals": 5},
    {"maxLeverage": 50, "name": "ETH", "szDecimals": 4},
    {"maxLeverage": 50, "name": "SOL", "szDecimals": 2},
    {"maxLeverage": 50, "name": "DOGE", "szDecimals": 0},
]
# Spot tokens and pairs exactly as served in the same repo's
# tests/cassettes/info_test/test_spot_asset_ctx.yaml ({"type": "spotMetaAndAssetCtxs"},
# commit d058efabc6605f46ffe2360f2775b3885e9cea59): USDC (token 0), UBTC (197), UETH (221);
# pairs @142 = UBTC/USDC, @151 = UETH/USDC. Only list positions are renumbered (see below).
SPOT_TOKENS = [
    {"name": "USDC", "szDecimals": 8, "weiDecimals": 8, "index": 0,
     "tokenId": "0x6d1e7cde53ba9467b783cb7c530ce054", "isCanonical": True,
     "evmContract": None, "fullName": None, "deployerTradingFeeShare": "0.0"},
    {"name": "UBTC", "szDecimals": 5, "weiDecimals": 10, "index": 197,
     "tokenId": "0x8f254b963e8468305d409b33aa137c67", "isCanonical": False,
     "evmContract": {"address": "0x9fdbda0a5e284c32744d2f17ee5c74b284993463",
                     "evm_extra_wei_decimals": -2},
     "fullName": "Unit Bitcoin", "deployerTradingFeeShare": "1.0"},
    {"name": "UETH", "szDecimals": 4, "weiDecimals": 9, "index": 221,
     "tokenId": "0xe1edd30daaf5caac3fe63569e24748da", "isCanonical": False,
     "evmContract": {"address": "0xbe6727b535545c67d5caa73dea54865b92cf7907",
                     "evm_extra_wei_decimals": 9},
     "fullName": "Unit Ethereum", "deployerTradingFeeShare": "1.0"},
]
# ccxt reads "tokens" and "index" as positions in the (here trimmed) lists.
SPOT_UNIVERSE = [
    {"tokens": [1, 0], "name": "@142", "index": 0, "isCanonical": False},
    {"tokens": [2, 0], "name": "@151", "index": 1, "isCanonical": False},
]


def _text(value: float) -> str:
    return format(Decimal(repr(value)).normalize(), "f")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def load_data() -> tuple[pl.DataFrame, dict[str, str]]:
    funding = (pl.read_parquet(KNX / "funding_rates.parquet")
               .filter(pl.col("venue") == "hyperliquid", pl.col("coin").is_in(COINS)))
    candles = (pl.read_parquet(KNX / "candles.parquet")
               .filter(pl.col("venue") == "hyperliquid",
                       pl.col("timestamp") == T - timedelta(hours=1)))
    # markPx stand-in: close of the 1h perp candle that ends at T (a traded price).
    closes = {row["coin"]: _text(row["c"]) for row in candles.iter_rows(named=True)}
    assert set(closes) >= set(COINS), closes
    return funding, closes


def answer(body: dict, funding: pl.DataFrame, closes: dict[str, str]):
    kind = body.get("type")
    at_t = funding.filter(pl.col("timestamp") == T)
    if kind == "metaAndAssetCtxs":
        rates = {r["coin"]: _text(r["funding_rate"]) for r in at_t.iter_rows(named=True)}
        # funding = the real rate settled at T; markPx = the candle close at T.
        contexts = [{"funding": rates[m["name"]], "markPx": closes[m["name"]]}
                    for m in PERP_UNIVERSE]
        return [{"universe": PERP_UNIVERSE}, contexts]
    if kind == "spotMetaAndAssetCtxs":
        # midPx stand-in (ccxt derives the price tick from it): the perp close at T.
        contexts = [{"coin": "@142", "midPx": closes["BTC"]},
                    {"coin": "@151", "midPx": closes["ETH"]}]
        return [{"universe": SPOT_UNIVERSE, "tokens": SPOT_TOKENS}, contexts]
    if kind == "fundingHistory":
        start = datetime.fromtimestamp(body["startTime"] / 1000, UTC)
        end = datetime.fromtimestamp(body["endTime"] / 1000, UTC)
        rows = (funding.filter(pl.col("coin") == body["coin"],
                               pl.col("timestamp").is_between(start, end))
                .sort("timestamp").head(500))
        return [{"coin": r["coin"], "fundingRate": _text(r["funding_rate"]),
                 "time": _ms(r["timestamp"])} for r in rows.iter_rows(named=True)]
    raise ValueError(f"no real data for {body}")


def serve(funding: pl.DataFrame, closes: dict[str, str]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            payload = json.dumps(answer(body, funding, closes), separators=(",", ":")).encode()
            self.send_response_only(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Date", format_datetime(T, usegmt=True))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def record(base_url: str, cache_dir: Path) -> None:
    sys.path.insert(0, str(PLUGIN))
    from perpcarry_example_hyperliquid import HyperliquidConfig
    from perpcarry_example_hyperliquid.venue import HyperliquidVenue

    from perpcarry.ccxt.replay import cassette_vcr
    from perpcarry.venues.protocol import VenueContext, carry_pairs

    context = VenueContext(cache_dir=cache_dir, offline=True, base_url=base_url)
    client = HyperliquidVenue(HyperliquidConfig(enabled=True), context)
    try:
        with cassette_vcr(record_mode="all").use_cassette(str(SNAPSHOT)):
            markets = await client.load_markets()
            snapshot = await client.fetch_funding_snapshot()
            for pair in carry_pairs(markets):
                if pair.perp.symbol in snapshot.quotes:
                    # As the scan asks: 30 days up to the symbol's last settlement.
                    until = snapshot.quotes[pair.perp.symbol].last_settlement
                    await client.fetch_funding_history(
                        pair.perp.symbol, until - timedelta(days=30), until)
    finally:
        await client.close()


def rewrite(base_url: str) -> dict:
    cassette = json.loads(SNAPSHOT.read_text())
    for item in cassette["interactions"]:
        item["request"]["uri"] = item["request"]["uri"].replace(f"{base_url}/", "https://")
        item["response"]["headers"].pop("Server", None)  # the local server's, not the venue's
    SNAPSHOT.write_text(json.dumps(cassette, indent=1) + "\n")
    return cassette


def error_cassettes(cassette: dict) -> None:
    """The request fetch_funding_snapshot() makes, answered four ways."""
    # (the market load asked the same query first; the last one is the snapshot's)
    real = [i for i in cassette["interactions"]
            if json.loads(i["request"]["body"])["type"] == "metaAndAssetCtxs"][-1]

    def write(name: str, code: int, message: str, body: str, **headers: str) -> None:
        item = copy.deepcopy(real)
        item["response"]["status"] = {"code": code, "message": message}
        item["response"]["body"] = {"string": body}
        item["response"]["headers"]["Content-Length"] = [str(len(body.encode()))]
        for key, value in headers.items():
            item["response"]["headers"][key] = [value]
        (HERE / name).write_text(json.dumps({"interactions": [item], "version": 1}, indent=1)
                                 + "\n")

    body = real["response"]["body"]["string"]
    write("error_rate_limit.json", 429, "Too Many Requests", "", **{"Retry-After": "2"})
    write("error_maintenance.json", 503, "Service Unavailable", "")
    write("error_truncated.json", 200, "OK", body[: len(body) // 2])
    meta, contexts = json.loads(body)
    del contexts[0]["funding"]  # BTC: field missing
    contexts[1]["funding"] = None  # ETH: null
    contexts[2]["funding"] = ""  # SOL: empty string
    # An unknown coin: ATOM's universe entry from the same 2023 meta capture, no context.
    meta["universe"].append({"maxLeverage": 50, "name": "ATOM", "szDecimals": 2})
    contexts.append({})
    write("error_missing_fields.json", 200, "OK",
          json.dumps([meta, contexts], separators=(",", ":")))


def main() -> None:
    import tempfile

    funding, closes = load_data()
    server = serve(funding, closes)
    base_url = f"http://127.0.0.1:{server.server_port}"
    SNAPSHOT.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as cache_dir:
        asyncio.run(record(base_url, Path(cache_dir)))
    server.shutdown()
    error_cassettes(rewrite(base_url))
    print(f"wrote {SNAPSHOT} ({SNAPSHOT.stat().st_size:,} bytes) and 4 error cassettes")


if __name__ == "__main__":
    main()
