"""The funding histories a scan fetches are written to the cache once every venue's data are
in (not while responses still arrive), and never lost on the way: after the scan returns,
after a scan over clients the caller keeps open (the run loop), and after ``close()`` on an
error path. A second scan on that cache then asks the venues for no history at all."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cache_scan import rows

from perpcarry.ccxt.history_store import FundingHistoryStore, read_tails
from perpcarry.config.loader import load_config
from perpcarry.domain.parsing import to_ms
from perpcarry.scan.engine import (
    HISTORY_LOOKBACK_DAYS,
    ScanOptions,
    gather,
    gather_from,
    scan_result,
)
from perpcarry.venues.protocol import VenueContext

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from replay_server import ServerProcess  # noqa: E402
from scan import HISTORY_PATHS, MARKET_PATHS, VENUES, cassettes  # noqa: E402

HISTORY = "funding_history.sqlite"
SPAN_MS = HISTORY_LOOKBACK_DAYS * 86_400_000

# The scans in this module reach the local replay server, and nothing else.
pytestmark = pytest.mark.block_network(allowed_hosts=["127.0.0.1"])


@pytest.fixture(scope="module")
def server():
    replay = ServerProcess(cassettes(), delay_seconds=0.002)
    replay.start()
    yield replay
    replay.stop()


def _cached(cache: Path, venue: str, symbols) -> dict[str, list]:
    """What another process reads of the cache file: each symbol's newest records."""
    tails = read_tails(cache / HISTORY, venue, frozenset(symbols), SPAN_MS)
    return {symbol: tail.records for symbol, tail in tails.items()}


def _is(paths, url: str) -> bool:
    return any(f"{path}?" in url or url.endswith(path) for path in paths)


async def test_a_cold_scans_histories_are_in_the_cache_when_it_returns_and_a_warm_scan_asks_for_none(  # noqa: E501
        server, tmp_path):
    config = load_config(None)
    options = ScanOptions(venues=VENUES)
    context = VenueContext(cache_dir=tmp_path, base_url=server.url)
    server.reset()
    data, failures = await gather(config, options, lambda venue, stage: None, context=context)
    cold_requests = server.log
    assert failures == {} and {d.venue for d in data} == set(VENUES)
    for venue_data in data:
        assert len(venue_data.history) > 0
        # Every record of every history the scan used, no more and no fewer.
        assert _cached(tmp_path, venue_data.venue, venue_data.history) == venue_data.history

    server.reset()
    warm, _ = await gather(config, options, lambda venue, stage: None, context=context)
    # The warm scan asks only for what changes by the minute: no markets (cached for hours)
    # and no history (cached by the cold scan, up to each symbol's last settlement); at most
    # three requests per venue.
    assert set(server.log) < set(cold_requests)
    assert [u for u in server.log if _is(MARKET_PATHS + HISTORY_PATHS, u)] == []
    per_venue = {v: sum(u.split("/")[1].endswith(f"{v}.com") for u in server.log)
                 for v in VENUES}
    assert all(1 <= count <= 3 for count in per_venue.values()), per_venue
    assert {d.venue: d.history for d in warm} == {d.venue: d.history for d in data}
    assert rows(scan_result(warm, {}, options)) == rows(scan_result(data, {}, options))


async def test_a_scan_over_clients_kept_open_writes_their_histories_when_it_ends(
        server, tmp_path):
    """The run loop keeps its clients between cycles: each cycle's scan writes the cache."""
    config = load_config(None)
    context = VenueContext(cache_dir=tmp_path, base_url=server.url)
    clients = {v: config.registry.venues[v].factory(config.venues[v], context)
               for v in ("okx",)}
    try:
        data, failures = await gather_from(config, clients, ScanOptions(venues=("okx",)),
                                           lambda venue, stage: None)
        assert failures == {} and data[0].history
        assert _cached(tmp_path, "okx", data[0].history) == data[0].history
    finally:
        await clients["okx"].close()


class _Stop(Exception):
    """The error the caller's code raises between the fetch and the end of the scan."""


async def test_close_on_an_error_path_writes_what_was_fetched_and_held(server, tmp_path):
    config = load_config(None)
    client = config.registry.venues["bybit"].factory(
        config.venues["bybit"], VenueContext(cache_dir=tmp_path, base_url=server.url))
    symbol = "BTC/USDT:USDT"
    with pytest.raises(_Stop):
        try:
            quote = (await client.fetch_funding_snapshot()).quotes[symbol]
            end = quote.last_settlement
            records = await client.fetch_funding_history(
                symbol, end - timedelta(days=HISTORY_LOOKBACK_DAYS), end)
            assert len(records) > 0
            # Held in memory while responses may still arrive: nothing written yet.
            assert _cached(tmp_path, "bybit", [symbol]) == {}
            raise _Stop
        finally:
            await client.close()
    assert _cached(tmp_path, "bybit", [symbol]) == {symbol: records}
    store = FundingHistoryStore(tmp_path / HISTORY)
    try:
        start_ms = to_ms(end - timedelta(days=HISTORY_LOOKBACK_DAYS))
        assert store.missing_spans("bybit", symbol, start_ms, to_ms(records[-1].funding_time)) \
            == []
    finally:
        store.close()
