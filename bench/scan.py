"""Benchmark of a full three-venue scan against a local replay server.

    python bench/scan.py [--delay-ms 50] [--runs 5]

1. Serves the recorded responses (bundled snapshots + cassettes/) on 127.0.0.1 with an
   injected delay per request and points all venue plugins at it. Cold scans (empty cache
   directory) alternate run by run with plain ccxt issuing the same requests: the same
   markets load (ccxt's own load_markets with the plugins' options), then the same funding
   and book requests at once, then the same history requests at once, ccxt's rate limiter
   off (target: the cold scan is no slower), and the CPU each side used. The scan sends its
   funding, book and fee requests while the markets load (each waits for the markets only
   to read its answer); ccxt's unified methods load the markets before their request, so
   plain ccxt's come after. The first pair of runs warms both sides up (imports, first
   parse) and is left out of the count of pairs the scan won. Time to result
   ends when the result exists; the scan writes the funding history it fetched to its cache
   after that (once every venue's data are in, alongside ccxt's 250 ms graceful close of
   its sessions), so the line also gives each side's total with its close, the scan's with
   that cache write too. Then warm scans
   on the last cold scan's cache: requests per venue and the time until every venue's data
   is in hand and ranked (targets: <= 3 requests per venue, <= 3x the delay), and the
   total with ccxt's 250 ms graceful close of its sessions. As in the `perpcarry` command,
   the cyclic garbage collector is off.
2. Measures the naive approach from the seed guide over the same symbols: one spot-price and
   one premium-index request per symbol, all fired concurrently (target: >= 20x more
   requests than the scan).
3. Cold start: `perpcarry scan --offline` to a printed table against
   `python -c "import ccxt.async_support"`, alternately, perpcarry's sources compiled to
   bytecode first as ccxt's are (target: <= 1.6x).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from replay_server import ServerProcess

ROOT = Path(__file__).parents[1]
VENUES = ("binance", "bybit", "okx")
# Requested by ccxt's load_markets (the plain-ccxt side makes them through it) and the
# funding-history endpoints (which start from the funding snapshot's settlement times).
MARKET_PATHS = ("/api/v3/exchangeInfo", "/fapi/v1/exchangeInfo", "/v5/market/instruments-info",
                "/api/v5/public/instruments")
HISTORY_PATHS = ("/fapi/v1/fundingRate", "/v5/market/funding/history",
                 "/api/v5/public/funding-rate-history")
# The per-symbol endpoints the naive approach calls, per venue: spot price, then funding.
NAIVE = {
    "binance": (
        "api.binance.com/api/v3/ticker/price?symbol={spot}",
        "fapi.binance.com/fapi/v1/premiumIndex?symbol={perp}",
    ),
    "bybit": (
        "api.bybit.com/v5/market/tickers?category=spot&symbol={spot}",
        "api.bybit.com/v5/market/tickers?category=linear&symbol={perp}",
    ),
    "okx": (
        "www.okx.com/api/v5/market/ticker?instId={spot}",
        "www.okx.com/api/v5/public/funding-rate?instId={perp}",
    ),
}


def cassettes() -> list[Path]:
    found = [ROOT / "plugins" / v / "snapshot" / "snapshot.json" for v in VENUES]
    found += sorted(
        p
        for v in VENUES
        for p in (ROOT / "cassettes" / v).glob("*.json")
        if not p.name.startswith("error_")
    )
    return found


async def timed_scan(config, server: ServerProcess, cache_dir: Path):
    from perpcarry.scan.engine import ScanOptions, gather, scan_result
    from perpcarry.venues.protocol import VenueContext

    context = VenueContext(cache_dir=cache_dir, base_url=server.url)
    options = ScanOptions(venues=VENUES)
    server.reset()
    done: dict[str, float] = {}

    def progress(venue: str, stage: str) -> None:
        if stage == "done":
            done[venue] = time.perf_counter()

    started = time.perf_counter()
    data, failures = await gather(config, options, progress, context=context)
    ranking = time.perf_counter()
    result = scan_result(data, failures, options)
    finished = time.perf_counter()
    # Time to result: every venue's data in hand, then evaluated and ranked. What runs in
    # between is left out of it, not out of the total: the history-cache write, done once
    # every venue's data are in, alongside ccxt's 250 ms graceful close of its sessions.
    to_result = max(done.values()) - started + finished - ranking
    return to_result, finished - started, per_venue(server.requests), result


async def plain_ccxt(server: ServerProcess, requested: list[str]
                     ) -> tuple[float, float, int]:
    """Wall time (without and with closing ccxt's sessions) and request count of plain ccxt
    making the requests of a cold scan
    (``requested``, as the server logged them), venues concurrently: markets through ccxt's
    load_markets, then the funding and book requests at once, then the history at once."""
    import ccxt.async_support as ccxt_async

    from perpcarry.ccxt.transport import rebase
    from perpcarry_binance.venue import BinanceVenue
    from perpcarry_bybit.venue import BybitVenue
    from perpcarry_okx.venue import OkxVenue

    plugins = {"binance": BinanceVenue, "bybit": BybitVenue, "okx": OkxVenue}

    async def venue_requests(venue: str) -> None:
        plugin = plugins[venue]
        options = {"fetchMarkets": {"types": list(plugin.market_types)}, **plugin.ccxt_options}
        exchange = getattr(ccxt_async, plugin.ccxt_id)({"enableRateLimit": False,
                                                        "options": options})
        exchange.has = {**exchange.has, "fetchCurrencies": False}  # as the plugins do
        exchange.urls["api"] = rebase(exchange.urls["api"], server.url)
        mine = [url for url in requested if venue in url.split("/")[1]
                and not any(f"{path}?" in url or url.endswith(path) for path in MARKET_PATHS)]
        history = [url for url in mine if any(f"{path}?" in url for path in HISTORY_PATHS)]
        try:
            await exchange.load_markets()
            await asyncio.gather(*(exchange.fetch(server.url + url) for url in mine
                                   if url not in history))
            await asyncio.gather(*(exchange.fetch(server.url + url) for url in history))
            done[venue] = time.perf_counter()
        finally:
            closing.append(exchange)

    server.reset()
    done: dict[str, float] = {}
    closing: list = []
    started = time.perf_counter()
    await asyncio.gather(*(venue_requests(v) for v in VENUES))
    elapsed = max(done.values()) - started  # left out: ccxt's close, as for the scan
    await asyncio.gather(*(exchange.close() for exchange in closing))
    return elapsed, time.perf_counter() - started, sum(server.requests.values())


async def cpu_used(work):
    """``work``'s result and the CPU seconds (event-loop thread, whole process) it used.
    Measured inside the event loop: on Python 3.11 ``asyncio.run`` formats the repr of its
    main task's result twice on the way out (restoring the SIGINT handler), which for a
    scan's result costs milliseconds that neither side's work includes."""
    started = time.thread_time(), time.process_time()
    result = await work
    return result, (time.thread_time() - started[0], time.process_time() - started[1])


def per_venue(requests: dict[str, int]) -> dict[str, int]:
    """Requests by venue from requests by host (Binance's spot and USDⓈ-M hosts are one)."""
    counts = dict.fromkeys(VENUES, 0)
    for host, count in requests.items():
        counts[next(v for v in VENUES if v in host)] += count
    return counts


async def naive(server: ServerProcess, pairs) -> tuple[float, int]:
    urls = [
        f"{server.url}/" + template.format(spot=p.spot.venue_symbol, perp=p.perp.venue_symbol)
        for p in pairs
        for template in NAIVE[p.venue]
    ]
    server.reset()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get(url: str) -> None:
            async with session.get(url) as response:
                await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(get(u) for u in urls))
        return time.perf_counter() - started, sum(server.requests.values())


def cold_start(runs: int) -> tuple[float, float]:
    """Median wall times of ``import ccxt.async_support`` and of ``perpcarry scan --offline``
    (output discarded), run alternately so that both see the same machine."""
    # pip compiled ccxt's modules to bytecode when it installed them. An editable install of
    # perpcarry is compiled on first import and cached, unless PYTHONDONTWRITEBYTECODE is set
    # (as on the machines here); then every run would compile its sources again. Compile
    # them first, as a regular install does.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "core"),
                    str(ROOT / "plugins")], check=True, stdout=subprocess.DEVNULL)
    commands = ([sys.executable, "-c", "import ccxt.async_support"],
                [sys.executable, "-m", "perpcarry", "scan", "--offline"])
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for command, measured in zip(commands, times, strict=True):
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            measured.append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    delay = args.delay_ms / 1000
    # Scans run here as in the `perpcarry` command, whose process keeps the cyclic garbage
    # collector off (perpcarry.cli.app.main); with it on, a full collection of ccxt's million
    # objects now and then lands inside a timed scan.
    gc.disable()

    for venue in VENUES:
        os.environ[f"PERPCARRY_VENUES__{venue.upper()}__ENABLED"] = "true"
    os.environ.pop("PERPCARRY_CONFIG", None)
    from perpcarry.ccxt.transport import tls_context
    from perpcarry.config.loader import load_config

    config = load_config(None)
    server = ServerProcess(cassettes(), delay)
    server.start()
    cold_times, ccxt_times = [], []
    # Each side's total with its sessions closed, the scan's with its cache write too.
    cold_totals, ccxt_totals = [], []
    # CPU seconds of each cold run (event-loop thread, whole process), scan and plain ccxt:
    # on a shared machine the wall times swing with the other processes, these far less.
    cold_cpu: list[tuple[float, float]] = []
    ccxt_cpu: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for run in range(args.runs):
            cache = Path(scratch) / f"cold-{run}"
            # perpcarry builds its TLS context once per process (reading the CA bundle);
            # a cold scan is a new process, so it builds it again, as plain ccxt builds one
            # per exchange in every run.
            tls_context.cache_clear()
            (cold_time, cold_total, cold_requests, _), cpu = asyncio.run(
                cpu_used(timed_scan(config, server, cache)))
            cold_totals.append(cold_total)
            cold_cpu.append(cpu)
            requested = server.log
            (ccxt_time, ccxt_total, ccxt_requests), cpu = asyncio.run(
                cpu_used(plain_ccxt(server, requested)))
            ccxt_totals.append(ccxt_total)
            ccxt_cpu.append(cpu)
            cold_times.append(cold_time)
            ccxt_times.append(ccxt_time)
        warm = [asyncio.run(timed_scan(config, server, cache)) for _ in range(args.runs)]
    warm_time = statistics.median(w[0] for w in warm)
    warm_total = statistics.median(w[1] for w in warm)
    warm_requests = warm[-1][2]
    result = warm[-1][3]
    naive_time, naive_requests = asyncio.run(naive(server, result.scanned_pairs))
    server.stop()

    total = sum(warm_requests.values())
    print(
        f"injected delay per request: {args.delay_ms:.0f} ms; carry pairs scanned: "
        f"{len(result.scanned_pairs)}; venues failed: {result.failures or 'none'}"
    )
    cold_time, ccxt_time = statistics.median(cold_times), statistics.median(ccxt_times)
    print(
        f"cold scan (empty cache): {sum(cold_requests.values())} requests {cold_requests}, "
        f"median time to result {cold_time * 1000:.0f} ms; plain ccxt, same requests: "
        f"{ccxt_requests} requests, median {ccxt_time * 1000:.0f} ms; cold scan / plain "
        f"ccxt = {cold_time / ccxt_time:.2f}x (target <= 1x, no slower: "
        f"{'met' if cold_time <= ccxt_time else 'MISSED'})  [runs, alternating: scan "
        f"{', '.join(f'{t * 1000:.0f}' for t in cold_times)} ms; ccxt "
        f"{', '.join(f'{t * 1000:.0f}' for t in ccxt_times)} ms]"
    )
    won = sum(s < c for s, c in zip(cold_times[1:], ccxt_times[1:], strict=True))
    print(f"alternating pairs after the first: the scan was faster in {won} of "
          f"{len(cold_times) - 1}")
    cold_total, ccxt_total = statistics.median(cold_totals), statistics.median(ccxt_totals)
    print(
        f"cold scan total (median), with its history-cache write (after the result's data "
        f"are in, left out of time to result) and ccxt's session close: {cold_total * 1000:.0f}"
        f" ms; plain ccxt with its close: {ccxt_total * 1000:.0f} ms; "
        f"{cold_total / ccxt_total:.2f}x"
    )
    cpu_ms = [[statistics.median(run[i] for run in runs) * 1000 for i in (0, 1)]
              for runs in (cold_cpu, ccxt_cpu)]
    print(
        f"cold scan CPU per run (median, ccxt's session close included on both sides): "
        f"event-loop thread {cpu_ms[0][0]:.0f} ms, all threads {cpu_ms[0][1]:.0f} ms; plain "
        f"ccxt {cpu_ms[1][0]:.0f} ms, {cpu_ms[1][1]:.0f} ms"
    )
    print(
        f"warm scan: {total} requests {warm_requests} (<= 3 per venue: "
        f"{'met' if max(warm_requests.values()) <= 3 else 'MISSED'}); median time to result "
        f"{warm_time * 1000:.0f} ms = {warm_time / delay:.2f}x the delay (target <= 3x: "
        f"{'met' if warm_time <= 3 * delay else 'MISSED'}); with ccxt's session close "
        f"{warm_total * 1000:.0f} ms"
    )
    print(
        f"naive (price + premium index per symbol, concurrent): {naive_requests} requests, "
        f"wall {naive_time * 1000:.0f} ms"
    )
    print(f"requests ratio naive/scan: {naive_requests / total:.1f}x (target >= 20x); "
          f"wall time ratio naive/scan: {naive_time / warm_time:.2f}x")

    ccxt_import, offline = cold_start(args.runs)
    print(
        f"cold start: `perpcarry scan --offline` {offline:.2f} s vs "
        f"`import ccxt.async_support` {ccxt_import:.2f} s = {offline / ccxt_import:.2f}x "
        f"(target <= 1.6x)"
    )


if __name__ == "__main__":
    main()
