"""Build the OKX offline snapshot and test cassettes from real data in ../shared.

Not run by CI. Starts a local HTTP server that answers the OKX v5 endpoints the plugin
calls from the real files under ``../shared`` (see PROVENANCE.md for every rebuild),
drives the real ``OkxVenue`` against it through ``VenueContext(base_url=...)`` while vcrpy
records, then rewrites the recorded URIs back to ``https://www.okx.com/...``.

Run from the repository root:  python cassettes/okx/build_snapshot.py
"""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import polars as pl

from perpcarry.ccxt.replay import cassette_vcr
from perpcarry.domain.errors import VenueError
from perpcarry.domain.types import MarketKind
from perpcarry.venues.protocol import VenueContext, carry_pairs
from perpcarry_okx import OkxConfig
from perpcarry_okx.venue import OkxVenue

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
RAW = SHARED / "data" / "raw-responses" / "okx"
OUT = REPO / "cassettes" / "okx"
SNAPSHOT = REPO / "plugins" / "okx" / "snapshot" / "snapshot.json"
HOST = "www.okx.com"

# The snapshot instant: one hour before the settlement 2026-01-20 08:00 UTC, the Bybit
# snapshot's instant (cassettes/bybit/build_snapshot.py says how it was chosen). knx holds
# OKX perp prices only up to 2026-03-05, so the former T (2026-03-07 07:00, before the
# last settlement knx holds) had no price; at this T all five OKX coins have one.
T = datetime(2026, 1, 20, 7, 0, tzinfo=UTC)
HOUR_MS = 3_600_000


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def rate_text(value: float) -> str:
    """The parquet stores float64; repr gives the shortest decimal that round-trips."""
    return format(Decimal(repr(value)), "f")


def envelope(rows: list) -> dict:
    return {"code": "0", "data": rows, "msg": ""}


# -- real data -------------------------------------------------------------------------

def spot_instruments() -> dict:
    """The 7 real OKX spot instrument objects kept in ccxt's static markets (`info`),
    wrapped in the /public/instruments envelope (no full SPOT dump exists)."""
    markets = json.loads((SHARED / "fixtures" / "ccxt-markets" / "okx.json").read_text())
    return envelope([m["info"] for m in markets.values() if m["type"] == "spot"])


def swap_instruments() -> dict:
    path = next(RAW.glob("api-v5-public-instruments_SWAP-full_*.json"))
    return json.loads(path.read_text())


def knx_history() -> dict[str, list[tuple[int, str]]]:
    """Settled OKX funding per instId, oldest first: (fundingTime ms, rate text)."""
    frame = (pl.read_parquet(SHARED / "data" / "knx-multivenue" / "funding_rates.parquet")
             .filter(pl.col("venue") == "okx").sort("timestamp"))
    history: dict[str, list[tuple[int, str]]] = {}
    for row in frame.iter_rows(named=True):
        inst_id = f"{row['coin']}-USDT-SWAP"
        history.setdefault(inst_id, []).append((ms(row["timestamp"]),
                                                rate_text(row["funding_rate"])))
    return history


def interval_ms(settlements: list[tuple[int, str]]) -> int:
    """The symbol's real interval: the settlement spacing, which must be constant."""
    gaps = {b[0] - a[0] for a, b in pairwise(settlements)}
    assert len(gaps) == 1, gaps
    return gaps.pop()


def mark_price_at(moment: datetime, listed: set[str]) -> dict:
    """/public/mark-price?instType=SWAP at ``moment``, rebuilt: markPx = close of the knx
    OKX perp 1h candle that opens an hour before ``moment`` (knx stamps open times), i.e. a
    real traded swap price at ``moment``, not OKX's mark computation. Only the knx coins
    have one; every other swap is left out (its price is unknown)."""
    candles = (pl.read_parquet(SHARED / "data" / "knx-multivenue" / "candles.parquet")
               .filter((pl.col("venue") == "okx")
                       & (pl.col("timestamp") == moment - timedelta(hours=1)))
               .sort("coin"))
    rows = [{"instId": f"{coin}-USDT-SWAP", "instType": "SWAP", "markPx": rate_text(close),
             "ts": str(ms(moment))}
            for coin, close in candles.select("coin", "c").iter_rows()
            if f"{coin}-USDT-SWAP" in listed]
    return envelope(rows)


def funding_rate_at(moment: datetime, history: dict, listed: set[str]) -> dict:
    """/public/funding-rate?instId=ANY as it would read at ``moment``: fundingRate = the
    rate that settled at fundingTime (the first settlement after ``moment``),
    nextFundingTime = fundingTime + the real interval. Caps are not in any real source
    for this instant, so they are left empty, as OKX leaves unknown fields."""
    rows = []
    for inst_id, settlements in sorted(history.items()):
        if inst_id not in listed:
            continue
        funding_ms, rate = next(s for s in settlements if s[0] > ms(moment))
        rows.append({
            "fundingRate": rate, "fundingTime": str(funding_ms), "instId": inst_id,
            "instType": "SWAP", "maxFundingRate": "", "minFundingRate": "",
            "nextFundingTime": str(funding_ms + interval_ms(settlements)),
            "ts": str(ms(moment)),
        })
    return envelope(rows)


def ws_funding_btc() -> dict:
    """The real 2025-10-27 WS push for BTC-USDT-SWAP; data[0] has the REST fields."""
    path = next(RAW.glob("ws-funding-rate-channel_BTC-USDT-SWAP_*.json"))
    return envelope(json.loads(path.read_text())["data"])


# -- local server ----------------------------------------------------------------------

class State:
    """What the local server answers; set by main() before each recording."""

    spot: ClassVar[dict[str, Any]] = {}
    swap: ClassVar[dict[str, Any]] = {}
    history: ClassVar[dict[str, list[tuple[int, str]]]] = {}
    funding: ClassVar[dict[str, Any]] = {}
    # /public/mark-price; None: no real marks for this recording (the server answers 404
    # and finish() leaves the request out, so a replay reports it as not recorded)
    marks: ClassVar[dict[str, Any] | None] = None
    tickers: ClassVar[dict[str, dict]] = {}
    # (status, headers, raw body) served for /public/funding-rate instead of State.funding
    override: ClassVar[tuple[int, dict[str, str], str] | None] = None


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path.removeprefix(f"/{HOST}")
        if State.override is not None and path == "/api/v5/public/funding-rate":
            status, headers, body = State.override
            return self._send(status, body, headers)
        if path == "/api/v5/public/instruments":
            body = State.spot if query["instType"] == "SPOT" else State.swap
        elif path == "/api/v5/public/funding-rate":
            body = State.funding
        elif path == "/api/v5/public/mark-price" and State.marks is not None:
            body = State.marks
        elif path == "/api/v5/public/funding-rate-history":
            body = envelope(self._history(query))
        elif path == "/api/v5/market/tickers":
            body = State.tickers[query["instType"]]
        else:
            return self._send(404, json.dumps({"code": "404", "msg": path}))
        return self._send(200, json.dumps(body, separators=(",", ":")))

    @staticmethod
    def _history(query: dict) -> list[dict]:
        """Newest first; after = older than, before = newer than (both exclusive)."""
        rows = State.history.get(query["instId"], [])
        after = int(query.get("after", 2**62))
        before = int(query.get("before", -1))
        limit = min(int(query.get("limit", 400)), 400)
        chosen = [r for r in reversed(rows) if before < r[0] < after][:limit]
        return [{"fundingRate": rate, "fundingTime": str(t), "instId": query["instId"],
                 "instType": "SWAP"} for t, rate in chosen]

    def _send(self, status: int, body: str, headers: dict[str, str] | None = None):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# -- recording -------------------------------------------------------------------------

async def _noop_sleep(_seconds: float) -> None:
    return None


def client(base_url: str, cache: Path, offline: bool = True) -> OkxVenue:
    context = VenueContext(cache_dir=cache, offline=offline, base_url=base_url,
                           sleep=_noop_sleep)
    return OkxVenue(OkxConfig(), context)


def finish(raw_path: Path, target: Path, base_url: str) -> None:
    """Real URIs, one interaction per distinct request, only Content-Type/Retry-After."""
    cassette = json.loads(raw_path.read_text())
    seen, kept = set(), []
    for interaction in cassette["interactions"]:
        if interaction["response"]["status"]["code"] == 404:
            continue  # the local server had no real data for it: not part of the session
        request = interaction["request"]
        request["uri"] = request["uri"].replace(f"{base_url}/", "https://")
        request["headers"] = {}
        key = (request["method"], request["uri"])
        if key in seen:
            continue
        seen.add(key)
        response = interaction["response"]
        response["headers"] = {k: v for k, v in response["headers"].items()
                               if k.lower() in ("content-type", "retry-after")}
        kept.append(interaction)
    cassette["interactions"] = kept
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(cassette, indent=1) + "\n")
    print(f"{target.relative_to(REPO)}: {len(kept)} interactions, "
          f"{target.stat().st_size / 1024:.0f} kB")


async def record(name: Path, base_url: str, work: Path, action, preload: bool = True,
                 offline: bool = True) -> None:
    """Record ``action(venue)``; with ``preload`` the markets are loaded before recording
    (the tests load them from the snapshot in a separate replay); ``offline=False`` keeps
    the SQLite history cache on, as the history-paging test does."""
    venue = client(base_url, work / f"cache-{name.stem}", offline)
    if preload:
        await venue.load_markets()
    raw = work / f"{name.name}.raw.json"
    raw.unlink(missing_ok=True)
    try:
        with cassette_vcr(record_mode="all").use_cassette(str(raw)):
            await action(venue)
    finally:
        await venue.close()
    finish(raw, name, base_url)


async def main() -> None:
    swap = swap_instruments()
    listed = {row["instId"] for row in swap["data"]}
    State.spot, State.swap = spot_instruments(), swap
    State.history = knx_history()
    State.funding = funding_rate_at(T, State.history, listed)
    State.marks = mark_price_at(T, listed)
    ticker = json.loads((SHARED / "fixtures" / "ccxt-static" / "okx.json").read_text())
    spot_ticker = ticker["response"]["methods"]["fetchTicker"][0]["httpResponse"]
    State.tickers = {"SPOT": spot_ticker}

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    work = Path(tempfile.mkdtemp(prefix="okx-build-"))

    async def snapshot_session(venue):
        markets = await venue.load_markets()
        funding = await venue.fetch_funding_snapshot()
        instant = max(q.timestamp for q in funding.quotes.values())
        assert instant == T, instant
        for pair in carry_pairs(markets):
            if pair.perp.symbol in funding.quotes:
                # As the scan asks: 30 days up to the symbol's last settlement.
                until = funding.quotes[pair.perp.symbol].last_settlement
                await venue.fetch_funding_history(pair.perp.symbol, until - timedelta(days=30),
                                                  until)

    await record(SNAPSHOT, base_url, work, snapshot_session, preload=False)
    State.marks = None  # the test cassettes below have no real mark prices

    async def history_session(venue):
        first, last = datetime(2025, 12, 3, tzinfo=UTC), datetime(2026, 3, 7, 8, tzinfo=UTC)
        await venue.fetch_funding_history("HYPE/USDT:USDT", first, last)  # 4h, 565 rows
        await venue.fetch_funding_history("BTC/USDT:USDT", first, last)  # 8h, 283 rows
        await venue.fetch_funding_history("DOGE/USDT:USDT", datetime(2026, 1, 1, tzinfo=UTC),
                                          datetime(2026, 2, 1, tzinfo=UTC))
        await venue.fetch_funding_history("DOGE/USDT:USDT", datetime(2026, 1, 15, tzinfo=UTC),
                                          datetime(2026, 3, 1, tzinfo=UTC))

    await record(OUT / "history_paging.json", base_url, work, history_session, offline=False)

    async def books_session(venue):
        await venue.fetch_book_tops(MarketKind.SPOT)

    await record(OUT / "tickers_spot_single_real.json", base_url, work, books_session)

    async def funding_session(venue):
        await venue.fetch_funding_snapshot()

    async def failing_funding_session(venue):
        try:
            await venue.fetch_funding_snapshot()
        except VenueError as err:
            print("  expected:", err)

    State.funding = ws_funding_btc()
    await record(OUT / "funding_rate_btc_2025-10-27.json", base_url, work, funding_session)

    State.funding = missing_fields_body(State.history, listed)
    await record(OUT / "error_missing_fields.json", base_url, work, funding_session)

    errors = {
        # OKX's documented answer to an over-limit request; Retry-After is added so the
        # backoff path that honours it is exercised (OKX does not document the header).
        "error_rate_limit.json": (429, {"Retry-After": "2"},
                                  '{"msg":"Too Many Requests","code":"50011"}'),
        # 50001 "Service temporarily unavailable, please try again later" (docs-v5 error
        # codes) with HTTP 503, as during OKX system upgrades.
        "error_maintenance.json": (503, {}, '{"code":"50001","data":[],"msg":"Service '
                                            'temporarily unavailable, please try again '
                                            'later."}'),
    }
    for name, answer in errors.items():
        State.override = answer
        await record(OUT / name, base_url, work, failing_funding_session)
    State.override = None

    # A real body cut mid-entry: the snapshot's funding response truncated at 60 %.
    State.funding = funding_rate_at(T, State.history, listed)
    full = json.dumps(State.funding, separators=(",", ":"))
    State.override = (200, {}, full[: int(len(full) * 0.6)])
    await record(OUT / "error_truncated.json", base_url, work, failing_funding_session)
    State.override = None
    server.shutdown()


def missing_fields_body(history: dict, listed: set[str]) -> dict:
    """Real entries, some damaged on purpose (documented in PROVENANCE.md)."""
    at_t = {row["instId"]: row for row in funding_rate_at(T, history, listed)["data"]}
    btc_ws = ws_funding_btc()["data"][0]
    rows = [copy.deepcopy(btc_ws)]  # valid, with real caps
    eth = dict(at_t["ETH-USDT-SWAP"])
    del eth["fundingRate"]  # missing field
    sol = dict(at_t["SOL-USDT-SWAP"], fundingRate="")  # empty string
    doge = dict(at_t["DOGE-USDT-SWAP"], nextFundingTime=None)  # null
    hype = dict(at_t["HYPE-USDT-SWAP"])  # valid, 4h
    # BTC-USDC-SWAP with a rate beyond its caps (the BTC entry's real ±0.00375 caps)
    over_cap = dict(btc_ws, instId="BTC-USDC-SWAP", fundingRate="0.005")
    # ETH-USDC-SWAP with a 3h gap between settlements, not an OKX interval
    odd_interval = dict(btc_ws, instId="ETH-USDC-SWAP",
                        nextFundingTime=str(int(btc_ws["fundingTime"]) + 3 * HOUR_MS))
    # AZTEC-USDT-SWAP: a real OKX swap (ruleaker 2026-05 snapshots) listed after the
    # 2025-10-02 instruments dump, so unknown to the markets
    unknown = dict(at_t["BTC-USDT-SWAP"], instId="AZTEC-USDT-SWAP")
    rows += [eth, sol, doge, hype, over_cap, odd_interval, unknown]
    return envelope(rows)


if __name__ == "__main__":
    asyncio.run(main())
