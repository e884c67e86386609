"""A live-path scan (caches on) of the three first-party venues, for the cache tests: HTTP
replayed from the bundled snapshots in this process, or served by a local replay server
(``--base-url``). Run as a script it prints one JSON line: the rows and the warnings.

    python tests/cache_scan.py CACHE_DIR [--base-url http://127.0.0.1:PORT] [--venues a,b]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from contextlib import nullcontext
from pathlib import Path

from loguru import logger

from perpcarry.ccxt.replay import replaying
from perpcarry.config.loader import load_config
from perpcarry.scan.engine import ScanOptions, ScanResult, run_scan
from perpcarry.venues.protocol import VenueContext

VENUES = ("binance", "bybit", "okx")


async def live_scan(cache_dir: Path, base_url: str | None = None,
                    venues: tuple[str, ...] = VENUES) -> ScanResult:
    """A scan as ``perpcarry scan`` runs it online, with its caches in ``cache_dir``."""
    config = load_config(None)
    snapshots = [config.registry.venues[v].offline_snapshot for v in venues]
    with nullcontext() if base_url else replaying(*snapshots):
        return await run_scan(config, ScanOptions(venues=venues),
                              context=VenueContext(cache_dir=cache_dir, base_url=base_url))


def rows(result: ScanResult) -> list[list]:
    """What a user reads in the table, row by row, plus the failures and skips."""
    return [[r.venue, r.pair.perp.symbol, r.current_apr, r.expected_apr, r.net_apr]
            for r in result.rows + result.reverse_rows] + [
        sorted(result.failures.items()),
        sorted([s.venue, s.symbol, s.reason] for s in result.skipped)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cache_dir", type=Path)
    parser.add_argument("--base-url")
    parser.add_argument("--venues", default=",".join(VENUES))
    args = parser.parse_args()
    warnings: list[str] = []
    logger.remove()
    logger.add(lambda message: warnings.append(message.record["message"]), level="WARNING")
    logger.enable("perpcarry")
    result = asyncio.run(live_scan(args.cache_dir, args.base_url,
                                   tuple(args.venues.split(","))))
    json.dump({"rows": rows(result), "warnings": warnings}, sys.stdout)


if __name__ == "__main__":
    main()
