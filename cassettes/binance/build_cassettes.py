"""Build the Binance offline snapshot and test cassettes from real data in ../shared/data.

Not run by CI; it documents provenance (see PROVENANCE.md). A small local HTTP server
answers the Binance endpoints from the real files, the plugin talks to it through
``VenueContext(base_url=...)`` while vcrpy records, and the recorded URIs are rewritten to
the real ``https://host/...``. So every recorded query is exactly what the code sends.

    python cassettes/binance/build_cassettes.py      # from the repo root
"""

from __future__ import annotations

import asyncio
import glob
import itertools
import json
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
RAW = SHARED / "raw-responses" / "binance"
OUT = REPO / "cassettes" / "binance"
SNAPSHOT = REPO / "plugins" / "binance" / "snapshot" / "snapshot.json"

SPOT_INFO = RAW / (
    "api-v3-exchangeInfo_spot-full_2023-09-08_SM2A-Binance_API_exchangeInfoCompact.json")
FAPI_INFO = RAW / "fapi-v1-exchangeInfo_usdm-full_2025-08-22_eduDorus-arkin_binance_usdm.json"
FUNDING_INFO_2 = RAW / (
    "fapi-v1-fundingInfo_2-symbols_2026-09_khonghao0109_funding_binance_info.json")
SPOT_24HR = RAW / "api-v3-ticker-24hr_spot-all_2024-01-05_Reda-Agbalou-Talend-Project_24hr.json"
FAPI_24HR = RAW / "fapi-v1-ticker-24hr_usdm-all_2024-03-31_asruben2019-host_api_24hr.json"
BOOK_DOCS = RAW / "DOCS-EXAMPLE_api-v3-ticker-bookTicker_single_nautilus_book_ticker_response.json"
PREMIUM_FULL = SHARED / "danghung-binance" / "premiumIndex.json"
ADEE = SHARED / "adee-binance"
ZUSHEN = SHARED / "zushen-funding" / "venue=binance" / "data.parquet"

# The snapshot instant: the 2025-09-09 00:00 UTC settlement, the latest one the adee
# fundingRate dumps share (80 symbols settle exactly then).
T_MS = 1757376000000
HOUR_MS = 3_600_000
CARRY_QUOTES = ("USDT", "USDC")

Route = Callable[[dict[str, str]], tuple[int, dict[str, str], str]]


def load(path: Path):
    return json.loads(path.read_text())


def ok(payload) -> Route:
    body = json.dumps(payload, separators=(",", ":"))
    return lambda query: (200, {"Content-Type": "application/json"}, body)


# -- local server ----------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        route = self.server.routes.get(parts.path)
        status, headers, body = (404, {}, "no route") if route is None else route(query)
        data = body.encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class LocalBinance:
    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.routes = {}
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, routes: dict[str, Route]) -> None:
        self.server.routes = routes


def rewrite(path: Path, base_url: str) -> None:
    """Real hosts in the URIs, one interaction per request (retries of the same failing
    request collapse into one), only Content-Type/Retry-After response headers."""
    cassette = json.loads(path.read_text())
    seen, kept = set(), []
    for item in cassette["interactions"]:
        request, response = item["request"], item["response"]
        request["uri"] = request["uri"].replace(base_url + "/", "https://")
        if "url" in response:
            response["url"] = response["url"].replace(base_url + "/", "https://")
        response["headers"] = {k: v for k, v in response["headers"].items()
                               if k.lower() in ("content-type", "retry-after")}
        request["headers"] = {}
        key = (request["method"], request["uri"])
        if key not in seen:
            seen.add(key)
            kept.append(item)
    cassette["interactions"] = kept
    path.write_text(json.dumps(cassette, indent=1) + "\n")


async def record(path: Path, local: LocalBinance, routes: dict[str, Route], scenario,
                 markets_routes: dict[str, Route] | None = None, clock_ms: int | None = None):
    """Run ``scenario(venue)`` against ``routes`` while recording to ``path``. With
    ``markets_routes`` the markets load first, outside the recording."""
    from perpcarry.ccxt.replay import cassette_vcr
    from perpcarry.config.settings import VenueConfig
    from perpcarry.venues.protocol import VenueContext
    from perpcarry_binance.venue import BinanceVenue

    async def no_sleep(_seconds: float) -> None:
        return None

    clock = (lambda: datetime.fromtimestamp(clock_ms / 1000, UTC)) if clock_ms else None
    with tempfile.TemporaryDirectory() as cache:
        extra = {"clock": clock} if clock else {}
        context = VenueContext(cache_dir=Path(cache), offline=True, base_url=local.base_url,
                               sleep=no_sleep, **extra)
        venue = BinanceVenue(VenueConfig(enabled=True), context)
        try:
            if markets_routes is not None:
                local.serve(markets_routes)
                await venue.load_markets()
            local.serve(routes)
            path.unlink(missing_ok=True)
            with cassette_vcr(record_mode="all").use_cassette(str(path)):
                result = await scenario(venue)
        finally:
            await venue.close()
    rewrite(path, local.base_url)
    return result


# -- real data -------------------------------------------------------------------------


def adee_history() -> dict[str, list[dict]]:
    return {json.loads(Path(f).read_text())[0]["symbol"]: json.loads(Path(f).read_text())
            for f in sorted(glob.glob(str(ADEE / "data" / "*_funding.json")))}


def interval_hours(rows: list[dict]) -> int:
    gaps = {round((b["fundingTime"] - a["fundingTime"]) / HOUR_MS)
            for a, b in itertools.pairwise(rows)}
    assert len(gaps) == 1, gaps
    return gaps.pop()


def history_route(history: dict[str, list[dict]]) -> Route:
    """/fapi/v1/fundingRate as Binance answers it: records in [startTime, endTime],
    ascending, the oldest ``limit`` of them. Only real records come back."""

    def answer(query):
        rows = history.get(query["symbol"], [])
        start, end = int(query["startTime"]), int(query["endTime"])
        limit = int(query.get("limit", 100))
        page = [r for r in rows if start <= r["fundingTime"] <= end][:limit]
        return 200, {"Content-Type": "application/json"}, json.dumps(page, separators=(",", ":"))

    return answer


def premium_at_settlement(row: dict, hours: int, time_ms: int) -> dict:
    """A /fapi/v1/premiumIndex entry rebuilt around one real settlement: lastFundingRate and
    markPrice are the settled values; indexPrice/estimatedSettlePrice/interestRate are left
    out because they are not known."""
    settled = row["fundingTime"] - row["fundingTime"] % HOUR_MS
    return {"symbol": row["symbol"], "markPrice": row["markPrice"],
            "lastFundingRate": row["fundingRate"], "nextFundingTime": settled + hours * HOUR_MS,
            "time": time_ms}


def snapshot_data():
    history = adee_history()
    at_t = {s: next(r for r in rows if r["fundingTime"] - r["fundingTime"] % HOUR_MS == T_MS)
            for s, rows in history.items()
            if any(abs(r["fundingTime"] - T_MS) < 1000 for r in rows)}
    intervals = {s: interval_hours(history[s]) for s in at_t}
    time_ms = max(r["fundingTime"] for r in at_t.values())
    premium = [premium_at_settlement(at_t[s], intervals[s], time_ms) for s in sorted(at_t)]
    funding_info = [{"symbol": s, "fundingIntervalHours": h}
                    for s, h in sorted(intervals.items()) if h != 8]
    fapi = load(FAPI_INFO)
    fapi["symbols"] = [m for m in fapi["symbols"] if m["symbol"] in at_t]
    # Only spot symbols that can pair with one of these perps (same base, quoted in the
    # perp's settle currency) can matter.
    pairable = {(m["baseAsset"], m["marginAsset"]) for m in fapi["symbols"]}
    spot = load(SPOT_INFO)
    spot["symbols"] = [m for m in spot["symbols"]
                       if (m["baseAsset"], m["quoteAsset"]) in pairable]
    return history, premium, funding_info, fapi, spot, intervals


def markets_routes(fapi, spot) -> dict[str, Route]:
    return {"/api.binance.com/api/v3/exchangeInfo": ok(spot),
            "/fapi.binance.com/fapi/v1/exchangeInfo": ok(fapi)}


# -- builds ----------------------------------------------------------------------------


async def build_snapshot(local: LocalBinance):
    from perpcarry.venues.protocol import carry_pairs

    history, premium, funding_info, fapi, spot, _ = snapshot_data()
    routes = {**markets_routes(fapi, spot),
              "/fapi.binance.com/fapi/v1/premiumIndex": ok(premium),
              "/fapi.binance.com/fapi/v1/fundingInfo": ok(funding_info),
              "/fapi.binance.com/fapi/v1/fundingRate": history_route(history)}

    async def scenario(venue):
        markets = await venue.load_markets()
        snapshot = await venue.fetch_funding_snapshot()
        t = max(q.timestamp for q in snapshot.quotes.values())
        pairs = [p for p in carry_pairs(markets) if p.perp.symbol in snapshot.quotes]
        for pair in pairs:
            # As the scan asks: 30 days up to the symbol's last settlement.
            until = snapshot.quotes[pair.perp.symbol].last_settlement
            await venue.fetch_funding_history(pair.perp.symbol, until - timedelta(days=30),
                                              until)
        return len(snapshot.quotes), len(snapshot.skipped), len(pairs), t

    print("snapshot", await record(SNAPSHOT, local, routes, scenario))


def full_markets():
    fapi = load(FAPI_INFO)
    spot = load(SPOT_INFO)
    spot["symbols"] = [m for m in spot["symbols"]
                       if m["quoteAsset"] in CARRY_QUOTES and m["status"] == "TRADING"]
    return fapi, spot


def full_funding_info() -> list[dict]:
    """/fapi/v1/fundingInfo at 2025-06-17 08:38, rebuilt: the two real entries (BTC/ETH,
    2026-09) as they are, plus one entry per symbol whose real nextFundingTime is not on the
    8h grid, interval read from nextFundingTime vs time (09:00 → 1h, 10:00 → 2h,
    12:00 → 4h), without caps (not known)."""
    entries = load(FUNDING_INFO_2)
    known = {e["symbol"] for e in entries}
    for row in load(PREMIUM_FULL):
        next_ms, now_ms = row["nextFundingTime"], row["time"]
        if next_ms == 0 or row["symbol"] in known:
            continue
        hours_ahead = -(-(next_ms - now_ms) // HOUR_MS)
        hour_of_day = next_ms // HOUR_MS % 24
        interval = next(h for h in (1, 2, 4, 8) if hour_of_day % h == 0 and hours_ahead <= h)
        if interval != 8:
            entries.append({"symbol": row["symbol"], "fundingIntervalHours": interval})
    return entries


def zushen_history(symbol: str) -> list[dict]:
    """/fapi/v1/fundingRate records rebuilt from the zushen parquet (floats formatted back to
    Binance's 8-decimal strings; settlement_ts keeps Binance's ms jitter)."""
    import polars as pl

    frame = (pl.read_parquet(ZUSHEN).filter(pl.col("venue_symbol") == symbol)
             .sort("settlement_ts"))
    return [{"symbol": symbol, "fundingTime": int(ts.timestamp() * 1000),
             "fundingRate": f"{rate:.8f}", "markPrice": f"{mark:.8f}"}
            for ts, rate, mark
            in frame.select("settlement_ts", "rate_raw", "mark_price").iter_rows()]


def btc_csv_history() -> list[dict]:
    """/fapi/v1/fundingRate records rebuilt from adee's btc_funding_rate.csv."""
    import csv

    rows = []
    with (ADEE / "btc_funding_rate.csv").open() as handle:
        for line in csv.DictReader(handle):
            stamp = datetime.fromisoformat(f"{line['funding_date']}T{line['funding_time']}+00:00")
            rows.append({"symbol": "BTCUSDT", "fundingTime": int(stamp.timestamp() * 1000),
                         "fundingRate": f"{float(line['fundingRate']):.8f}",
                         "markPrice": f"{float(line['markPrice']):.8f}"})
    return rows


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


async def build_tests(local: LocalBinance):
    fapi, spot = full_markets()
    full = markets_routes(fapi, spot)

    async def load_markets(venue):
        return len(await venue.load_markets())

    print("markets_full", await record(OUT / "markets_full.json", local, full, load_markets))

    async def funding(venue):
        snap = await venue.fetch_funding_snapshot()
        return len(snap.quotes), len(snap.skipped)

    print("funding_full", await record(
        OUT / "funding_full_2025-06-17.json", local,
        {"/fapi.binance.com/fapi/v1/premiumIndex": ok(load(PREMIUM_FULL)),
         "/fapi.binance.com/fapi/v1/fundingInfo": ok(full_funding_info())},
        funding, markets_routes=full))

    async def books(kind):
        async def run(venue):
            snap = await venue.fetch_book_tops(kind)
            return len(snap.books), len(snap.skipped)
        return run

    from perpcarry.domain.types import MarketKind

    spot_24hr = [row for row in load(SPOT_24HR) if row["symbol"].endswith(CARRY_QUOTES)]
    # No real spot bookTicker dump exists; the 24hr ticker of the same instant carries the
    # same five fields, so the bookTicker answer is rebuilt from them.
    spot_book = [{key: row[key] for key in ("symbol", "bidPrice", "bidQty", "askPrice", "askQty")}
                 for row in spot_24hr]
    print("books_spot", await record(
        OUT / "books_spot_2024-01-05.json", local,
        {"/api.binance.com/api/v3/ticker/bookTicker": ok(spot_book),
         "/api.binance.com/api/v3/ticker/24hr": ok(spot_24hr)},
        await books(MarketKind.SPOT), markets_routes=full))
    print("books_perp", await record(
        OUT / "books_perp_docs-example.json", local,
        {"/fapi.binance.com/fapi/v1/ticker/bookTicker": ok([load(BOOK_DOCS)]),
         "/fapi.binance.com/fapi/v1/ticker/24hr": ok(load(FAPI_24HR))},
        await books(MarketKind.PERP), markets_routes=full))

    history = {"BTCUSDT": btc_csv_history(), "ORDIUSDT": zushen_history("ORDIUSDT"),
               **{s: rows for s, rows in adee_history().items() if s in ("FLMUSDT", "ETHUSDT")}}

    async def paging(venue):
        def at(text):
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        counts = []
        for symbol, start, end in PAGING_REQUESTS:
            counts.append(len(await venue.fetch_funding_history(symbol, at(start), at(end))))
        return counts

    print("history", await record(OUT / "history_paging.json", local,
                                  {"/fapi.binance.com/fapi/v1/fundingRate": history_route(history)},
                                  paging, markets_routes=full, clock_ms=ms("2026-09-01T00:00:00")))
    await build_errors(local)


# (symbol, start, end) in the order tests/test_binance.py requests them; the second BTC
# and ORDI windows overlap the first, so only their new part is requested.
PAGING_REQUESTS = [
    ("BTC/USDT:USDT", "2024-01-01T00:00:00", "2025-01-01T00:00:00"),
    ("BTC/USDT:USDT", "2024-07-01T00:00:00", "2025-07-01T00:00:00"),
    ("ORDI/USDT:USDT", "2025-08-21T00:00:00", "2026-08-21T00:00:00"),
    ("ORDI/USDT:USDT", "2026-08-01T00:00:00", "2026-08-21T12:00:00"),
    ("FLM/USDT:USDT", "2025-08-10T00:00:00", "2025-09-09T00:00:00"),
    ("ETH/USDT:USDT", "2025-08-10T00:00:00", "2025-09-09T00:00:00"),
]


async def build_errors(local: LocalBinance):
    _, premium, funding_info, fapi, spot, intervals = snapshot_data()
    snap_markets = markets_routes(fapi, spot)

    async def funding(venue):
        try:
            snap = await venue.fetch_funding_snapshot()
            return len(snap.quotes), [(s.symbol, s.reason) for s in snap.skipped]
        except Exception as err:
            return repr(err)

    def error(status: int, body: str, headers: dict[str, str] | None = None) -> Route:
        return lambda query: (status, {"Content-Type": "application/json", **(headers or {})}, body)

    # Binance's documented 429 body (code -1003) and Retry-After header; 503 with the
    # maintenance message ccxt maps to OnMaintenance.
    too_many = json.dumps({"code": -1003, "msg": "Too many requests; current limit of IP is "
                           "2400 requests per minute. Please use the websocket for live updates "
                           "to avoid polling the API."})
    cases = {
        "error_rate_limit.json": error(429, too_many, {"Retry-After": "7"}),
        # 418 = IP ban after ignoring 429s; same -1003 code, the docs' "banned" wording
        # (the ban-until timestamp and IP of a real message are left out).
        "error_rate_limit_1003.json": error(418, json.dumps({
            "code": -1003, "msg": "Way too many requests; IP banned. Please use the "
            "websocket for live updates to avoid bans."}), {"Retry-After": "120"}),
        "error_maintenance.json": error(
            503, json.dumps({"code": 1, "msg": "System is under maintenance."})),
        "error_truncated.json": lambda q: (200, {"Content-Type": "application/json"},
                                           json.dumps(premium)[:5000]),
    }
    for name, route in cases.items():
        print(name, await record(OUT / name, local,
                                 {"/fapi.binance.com/fapi/v1/premiumIndex": route,
                                  "/fapi.binance.com/fapi/v1/fundingInfo": ok(funding_info)},
                                 funding, markets_routes=snap_markets))

    bad_premium, bad_info = missing_fields(premium, funding_info, intervals)
    print("error_missing_fields.json", await record(
        OUT / "error_missing_fields.json", local,
        {"/fapi.binance.com/fapi/v1/premiumIndex": ok(bad_premium),
         "/fapi.binance.com/fapi/v1/fundingInfo": ok(bad_info)},
        funding, markets_routes=snap_markets))


def missing_fields(premium, funding_info, intervals):
    """The snapshot's premiumIndex and fundingInfo with entries damaged (see PROVENANCE.md)."""
    by_symbol = {row["symbol"]: dict(row) for row in premium}
    del by_symbol["ADAUSDT"]["lastFundingRate"]
    by_symbol["AAVEUSDT"]["lastFundingRate"] = None
    by_symbol["ALGOUSDT"]["lastFundingRate"] = ""
    by_symbol["ATOMUSDT"]["nextFundingTime"] = None
    by_symbol["AVAXUSDT"]["markPrice"] = ""  # optional: the quote stays, mark price None
    # A real settlement above the cap we give it: SKL settled -0.00575028 on 2025-08-13
    # 08:00; the fundingInfo entry below borrows the real BTC/ETH caps (±0.00300).
    skl = next(r for r in adee_history()["SKLUSDT"] if r["fundingTime"] == 1755072000002)
    by_symbol["SKLUSDT"] = premium_at_settlement(skl, intervals["SKLUSDT"], skl["fundingTime"])
    rows = list(by_symbol.values())
    rows.append(next(r for r in load(PREMIUM_FULL) if r["symbol"] == "MATICUSDT"))  # delisted
    nameless = dict(next(r for r in load(PREMIUM_FULL) if r["symbol"] == "DIAUSDT"))
    del nameless["symbol"]
    rows.append(nameless)
    real_caps = load(FUNDING_INFO_2)[0]
    info = [*funding_info,
            {**real_caps, "symbol": "SKLUSDT"},
            {"symbol": "BANDUSDT", "fundingIntervalHours": None}]
    return rows, info


async def main():
    local = LocalBinance()
    await build_snapshot(local)
    await build_tests(local)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(REPO))
    asyncio.run(main())
