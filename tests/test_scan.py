"""``perpcarry scan``: end to end offline, hand-checked yields, failures and bad options."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from perpcarry.ccxt.replay import replaying
from perpcarry.config.loader import load_config
from perpcarry.domain.errors import ExchangeUnavailable
from perpcarry.scan.engine import ScanOptions, VenueData, evaluate, run_scan
from perpcarry.venues.protocol import VenueContext, carry_pairs

ROOT = Path(__file__).parents[1]
BINANCE_SNAPSHOT = ROOT / "plugins" / "binance" / "snapshot" / "snapshot.json"
# Binance regular-tier takers (the default schedule): spot 0.10 %, USDⓈ-M 0.05 %.
ROUND_TRIP_FEES = 2 * (0.0010 + 0.0005)
THIRTY_DAYS = timedelta(days=30)


def _recorded_rates(cassette: Path, url_part: str) -> list[tuple[int, float]]:
    """Settlement times and rates straight from the recorded response body."""
    for interaction in json.loads(cassette.read_text())["interactions"]:
        if url_part in interaction["request"]["uri"]:
            body = json.loads(interaction["response"]["body"]["string"])
            return [(row["fundingTime"], float(row["fundingRate"])) for row in body]
    raise AssertionError(f"{url_part} not in {cassette}")


@pytest.fixture(scope="module")
def offline_mean():
    return _scan(ScanOptions(offline=True))


def _scan(options: ScanOptions):
    import asyncio

    return asyncio.run(run_scan(load_config(None), options))


def _row(result, venue: str, perp: str):
    rows = [r for r in result.rows + result.reverse_rows
            if r.venue == venue and r.pair.perp.symbol == perp]
    assert len(rows) == 1, f"{venue} {perp} not in the scan"
    return rows[0]


@pytest.mark.parametrize(("symbol", "venue_symbol", "interval"), [
    ("KAVA/USDT:USDT", "KAVAUSDT", 8),
    ("NKN/USDT:USDT", "NKNUSDT", 4),
])
def test_net_apr_by_hand_from_the_bundled_snapshot(offline_mean, symbol, venue_symbol, interval):
    row = _row(offline_mean, "binance", symbol)
    assert row.quote.interval_hours == interval
    # The 7-day mean: funding settled in (T - 168h, T], spread over 168 hours.
    snapshot_ms = int(datetime(2025, 9, 9, tzinfo=UTC).timestamp() * 1000)
    rates = _recorded_rates(BINANCE_SNAPSHOT, f"symbol={venue_symbol}")
    window = [r for t, r in rates if snapshot_ms - 168 * 3600_000 < t <= snapshot_ms]
    assert len(window) == 168 // interval
    expected_apr = sum(window) / 168 * 24 * 365
    net = expected_apr - ROUND_TRIP_FEES * 365 / 30  # no book offline: fees only, no basis
    assert row.expected_apr == pytest.approx(expected_apr, rel=1e-12)
    assert row.net_apr == pytest.approx(net, rel=1e-12)
    assert row.round_trip_cost == pytest.approx(ROUND_TRIP_FEES)
    assert row.break_even_hours == pytest.approx(ROUND_TRIP_FEES / (expected_apr / 8760))
    assert row.current_apr == pytest.approx(float(row.quote.rate) * 24 / interval * 365)


async def test_net_apr_by_hand_for_a_1h_symbol_from_the_full_real_snapshot(tmp_path):
    """No 1h symbol has 30 days of real history, so the 1h check uses the real 521-symbol
    premiumIndex of 2025-06-17 with the current-rate estimator, through the same code."""
    config = load_config(None)
    spec = config.registry.venues["binance"]
    client = spec.factory(spec.config_model(), VenueContext(cache_dir=tmp_path, offline=True))
    cassettes = ROOT / "cassettes" / "binance"
    with replaying(cassettes / "markets_full.json", cassettes / "funding_full_2025-06-17.json"):
        markets = await client.load_markets()
        funding = await client.fetch_funding_snapshot()
    await client.close()
    fees = await config.registry.fee_model("binance").fee_schedule(spec.config_model(), None)
    pairs = [p for p in carry_pairs(markets) if p.perp.symbol in funding.quotes]
    data = VenueData("binance", pairs, funding, {}, fees, {}, datetime.now(UTC), [], [])
    options = ScanOptions(estimator="current", horizon_days=14)
    rows = {r.pair.perp.symbol: r for r in evaluate(data, options)[0]}
    row = rows["VOXEL/USDT:USDT"]
    premium = json.loads(json.loads((cassettes / "funding_full_2025-06-17.json").read_text())
                         ["interactions"][0]["response"]["body"]["string"])
    rate = next(float(e["lastFundingRate"]) for e in premium if e["symbol"] == "VOXELUSDT")
    assert row.quote.interval_hours == 1 and row.quote.rate == Decimal(str(rate))
    assert row.expected_apr == pytest.approx(rate * 24 * 365)  # 1h: 8,760 payments a year
    assert row.net_apr == pytest.approx(rate * 8760 - ROUND_TRIP_FEES * 365 / 14)


def test_offline_scan_cli_prints_ranked_table_and_comparison(run_cli):
    result = run_cli("scan", "--offline")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert ("offline snapshot (UTC): binance 2025-09-09 00:00, bybit 2026-01-20 08:00, "
            "okx 2026-01-20 07:00") in out
    assert "Across exchanges" in out and "Best venue per asset" in out
    table = out[: out.index("Across exchanges")]
    net = [float(line.split("│")[11].strip().rstrip("%")) for line in table.splitlines()
           if line.startswith("│")]
    assert len(net) > 50 and net == sorted(net, reverse=True)


def test_offline_scan_json_is_stable(run_cli):
    result = run_cli("scan", "--offline", "--json", "--top", "5")
    document = json.loads(result.stdout)
    assert document["schema_version"] == 1 and len(document["rows"]) == 5
    assert set(document) == {"schema_version", "offline", "snapshot_times", "rows",
                             "reverse_rows", "venues", "best_venue_per_asset", "failures",
                             "skipped", "notes"}
    documented = (ROOT / "docs" / "scan-json.md").read_text()
    for key in document["rows"][0]:
        assert f"`{key}`" in documented, f"{key} is not documented in docs/scan-json.md"


def test_offline_scan_csv(run_cli):
    result = run_cli("scan", "--offline", "--csv", "--venues", "okx")
    header, *lines = result.stdout.strip().splitlines()
    assert header.startswith("venue,pair,spot_symbol,perp_symbol,interval_hours")
    assert lines and all(line.startswith("okx,") for line in lines)
    empty = run_cli("scan", "--offline", "--csv", "--min-net-apr", "500")
    assert empty.exit_code == 0 and empty.stdout.strip() == header


def test_the_comparison_covers_every_candidate_not_only_the_top_rows(run_cli):
    every = json.loads(run_cli("scan", "--offline", "--json").stdout)
    top = json.loads(run_cli("scan", "--offline", "--json", "--top", "3").stdout)
    assert len(top["rows"]) == 3 and len(every["rows"]) > 50
    assert top["venues"] == every["venues"]
    assert top["best_venue_per_asset"] == every["best_venue_per_asset"] != {}
    venues = ("binance", "bybit", "okx")
    assert {v["venue"]: v["candidates"] for v in every["venues"]} == {
        venue: sum(r["venue"] == venue for r in every["rows"]) for venue in venues}
    table = run_cli("scan", "--offline", "--top", "1", "--verbose").stdout
    assert all(f"fees {venue}: default: regular tier" in table for venue in venues)


def test_negative_funding_is_a_flagged_reverse_row_never_carry(offline_mean, run_cli):
    assert offline_mean.reverse_rows
    assert all(r.expected_hourly < 0 for r in offline_mean.reverse_rows)
    assert all(r.expected_hourly >= 0 for r in offline_mean.rows)
    apt = _row(offline_mean, "bybit", "APT/USDT:USDT")
    assert apt in offline_mean.reverse_rows
    out = run_cli("scan", "--offline").stdout
    carry, reverse = out.split("Negative expected funding, not a cash-and-carry; the reverse")
    assert "short spot on margin, long perp" in reverse.split("┏")[0]  # said once, in the title
    flagged = [line for line in reverse.splitlines() if line.startswith("│ ")]
    assert len(flagged) == len(offline_mean.reverse_rows)
    assert any(line.startswith("│ bybit   │ APT/USDT ") for line in flagged)
    assert "│ bybit   │ APT/USDT " not in carry


def test_filters_and_symbols():
    result = _scan(ScanOptions(offline=True, symbols=("BTC", "ETH"), min_net_apr=-0.05))
    assert {r.pair.base for r in result.rows} <= {"BTC", "ETH"}
    assert all(r.net_apr >= -0.05 for r in result.rows)
    # no book offline: nothing has a known 24h volume, so a volume floor keeps nothing
    floor = _scan(ScanOptions(offline=True, min_volume=1))
    assert floor.rows == []
    assert "--min-volume: 93 pair(s) left out because their 24h volume is unknown " \
           "(no book data)" in floor.notes
    unmatched = _scan(ScanOptions(offline=True, symbols=("NOPE", "btc"), venues=("okx",)))
    assert {r.pair.base for r in unmatched.rows + unmatched.reverse_rows} == {"BTC"}
    assert "--symbols: no quoted carry pair for NOPE on okx" in unmatched.notes


async def test_a_venue_that_breaks_unexpectedly_fails_alone_and_every_client_is_closed(
        monkeypatch):
    from perpcarry.ccxt.venue import CcxtVenue
    from perpcarry_okx.venue import OkxVenue

    closed = []
    close = CcxtVenue.close

    async def recorded_close(self):
        await close(self)
        closed.append(self.venue_id)

    async def broken(self):
        raise RuntimeError("a bug in the okx plugin")

    monkeypatch.setattr(CcxtVenue, "close", recorded_close)
    monkeypatch.setattr(OkxVenue, "fetch_funding_snapshot", broken)
    result = await run_scan(load_config(None), ScanOptions(offline=True))
    assert result.failures == {"okx": "unexpected error (RuntimeError: a bug in the okx plugin)"}
    assert {r.venue for r in result.rows + result.reverse_rows} == {"binance", "bybit"}
    assert sorted(closed) == ["binance", "bybit", "okx"]


def test_one_failing_venue_is_reported_and_the_others_scan(run_cli, monkeypatch):
    from perpcarry_okx.venue import OkxVenue

    async def down(self):
        raise ExchangeUnavailable("okx", "exchange unavailable or in maintenance: 503")

    monkeypatch.setattr(OkxVenue, "fetch_funding_snapshot", down)
    result = run_cli("scan", "--offline")
    assert result.exit_code == 0
    assert "okx failed: exchange unavailable or in maintenance: 503" in result.stdout
    assert "│ binance" in result.stdout

    every = run_cli("scan", "--offline", "--venues", "okx")
    assert every.exit_code == 1 and "okx failed" in every.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--estimator", "median"],
     "--estimator: choose one of current, mean, ewma, conservative, got 'median'"),
    (["--horizon", "0"], "--horizon: must be a number of days above 0 and at most 3650, got 0"),
    (["--venues", "kraken"], "--venues: unknown venue kraken (installed: binance, bybit, okx)"),
    (["--top", "0"], "--top: must be a number at least 1, got 0"),
    (["--json", "--csv"], "--json and --csv: choose one output format"),
    (["--horizon", "inf"], "--horizon: must be a number of days above 0 and at most 3650, got inf"),
    (["--horizon", "nan"], "--horizon: must be a number of days above 0 and at most 3650, got nan"),
    (["--horizon", "0.01"], "--horizon: must be at least one hour (1/24 day), got 0.01"),
    (["--window", "-2"], "--window: must be a number of days above 0 and at most 3650, got -2"),
    (["--min-net-apr", "nan"], "--min-net-apr: must be a finite number, got nan"),
    (["--min-volume", "inf"], "--min-volume: must be a number at least 0, got inf"),
    (["--min-volume", "-1"], "--min-volume: must be a number at least 0, got -1"),
    (["--venues", ","], "--venues: no value given"),
    (["--symbols", " , "], "--symbols: no value given"),
    (["--estimator", ""], "--estimator: choose one of current, mean, ewma, conservative, got ''"),
    (["--top", "many"], "Invalid value for '--top': Input should be a valid integer, unable "
                        "to parse string as an integer (see: perpcarry scan --help)"),
    (["--venue", "okx"], "No such option: --venue (Possible options: --venues, --verbose) "
                         "(see: perpcarry scan --help)"),
])
def test_invalid_options_are_one_line_errors(run_cli, args, message):
    result = run_cli("scan", "--offline", *args)
    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"


def test_online_scan_without_enabled_venues_says_how(run_cli):
    result = run_cli("scan")
    assert result.exit_code == 2 and "no venues enabled" in result.stderr


async def test_history_runs_30_days_up_to_each_perps_last_settlement():
    from perpcarry.scan.engine import gather

    data, failures = await gather(load_config(None), ScanOptions(offline=True),
                                  lambda venue, stage: None)
    assert not failures and {d.venue for d in data} == {"binance", "bybit", "okx"}
    for venue in data:
        assert venue.history.keys() == {p.perp.symbol for p in venue.pairs}
        for symbol, records in venue.history.items():
            quote = venue.funding.quotes[symbol]
            settled = [r.funding_time for r in records]
            # Binance stamps a settlement a few milliseconds after the hour.
            first, last = (abs(t - quote.last_settlement) for t in (settled[0] + THIRTY_DAYS,
                                                                    settled[-1]))
            assert first < timedelta(seconds=1) and last < timedelta(seconds=1), symbol
            assert quote.last_settlement <= venue.snapshot_time
            assert settled == sorted(set(settled))


def test_an_unknown_command_is_one_line_and_no_command_shows_the_help(run_cli):
    result = run_cli("scn")
    assert result.exit_code == 2
    assert result.stderr == ("error: No such command 'scn'. Did you mean 'scan'? "
                             "(see: perpcarry --help)\n")
    result = run_cli()
    assert result.exit_code == 2 and "Usage: perpcarry [OPTIONS] COMMAND" in result.stderr
