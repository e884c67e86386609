"""A cache never stops a scan: every kind of damage to the cache directory is one warning
naming the file and how to clear it, and the scan's rows are those of a clean cache."""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from cache_scan import live_scan, rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perpcarry.ccxt.cache_warnings import DAMAGED, NOT_CACHING
from perpcarry.ccxt.history_store import FundingHistoryStore
from perpcarry.ccxt.response_cache import ENTRY_SHAPE, ResponseCache

HISTORY = "funding_history.sqlite"
MARKETS = "responses/binance/markets.json"


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> tuple[Path, list]:
    """A cache directory after one clean scan, and that scan's rows."""
    import asyncio

    cache = tmp_path_factory.mktemp("warm")
    return cache, rows(asyncio.run(live_scan(cache)))


def _sql(statement: str) -> Callable[[Path], None]:
    def damage(cache: Path) -> None:
        with sqlite3.connect(cache / HISTORY) as db:
            assert db.execute(statement).rowcount == 1
        db.close()

    return damage


def _write(relative: str, content: bytes) -> Callable[[Path], None]:
    return lambda cache: (cache / relative).write_bytes(content)


def _directory(relative: str) -> Callable[[Path], None]:
    def damage(cache: Path) -> None:
        path = cache / relative
        if path.exists():
            path.unlink()
        (path / "x").mkdir(parents=True)

    return damage


# (damage done to a warm cache, the file the warning names, the warning after the name)
DAMAGE = {
    "a list, not a cache entry": (
        _write(MARKETS, b"[1,2,3]"), MARKETS, f"{ENTRY_SHAPE}; {DAMAGED}"),
    "fetched_at a string": (
        _write(MARKETS, b'{"fetched_at": "yesterday", "payload": {}}'), MARKETS,
        f"{ENTRY_SHAPE}; {DAMAGED}"),
    "no payload": (
        _write(MARKETS, b'{"fetched_at": 1.0}'), MARKETS, f"{ENTRY_SHAPE}; {DAMAGED}"),
    "markets that are not markets": (
        _write(MARKETS, b'{"fetched_at": 1e12, "payload": {"BTC/USDT": 3}}'), MARKETS,
        f"{ENTRY_SHAPE}; {DAMAGED}"),
    "truncated JSON": (
        _write(MARKETS, b'{"fetched_at": 1e12, "payload": {"BTC/'), MARKETS,
        f"not valid JSON; {DAMAGED}"),
    "a directory where the markets file should be": (
        _directory(MARKETS), MARKETS, f"Is a directory; {DAMAGED}"),
    "a directory where the history file should be": (
        _directory(HISTORY), HISTORY, f"unable to open database file; {NOT_CACHING}"),
    "text in a coverage column": (
        _sql("UPDATE coverage SET end_ms = 'later' WHERE venue = 'binance' "
             "AND symbol = 'BTC/USDT:USDT'"), HISTORY,
        f"the coverage of BTC/USDT:USDT holds 'later', not an integer; {NOT_CACHING}"),
    "text in a settlement time": (
        _sql("UPDATE funding SET funding_time_ms = 'soon' WHERE venue = 'okx' AND "
             "symbol = 'ETH/USDT:USDT' AND funding_time_ms = (SELECT max(funding_time_ms) "
             "FROM funding WHERE venue = 'okx' AND symbol = 'ETH/USDT:USDT')"), HISTORY,
        f"the funding history of ETH/USDT:USDT holds 'soon', not an integer; {NOT_CACHING}"),
    "a rate that is not a number": (
        _sql("UPDATE funding SET rate = 'n/a' WHERE venue = 'bybit' AND symbol = "
             "'BTC/USDT:USDT' AND funding_time_ms = (SELECT max(funding_time_ms) FROM "
             "funding WHERE venue = 'bybit' AND symbol = 'BTC/USDT:USDT')"), HISTORY,
        f"the funding history of BTC/USDT:USDT holds 'n/a', not a decimal number; "
        f"{NOT_CACHING}"),
    "a corrupt history file": (
        _write(HISTORY, b"SQLite format 3\x00" + b"\xff" * 8000), HISTORY,
        f"file is not a database; {NOT_CACHING}"),
}


@pytest.mark.parametrize("case", DAMAGE)
async def test_damage_is_one_warning_naming_the_file_and_the_rows_are_intact(
        case, warm, tmp_path, logged_warnings):
    damage, damaged, after_name = DAMAGE[case]
    warm_cache, clean_rows = warm
    cache = tmp_path / "cache"
    shutil.copytree(warm_cache, cache)
    damage(cache)
    assert rows(await live_scan(cache)) == clean_rows
    assert logged_warnings == [f"cache {cache / damaged}: {after_name}"]


@pytest.mark.parametrize("damage", [_write(MARKETS, b"[1,2,3]"), _directory(MARKETS)])
async def test_a_cold_cache_with_damage_is_one_warning_too(damage, warm, tmp_path,
                                                          logged_warnings):
    (tmp_path / MARKETS).parent.mkdir(parents=True)
    damage(tmp_path)
    assert rows(await live_scan(tmp_path)) == warm[1]
    assert len(logged_warnings) == 1 and str(tmp_path / MARKETS) in logged_warnings[0]


async def test_a_damaged_markets_file_is_rewritten_whole(warm, tmp_path, logged_warnings):
    cache = tmp_path / "cache"
    shutil.copytree(warm[0], cache)
    (cache / MARKETS).write_bytes(b"[1,2,3]")
    await live_scan(cache)
    entry = orjson.loads((cache / MARKETS).read_bytes())
    assert entry.keys() == {"fetched_at", "payload"} and "BTC/USDT:USDT" in entry["payload"]
    assert [p.name for p in (cache / MARKETS).parent.iterdir() if p.name.endswith(".tmp")] == []


async def test_an_empty_history_file_is_a_cold_cache_not_damage(warm, tmp_path,
                                                                logged_warnings):
    """SQLite reads an empty file as an empty database, and another process that has just
    created the file leaves it empty for a moment: both are set up and filled."""
    (tmp_path / HISTORY).write_bytes(b"")
    assert rows(await live_scan(tmp_path)) == warm[1]
    assert logged_warnings == []
    with sqlite3.connect(tmp_path / HISTORY) as db:
        assert db.execute("SELECT count(DISTINCT venue) FROM coverage").fetchone() == (3,)
    db.close()


async def test_a_missing_cache_dir_is_created(warm, tmp_path, logged_warnings):
    cache = tmp_path / "not" / "yet" / "there"
    assert rows(await live_scan(cache)) == warm[1]
    assert logged_warnings == [] and (cache / HISTORY).is_file() and (cache / MARKETS).is_file()


async def test_a_cache_dir_that_cannot_be_created_is_one_warning(warm, tmp_path,
                                                               logged_warnings):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert rows(await live_scan(blocker / "cache")) == warm[1]
    assert logged_warnings == [f"cache {blocker}: Not a directory; {NOT_CACHING}"]


# -- permissions: checked in a process that file permissions apply to ----------------------


def _scan_in_process_without_root_powers(cache: Path) -> dict:
    """The scan run by tests/cache_scan.py in a child process. As root, without the
    capabilities that let root ignore file permissions, as any other user runs."""
    command = [sys.executable, str(Path(__file__).with_name("cache_scan.py")), str(cache)]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _read_only_history(cache: Path) -> Path:
    FundingHistoryStore(cache / HISTORY).close()
    (cache / HISTORY).chmod(0o444)
    return cache / HISTORY


def _read_only_dir(cache: Path) -> Path:
    cache.chmod(0o555)
    return cache


@pytest.mark.parametrize("make_read_only", [_read_only_history, _read_only_dir])
def test_read_only_cache_is_one_warning_and_the_rows_are_intact(make_read_only, warm,
                                                                tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    named = make_read_only(cache)
    try:
        scanned = _scan_in_process_without_root_powers(cache)
    finally:
        cache.chmod(0o755)
    assert scanned["rows"] == json.loads(json.dumps(warm[1]))
    assert len(scanned["warnings"]) == 1, scanned["warnings"]
    assert scanned["warnings"][0].startswith(f"cache {named}: ")
    assert scanned["warnings"][0].endswith(NOT_CACHING)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=JSON | st.fixed_dictionaries({"fetched_at": JSON, "payload": JSON}),
       garbage=st.binary(max_size=40))
def test_no_cached_file_makes_a_read_raise(tmp_path, document, garbage):
    """Whatever a cached response file holds, reading it gives the payload of a well-formed
    fresh entry and None for anything else, and never raises."""
    cache = ResponseCache(tmp_path, lambda: datetime(2026, 1, 1, tzinfo=UTC), offline=False)
    for name, content in (("json", orjson.dumps(document)), ("bytes", garbage)):
        (tmp_path / f"{name}.json").write_bytes(content)
        answer = cache.read(name, max_age_seconds=math.inf)
        entry = orjson.loads(content) if name == "json" else None  # JSON has no infinity
        well_formed = (isinstance(entry, dict) and "payload" in entry
                       and type(entry.get("fetched_at")) in (int, float))
        assert answer == (entry["payload"] if well_formed else None)
