"""Build Bybit's offline snapshot and test cassettes from the real data in ../shared/data.

Not run by CI. It documents provenance and makes the recorded queries exactly what the
plugin sends: a small local HTTP server answers the v5 endpoints from the real files, the
plugin runs against it (``VenueContext(base_url=...)``) while vcrpy records, and the
recorded URIs are rewritten to ``https://api.bybit.com/...``. See PROVENANCE.md.

    python cassettes/bybit/build_snapshot.py          # from the repo root
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import polars as pl

from perpcarry.ccxt.replay import cassette_vcr
from perpcarry.config.settings import VenueConfig
from perpcarry.venues.protocol import VenueContext, carry_pairs

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
HERE = Path(__file__).resolve().parent
SNAPSHOT = REPO / "plugins" / "bybit" / "snapshot" / "snapshot.json"

# The test cassettes' instant: the 8h/4h settlement nearest the instruments-info dump
# (haroon commit 2026-02-07). Every perp kept has a settled rate at T in the real history.
T = datetime(2026, 2, 7, tzinfo=UTC)
T_MS = int(T.timestamp() * 1000)
# The offline snapshot's instant S: the latest settlement before the dump at which Bybit
# and OKX (at S - 1h, cassettes/okx) each have a carry pair with a real price and a
# positive 30-day net APR, and at least 15 of Bybit's 21 pairs expect positive funding. At
# T every priced Bybit pair (BTC ETH SOL DOGE) was below its fees; from 2026-01-20 16:00
# to the end of the price data (2026-03-05) no instant meets this (PROVENANCE.md).
S = datetime(2026, 1, 20, 8, tzinfo=UTC)
S_MS = int(S.timestamp() * 1000)
HOST = "api.bybit.com"

# Test windows (tests/test_bybit.py uses the same constants).
HISTORY_WINDOWS = [
    ("INJ/USDT:USDT", datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC)),
    ("ORDI/USDT:USDT", datetime(2025, 12, 1, tzinfo=UTC), T),
    ("BTC/USDT:USDT", T - timedelta(days=90), T - timedelta(days=30)),
    ("BTC/USDT:USDT", T - timedelta(days=60), T),
]
KNX_COINS = ("BTC", "ETH", "SOL", "DOGE", "HYPE")


def decimal_text(x: float) -> str:
    """Bybit writes rates as plain decimals ("0.00001", "-0.00013754")."""
    return format(Decimal(repr(float(x))), "f")


def envelope(category: str, rows: list[Any], time_ms: int, cursor: bool = False) -> dict:
    result: dict[str, Any] = {"category": category, "list": rows}
    if cursor:
        result["nextPageCursor"] = ""
    return {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": time_ms}


# -- real data ----------------------------------------------------------------------


def load_instruments() -> dict[str, dict]:
    """haroon 2026-02-07 instruments-info (linear), re-keyed by symbol in the source."""
    return json.loads((SHARED / "data/haroon-bybit/exchange_info.json").read_text())


def load_spot_instruments() -> list[dict]:
    """The 7 real spot instrument objects ccxt's static markets keep under ``info``."""
    markets = json.loads((SHARED / "fixtures/ccxt-markets/bybit.json").read_text())
    return [m["info"] for m in markets.values() if m.get("spot")]


def load_spot_list() -> dict[str, dict]:
    """The full real spot instruments list of 2024-08-20 (583 objects), by symbol. The file
    is TypeScript: ``export const bybitInstrus = `` and then the bare ``result.list``."""
    text = (SHARED / "data/raw-responses/bybit/"
            "v5-market-instruments-info_spot-full-583_2024-08-20_tonnidiaz-test_bybit-instrus.ts"
            ).read_text()
    return {row["symbol"]: row for row in json.loads(text[text.index("["):])}


def load_history() -> dict[str, list[tuple[int, str]]]:
    """Settled rates per venue symbol: zushen (rate_raw) plus knx for HYPEUSDT."""
    history: dict[str, list[tuple[int, str]]] = {}
    zushen = pl.read_parquet(SHARED / "data/zushen-funding/venue=bybit/data.parquet")
    for symbol, ts, rate in zushen.select("venue_symbol", "settlement_ts", "rate_raw").iter_rows():
        history.setdefault(symbol, []).append((int(ts.timestamp() * 1000), decimal_text(rate)))
    knx = pl.read_parquet(SHARED / "data/knx-multivenue/funding_rates.parquet").filter(
        (pl.col("venue") == "bybit") & (pl.col("coin") == "HYPE"))
    for ts, rate in knx.select("timestamp", "funding_rate").iter_rows():
        history.setdefault("HYPEUSDT", []).append((int(ts.timestamp() * 1000), decimal_text(rate)))
    return history


def load_prices_at(moment: datetime) -> dict[str, str]:
    """Bybit linear perp price at ``moment``: close of the knx 1h candle that opens an hour
    before (knx stamps a candle with its open time)."""
    candles = pl.read_parquet(SHARED / "data/knx-multivenue/candles.parquet").filter(
        (pl.col("venue") == "bybit") & (pl.col("timestamp") == moment - timedelta(hours=1)))
    return {f"{coin}USDT": decimal_text(close)
            for coin, close in candles.select("coin", "c").iter_rows() if coin in KNX_COINS}


def tickers_at(moment: datetime, instruments: dict[str, dict],
               history: dict[str, list[tuple[int, str]]], prices: dict[str, str]) -> list[dict]:
    """The linear tickers at ``moment`` (a settlement), rebuilt: fundingRate = the rate
    settled at ``moment``, nextFundingTime = ``moment`` + the instrument's fundingInterval,
    lastPrice/markPrice only where a real perp price exists (knx candles). Other ticker
    fields are left out."""
    moment_ms = int(moment.timestamp() * 1000)
    rows = []
    for symbol in sorted(history):
        rate = dict(history[symbol]).get(moment_ms)
        if symbol not in instruments or rate is None:
            continue
        interval_ms = int(instruments[symbol]["fundingInterval"]) * 60_000
        row = {"symbol": symbol}
        if symbol in prices:
            row["lastPrice"] = prices[symbol]
            row["markPrice"] = prices[symbol]
        row["fundingRate"] = rate
        row["nextFundingTime"] = str(moment_ms + interval_ms)
        rows.append(row)
    return rows


def check_intervals(symbols: list[str], instruments: dict[str, dict],
                    history: dict[str, list[tuple[int, str]]]) -> None:
    """The instruments' fundingInterval (2026-02-07) must be the spacing of every symbol's
    real settlements over the snapshot's 30-day history window, or S is not coherent."""
    for symbol in symbols:
        times = sorted(t for t, _ in history[symbol] if S_MS - 30 * 86_400_000 <= t <= S_MS)
        gaps = {b - a for a, b in pairwise(times)}
        assert gaps == {int(instruments[symbol]["fundingInterval"]) * 60_000}, (symbol, gaps)


# -- local server -------------------------------------------------------------------


class Responses:
    def __init__(self, spot: list[dict], linear: list[dict], tickers: list[dict],
                 history: dict[str, list[tuple[int, str]]], time_ms: int = T_MS) -> None:
        self.spot, self.linear, self.tickers, self.history = spot, linear, tickers, history
        self.time_ms = time_ms

    def answer(self, path: str, query: dict[str, str]) -> dict:
        if path == "/v5/market/instruments-info":
            if query.get("category") == "spot":
                return envelope("spot", self.spot, self.time_ms)
            if query.get("status") == "PreLaunch":
                return envelope("linear", [], self.time_ms, cursor=True)
            return envelope("linear", self.linear, self.time_ms, cursor=True)
        if path == "/v5/market/tickers" and query.get("category") == "linear":
            return envelope("linear", self.tickers, self.time_ms)
        if path == "/v5/market/funding/history":
            symbol = query["symbol"]
            start, end = int(query["startTime"]), int(query["endTime"])
            rows = sorted((r for r in self.history.get(symbol, []) if start <= r[0] <= end),
                          reverse=True)[: int(query.get("limit", 200))]
            return envelope("linear", [
                {"symbol": symbol, "fundingRate": rate, "fundingRateTimestamp": str(ts)}
                for ts, rate in rows], end)
        raise KeyError(path)


def serve(responses: Responses) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            url = urlsplit(self.path)
            path = url.path.removeprefix(f"/{HOST}")
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            body = json.dumps(responses.answer(path, query), separators=(",", ":")).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def clean_cassette(path: Path, base_url: str) -> None:
    """Real host in every URI; no request headers; only Content-Type in responses."""
    cassette = json.loads(path.read_text())
    for item in cassette["interactions"]:
        item["request"]["uri"] = item["request"]["uri"].replace(f"{base_url}/{HOST}", f"https://{HOST}")
        item["request"]["headers"] = {}
        response = item["response"]
        response["headers"] = {"Content-Type": ["application/json; charset=utf-8"]}
        if "url" in response:
            response["url"] = response["url"].replace(f"{base_url}/{HOST}", f"https://{HOST}")
    path.write_text(json.dumps(cassette, indent=1) + "\n")


async def _noop_sleep(_: float) -> None:
    return None


def client(base_url: str, cache_dir: Path, offline: bool):
    from perpcarry_bybit.venue import BybitVenue

    return BybitVenue(VenueConfig(), VenueContext(cache_dir=cache_dir, offline=offline,
                                                  sleep=_noop_sleep, base_url=base_url))


async def record(path: Path, base_url: str, scenario, offline: bool = True) -> None:
    """Record ``scenario``; ``offline=False`` keeps the SQLite history cache on, as the
    history-paging test does (an offline client caches no history)."""
    path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp, \
            cassette_vcr(record_mode="all").use_cassette(str(path)):
        venue = client(base_url, Path(tmp), offline)
        try:
            await scenario(venue)
        finally:
            await venue.close()
    clean_cassette(path, base_url)


async def snapshot_session(venue) -> None:
    markets = await venue.load_markets()
    snapshot = await venue.fetch_funding_snapshot()
    for pair in carry_pairs(markets):
        if pair.perp.symbol in snapshot.quotes:
            # As the scan asks: 30 days up to the symbol's last settlement.
            until = snapshot.quotes[pair.perp.symbol].last_settlement
            await venue.fetch_funding_history(pair.perp.symbol, until - timedelta(days=30),
                                              until)


async def history_session(venue) -> None:
    await venue.load_markets()
    for symbol, start, end in HISTORY_WINDOWS:
        await venue.fetch_funding_history(symbol, start, end)


def error_cassettes(tickers: list[dict], history: dict[str, list[tuple[int, str]]]) -> None:
    """Hand-written error cassettes for GET /v5/market/tickers?category=linear."""
    uri = f"https://{HOST}/v5/market/tickers?category=linear"

    def write(name: str, code: int, message: str, headers: dict[str, list[str]], body: str):
        cassette = {"interactions": [{
            "request": {"body": None, "headers": {}, "method": "GET", "uri": uri},
            "response": {"status": {"code": code, "message": message}, "headers": headers,
                         "body": {"string": body}, "url": uri},
        }], "version": 1}
        (HERE / name).write_text(json.dumps(cassette, indent=1) + "\n")

    json_type = {"Content-Type": ["application/json; charset=utf-8"]}
    # Real 10006 body (donewiththedollar/directionalscalper issue #57, 2023-09-05).
    limited = ('{"retCode":10006,"retMsg":"Too many visits","result":{},"retExtInfo":{},'
               '"time":1693924869139}')
    write("error_rate_limit.json", 429, "Too Many Requests",
          {**json_type, "Retry-After": ["7"]}, limited)
    write("error_rate_limit_10006.json", 200, "OK",
          {**json_type, "X-Bapi-Limit-Reset-Timestamp": ["1693924870000"]}, limited)
    write("error_maintenance.json", 503, "Service Unavailable",
          {"Content-Type": ["text/html"]}, "")
    write("error_system_10016.json", 200, "OK", json_type,
          '{"retCode":10016,"retMsg":"System error. Please try again later.","result":{},'
          '"retExtInfo":{},"time":' + str(T_MS) + "}")
    full = json.dumps(envelope("linear", tickers, T_MS), separators=(",", ":"))
    write("error_truncated.json", 200, "OK", json_type, full[: len(full) // 2])

    broken = json.loads(json.dumps(tickers))
    by_symbol = {row["symbol"]: row for row in broken}
    del by_symbol["ETHUSDT"]["fundingRate"]                 # missing rate
    by_symbol["SOLUSDT"]["nextFundingTime"] = None           # null next funding time
    by_symbol["XRPUSDT"]["fundingRate"] = ""                 # empty string
    by_symbol["DOGEUSDT"]["markPrice"] = "abc"               # present but not a number
    # INJUSDT's real 2026-02-19 19:00 settlement (-0.005117) on BTCUSDT, floor -0.005.
    by_symbol["BTCUSDT"]["fundingRate"] = "-0.005117"
    # A real Bybit perp listed after the 2026-02-07 instruments dump, so unknown to the
    # markets: its first real settlement (zushen) and the next 8h one.
    aapl_ms, aapl_rate = min(history["AAPLUSDT"])
    broken.append({"symbol": "AAPLUSDT", "fundingRate": aapl_rate,
                   "nextFundingTime": str(aapl_ms + 8 * 3_600_000)})
    write("error_missing_fields.json", 200, "OK", json_type,
          json.dumps(envelope("linear", broken, T_MS), separators=(",", ":")))


def static_ticker_cassette() -> None:
    """The real single-symbol linear ticker from ccxt's static tests (fetchTicker)."""
    static = json.loads((SHARED / "fixtures/ccxt-static/bybit.json").read_text())
    body = static["response"]["methods"]["fetchTicker"][0]["httpResponse"]
    uri = f"https://{HOST}/v5/market/tickers?category=linear"
    cassette = {"interactions": [{
        "request": {"body": None, "headers": {}, "method": "GET", "uri": uri},
        "response": {"status": {"code": 200, "message": "OK"},
                     "headers": {"Content-Type": ["application/json; charset=utf-8"]},
                     "body": {"string": json.dumps(body, separators=(",", ":"))}, "url": uri},
    }], "version": 1}
    (HERE / "tickers_linear_btcusdt_ccxt_static.json").write_text(
        json.dumps(cassette, indent=1) + "\n")


async def main() -> None:
    instruments = load_instruments()
    history = load_history()
    tickers = tickers_at(T, instruments, history, load_prices_at(T))
    kept = {row["symbol"] for row in tickers}
    spot = load_spot_instruments()
    # Test cassettes: only perps with a rate at T (the rest cannot be quoted).
    lean = Responses(spot, [instruments[s] for s in sorted(kept)], tickers, history)
    full = Responses(spot, [instruments[s] for s in sorted(instruments)], tickers, history)
    # Offline snapshot at S: the perps with a rate at S, and the spot objects of the
    # 2024-08 list for those of them it lists (a carry pair needs both legs).
    snapshot_tickers = tickers_at(S, instruments, history, load_prices_at(S))
    quoted = sorted(row["symbol"] for row in snapshot_tickers)
    check_intervals(quoted, instruments, history)
    spot_list = load_spot_list()
    snapshot = Responses([spot_list[s] for s in quoted if s in spot_list],
                         [instruments[s] for s in quoted], snapshot_tickers, history, S_MS)
    for responses, scenario, path, offline in (
        (snapshot, snapshot_session, SNAPSHOT, True),
        (lean, history_session, HERE / "history_paging.json", False),
        (full, lambda venue: venue.load_markets(), HERE / "markets_full.json", True),
    ):
        server = serve(responses)
        base_url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            await record(path, base_url, scenario, offline)
        finally:
            server.shutdown()
    error_cassettes(tickers, history)
    static_ticker_cassette()
    priced = [row["symbol"] for row in snapshot_tickers if "markPrice" in row]
    print(f"snapshot S={S.isoformat()}: {len(quoted)} perps with a rate at S, "
          f"{len(snapshot.spot)} with a 2024-08 spot instrument, priced: {', '.join(priced)}")


if __name__ == "__main__":
    asyncio.run(main())
