"""Scans in separate processes sharing one cold cache directory, all at once, against a
local replay server (bench/replay_server.py): every one of them gets the full rows, none
warns, and the cache they leave behind is whole."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import sys
from pathlib import Path

import orjson
import pytest
from cache_scan import VENUES, live_scan, rows

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from replay_server import ServerProcess  # noqa: E402
from scan import cassettes  # noqa: E402

PROCESSES = 4
ROUNDS = 3

# The scans in this process reach the local replay server, and nothing else.
pytestmark = pytest.mark.block_network(allowed_hosts=["127.0.0.1"])


@pytest.fixture(scope="module")
def server():
    replay = ServerProcess(cassettes(), delay_seconds=0.002)
    replay.start()
    yield replay
    replay.stop()


def _scan_in_child(cache: Path, base_url: str, results) -> None:
    from loguru import logger

    warnings: list[str] = []
    logger.add(lambda message: warnings.append(message.record["message"]), level="WARNING")
    try:
        outcome = {"rows": rows(asyncio.run(live_scan(cache, base_url))), "warnings": warnings}
    except BaseException as exc:  # reported to the test, which fails on it
        outcome = {"error": repr(exc)}
    results.send(outcome)


def _scans_at_once(cache: Path, base_url: str) -> list[dict]:
    """PROCESSES scans at once, each in a process of its own (forked from this one, which
    has imported everything already, so that the scans, not the imports, overlap)."""
    fork = multiprocessing.get_context("fork")
    pipes = [fork.Pipe(duplex=False) for _ in range(PROCESSES)]
    children = [fork.Process(target=_scan_in_child, args=(cache, base_url, send))
                for _, send in pipes]
    for child in children:
        child.start()
    outcomes = [receive.recv() if receive.poll(120) else {"error": "no answer in 120 s"}
                for receive, _ in pipes]
    for child in children:
        child.join(10)
        assert child.exitcode == 0
    return outcomes


async def test_scans_sharing_one_cold_cache_all_get_full_rows(server, tmp_path,
                                                              logged_warnings):
    alone = rows(await live_scan(tmp_path / "alone", server.url))
    *carry, failures, _skipped = alone
    assert len(carry) > 80 and failures == []
    for round_ in range(ROUNDS):
        cache = tmp_path / f"shared-{round_}"
        for outcome in _scans_at_once(cache, server.url):
            assert outcome.get("error") is None
            assert outcome["warnings"] == []
            assert outcome["rows"] == alone
        with sqlite3.connect(cache / "funding_history.sqlite") as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            covered = db.execute("SELECT venue, count(*) FROM coverage GROUP BY venue")
            assert dict(covered.fetchall()).keys() == set(VENUES)
        db.close()
        for venue in VENUES:
            markets = orjson.loads((cache / "responses" / venue / "markets.json").read_bytes())
            assert "BTC/USDT:USDT" in markets["payload"]
        assert not list(cache.rglob("*.tmp"))
        # What they left behind serves the next scan as a clean cache would.
        assert rows(await live_scan(cache, server.url)) == alone
    assert logged_warnings == []
