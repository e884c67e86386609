"""Micro-benchmark of the funding-history parsers on the recorded pages.

    python bench/parsing.py [--rounds 7] [--baseline DIR]

Parses the history pages a cold ``bench/scan.py`` run replays (Binance ``fundingRate``,
Bybit ``funding/history``, OKX ``funding-rate-history`` of the bundled snapshots: real
responses, 79 + 21 + 3 pages), each once per pass as a cold scan does, the settlement-time
cache emptied first as in a new process, and prints the cost per record and per scan
against ``json.loads`` of the same bodies measured in the same run (the decoding plain
ccxt does with every page; the parser is work on top of it). Then the scan's step from the
parsed records to the estimates (``perpcarry.scan.engine.latest_estimates``).

With ``--baseline DIR`` (a directory from which ``perpcarry`` and the plugins import, e.g.
an export of main with ``perpcarry`` -> ``core`` and ``perpcarry_<venue>`` ->
``plugins/<venue>`` links), the same measurement runs in child processes on that tree and
on this one, alternating round by round, and the ratio this / baseline is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qsl, urlsplit

ROOT = Path(__file__).parents[1]
VENUES = ("binance", "bybit", "okx")
HISTORY_PATHS = {"/fapi/v1/fundingRate": "binance", "/v5/market/funding/history": "bybit",
                 "/api/v5/public/funding-rate-history": "okx"}


def recorded_pages() -> list[tuple[str, str, str]]:
    """(venue, venue symbol, body) of every history page of the bundled snapshots."""
    pages = []
    for venue in VENUES:
        path = ROOT / "plugins" / venue / "snapshot" / "snapshot.json"
        for interaction in json.loads(path.read_text())["interactions"]:
            url = urlsplit(interaction["request"]["uri"])
            if HISTORY_PATHS.get(url.path) != venue:
                continue
            query = dict(parse_qsl(url.query))
            pages.append((venue, query.get("symbol") or query["instId"],
                          interaction["response"]["body"]["string"]))
    return pages


def parsers():
    """The history parser of each venue, as ``parse(market, decoded body)``."""
    from perpcarry_binance.parsing import parse_funding_rates
    from perpcarry_bybit.parsing import parse_funding_history as bybit_history
    from perpcarry_okx.parsing import parse_funding_history as okx_history

    return {
        "binance": lambda market, body: parse_funding_rates("binance", body, market),
        "bybit": lambda market, body: bybit_history("bybit", body, market),
        "okx": lambda market, body: okx_history("okx", market, body["data"]),
    }


def perp(venue: str, venue_symbol: str):
    from perpcarry.domain.types import Market, MarketKind

    return Market(venue, f"{venue_symbol}/USDT:USDT", venue_symbol, venue_symbol, "USDT",
                  "USDT", MarketKind.PERP, Decimal(1), Decimal("0.001"), Decimal("0.001"),
                  None, Decimal("0.1"))


def forget_moments() -> None:
    """Empties the parsers' cache of converted settlement times, as a cold scan (a new
    process) starts with it: every pass pays for the ~360 distinct instants again."""
    from perpcarry.domain import parsing

    parsing._MOMENT_OF_MS.clear()
    parsing._MS_OF_MOMENT.clear()


def measure(repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds per record: json.loads and the parser per venue, and the
    scan's latest_estimates over the parsed histories."""
    from perpcarry.scan.engine import ScanOptions, latest_estimates

    parse = parsers()
    pages = [(venue, perp(venue, symbol), body, json.loads(body))
             for venue, symbol, body in recorded_pages()]
    result: dict[str, float] = {}
    for venue in VENUES:
        mine = [(market, body, decoded) for v, market, body, decoded in pages if v == venue]
        count = sum(len(parse[venue](market, decoded)) for market, _, decoded in mine)
        decode, parsing = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            for _, body, _ in mine:
                json.loads(body)
            decode.append(time.perf_counter() - started)
            forget_moments()
            started = time.perf_counter()
            for market, _, decoded in mine:
                parse[venue](market, decoded)
            parsing.append(time.perf_counter() - started)
        result[f"{venue} json.loads"] = min(decode) / count
        result[f"{venue} parser"] = min(parsing) / count
        result[f"{venue} records"] = count
    options = ScanOptions(venues=VENUES)
    estimating = []
    for _ in range(repeats):
        # Records parsed afresh for each pass, as in a scan (fresh objects, fresh caches).
        history: dict[str, dict] = {venue: {} for venue in VENUES}
        forget_moments()
        for venue, market, _, decoded in pages:
            history[venue][market.symbol] = parse[venue](market, decoded)
        # Only what latest_estimates reads of a venue's VenueData: its history.
        data = [SimpleNamespace(history=history[venue]) for venue in VENUES]
        started = time.perf_counter()
        for venue_data in data:
            latest_estimates(venue_data, options)
        estimating.append(time.perf_counter() - started)
    result["estimates per scan"] = min(estimating)
    return result


def child(tree: str | None, repeats: int) -> dict[str, float]:
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, __file__, "--child", "--repeats", str(repeats)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=20, help="timed passes per round")
    parser.add_argument("--baseline", help="directory the baseline tree imports from")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.repeats)))
        return
    sides = {"this tree": None} | ({"baseline": args.baseline} if args.baseline else {})
    rounds: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for _ in range(args.rounds):
        for side, tree in sides.items():
            rounds[side].append(child(tree, args.repeats))

    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in rounds[side])

    this = "this tree"
    for venue in VENUES:
        records = int(rounds[this][0][f"{venue} records"])
        per_record = median(this, f"{venue} parser")
        line = (f"{venue}: {records} records; parser {per_record * 1e6:.3f} us/record = "
                f"{per_record / median(this, f'{venue} json.loads'):.2f}x json.loads")
        if args.baseline:
            base = median("baseline", f"{venue} parser")
            line += (f"; baseline {base * 1e6:.3f} us/record = "
                     f"{base / median('baseline', f'{venue} json.loads'):.2f}x json.loads; "
                     f"this / baseline = {per_record / base:.2f}x")
        print(line)
    def scan_ms(side: str) -> float:
        return sum(median(side, f"{venue} parser") * rounds[side][0][f"{venue} records"]
                   for venue in VENUES) * 1e3

    line = f"all three parsers, per cold scan: {scan_ms(this):.2f} ms"
    if args.baseline:
        line += (f"; baseline {scan_ms('baseline'):.2f} ms; this / baseline = "
                 f"{scan_ms(this) / scan_ms('baseline'):.2f}x")
    print(line)
    per_scan = median(this, "estimates per scan")
    line = f"scan history -> estimates, per scan: {per_scan * 1e3:.2f} ms"
    if args.baseline:
        base = median("baseline", "estimates per scan")
        line += f"; baseline {base * 1e3:.2f} ms; this / baseline = {per_scan / base:.2f}x"
    print(line + f"  [{args.rounds} rounds alternating, best of {args.repeats} passes each]")


if __name__ == "__main__":
    main()
