"""Builds the websocket pushes the local test server replays (``tests/ws_server.py``).

Run from the repository root: ``python tests/ws_captures/build.py``. Every value comes from
a real capture or a real recorded REST response; where a push had to be rebuilt around REST
values (no websocket capture of that channel exists), PROVENANCE.md says so. Output: one
JSON file per venue, ``{stream key: [push, ...]}``, pushes as the venue sends them; a key
is the subscription argument, prefixed with the market its host serves for Binance and
Bybit (``perp:btcusdt@markPrice@1s``), ``channel:instId`` for OKX.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "raw-responses"
CAPTURES = SHARED / "multivenue-ws-BTC_2025-10-27_eduDorus-arkin"
OKX_FUNDING_PUSH = (SHARED / "okx" / "ws-funding-rate-channel_BTC-USDT-SWAP_2025-10-27_"
                    "eduDorus-arkin_okx_perpetual_funding_rate.json")
OUT = Path(__file__).resolve().parent


def _recorded(path: Path, uri_part: str):
    for interaction in json.loads(path.read_text())["interactions"]:
        if uri_part in interaction["request"]["uri"]:
            return json.loads(interaction["response"]["body"]["string"])
    raise SystemExit(f"{path}: no recorded {uri_part}")


def binance() -> dict:
    snapshot = ROOT / "plugins" / "binance" / "snapshot" / "snapshot.json"
    premium = {r["symbol"]: r for r in _recorded(snapshot, "/fapi/v1/premiumIndex")}
    btc = premium["BTCUSDT"]
    # markPriceUpdate rebuilt from the premiumIndex row (the field names of the USDⓈ-M
    # "Mark Price Stream"); the row holds no indexPrice/estimatedSettlePrice, so neither
    # does the push.
    mark = {"e": "markPriceUpdate", "E": btc["time"], "s": "BTCUSDT", "p": btc["markPrice"],
            "r": btc["lastFundingRate"], "T": btc["nextFundingTime"]}
    ticker = json.loads((CAPTURES / "binance_spot_ticker_realtime.json").read_text())
    # bookTicker rebuilt from the captured 24hrTicker's best bid/ask and sizes.
    book = {"u": ticker["L"], "s": ticker["s"], "b": ticker["b"], "B": ticker["B"],
            "a": ticker["a"], "A": ticker["A"]}
    return {"perp:btcusdt@markPrice@1s": [mark], "spot:btcusdt@bookTicker": [book]}


def bybit() -> dict:
    cassette = ROOT / "cassettes" / "bybit" / "tickers_linear_btcusdt_ccxt_static.json"
    response = _recorded(cassette, "/v5/market/tickers")
    row = response["result"]["list"][0]
    # A linear tickers snapshot push rebuilt around the real REST row (same field names).
    push = {"topic": "tickers.BTCUSDT", "type": "snapshot", "data": row, "cs": 1,
            "ts": int(response["time"])}
    return {"linear:tickers.BTCUSDT": [push]}


def okx() -> dict:
    funding = json.loads(OKX_FUNDING_PUSH.read_text())  # a real push, unchanged
    snapshot = ROOT / "plugins" / "okx" / "snapshot" / "snapshot.json"
    marks = {r["instId"]: r for r in _recorded(snapshot, "/public/mark-price")["data"]}
    btc = marks["BTC-USDT-SWAP"]
    # mark-price push rebuilt from the REST mark-price row (same fields).
    mark = {"arg": {"channel": "mark-price", "instId": "BTC-USDT-SWAP"}, "data": [btc]}
    ticker = json.loads((CAPTURES / "okx_spot_ticker_realtime.json").read_text())["data"][0]
    # bbo-tbt push rebuilt from the captured tickers push's best bid/ask and sizes.
    bbo = {"arg": {"channel": "bbo-tbt", "instId": "BTC-USDT"},
           "data": [{"asks": [[ticker["askPx"], ticker["askSz"], "0", "1"]],
                     "bids": [[ticker["bidPx"], ticker["bidSz"], "0", "1"]],
                     "ts": ticker["ts"], "seqId": 1}]}
    return {"funding-rate:BTC-USDT-SWAP": [funding], "mark-price:BTC-USDT-SWAP": [mark],
            "bbo-tbt:BTC-USDT": [bbo]}


if __name__ == "__main__":
    for name, build in (("binance", binance), ("bybit", bybit), ("okx", okx)):
        (OUT / f"{name}.json").write_text(json.dumps(build(), indent=1) + "\n")
        print(f"wrote {OUT / name}.json")
