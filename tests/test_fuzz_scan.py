"""Fuzzing the scan with broken venue responses.

A local server replays each venue's bundled real snapshot; in each case one recorded
response is mutated (null, a string for a number, a huge number, NaN, a missing key, micro-
or nanosecond times, an HTML page, an empty or truncated body, error JSON with HTTP 200, no
answer at all) and the three venues are scanned together through ``[venues.<id>] base_url``
by the CLI. Whatever the mutation: no traceback, exit code 0 or 1, the other venues' rows all
there, and the mutated venue either keeps its rows less the symbols it names as skipped or
fails with a cause. The schedule is drawn from a fixed seed, so a failure replays.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from venue_server import LOCAL_ONLY, Answer, VenueServer

ROOT = Path(__file__).parents[1]
VENUES = {"binance": ("api.binance.com", "fapi.binance.com"), "bybit": ("api.bybit.com",),
          "okx": ("www.okx.com",)}
SNAPSHOTS = [ROOT / "plugins" / v / "snapshot" / "snapshot.json" for v in VENUES]
SEED = 20261206
# A hang is cut by this deadline; every other case gets the default 60 s.
HANG_DEADLINE_SECONDS = 5
# Markets: ccxt reads them, and a changed field there changes what is listed (a market that
# is no longer active is not a candidate, not a skip). Only whole-body mutations reach them.
MARKET_PATHS = {"/api/v3/exchangeInfo", "/fapi/v1/exchangeInfo", "/v5/market/instruments-info",
                "/api/v5/public/instruments"}
FIELD_MUTATIONS = ("null", "string", "huge", "nan", "missing", "micros", "nanos")
BODY_MUTATIONS = ("html", "empty", "truncated", "error-json", "hang")
# Each venue's documented error envelope, answered with HTTP 200 (Binance "Error Codes",
# Bybit v5 "Error Codes", OKX v5 "Error Code": documented examples, not market data).
ERROR_JSON = {"binance": {"code": -1121, "msg": "Invalid symbol."},
              "bybit": {"retCode": 10001, "retMsg": "params error", "result": {}},
              "okx": {"code": "51001", "msg": "Instrument ID does not exist", "data": []}}

pytestmark = pytest.mark.block_network(**LOCAL_ONLY)


def _recorded_requests() -> dict[str, list[tuple]]:
    by_venue: dict[str, list[tuple]] = {v: [] for v in VENUES}
    for key in sorted(VenueServer(*SNAPSHOTS).recorded, key=repr):
        venue = next(v for v, hosts in VENUES.items() if key[0] in hosts)
        by_venue[venue].append(key)
    return by_venue


def _schedule() -> list[tuple[str, str, tuple, int]]:
    """(mutation, venue, recorded request, seed): every mutation at least once, then more
    drawn at random, each on one recorded request of a venue and an endpoint drawn at
    random (by endpoint, so Binance's 79 history requests do not crowd out the rest)."""
    rng = random.Random(SEED)
    requests = _recorded_requests()
    kinds = list(FIELD_MUTATIONS + BODY_MUTATIONS) + rng.choices(FIELD_MUTATIONS, k=4)
    cases = []
    for kind in kinds:
        venue = rng.choice(sorted(VENUES))
        paths = sorted({r[1] for r in requests[venue]
                        if kind in BODY_MUTATIONS or r[1] not in MARKET_PATHS})
        path = rng.choice(paths)
        request = rng.choice([r for r in requests[venue] if r[1] == path])
        cases.append((kind, venue, request, rng.randrange(1 << 30)))
    return cases


CASES = _schedule()


# -- mutations ------------------------------------------------------------------------------


def _leaves(node, path=()):
    """(path, value) of every scalar in a decoded JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, (*path, index))
    else:
        yield path, node


def _set(document, path, value=None, delete=False):
    for step in path[:-1]:
        document = document[step]
    if delete:
        del document[path[-1]]
    else:
        document[path[-1]] = value


def _is_ms_time(value) -> bool:
    text = str(value)
    return type(value) is not bool and text.isdigit() and len(text) == 13


def _is_number(value) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def mutate(kind: str, venue: str, recorded: Answer, seed: int) -> Answer:
    """``recorded`` with one mutation of ``kind``; field mutations hit 1-3 values."""
    rng = random.Random(seed)
    if kind == "html":
        return Answer(200, "<!DOCTYPE html><html><head><title>403 Forbidden</title></head>"
                           "<body>cloudfront</body></html>", "text/html")
    if kind == "empty":
        return Answer(200, "")
    if kind == "truncated":
        return Answer(recorded.status, recorded.body[:rng.randrange(1, len(recorded.body))])
    if kind == "error-json":
        return Answer(200, json.dumps(ERROR_JSON[venue]))
    if kind == "hang":
        return Answer(200, "", hang=True)
    document = json.loads(recorded.body)
    leaves = list(_leaves(document))
    eligible = {"micros": [p for p, v in leaves if _is_ms_time(v)],
                "nanos": [p for p, v in leaves if _is_ms_time(v)],
                "missing": [p for p, _ in leaves if p and isinstance(p[-1], str)]}.get(
        kind, [p for p, v in leaves if _is_number(v)])
    huge = "__perpcarry_huge__"
    replacement = {"null": lambda _: None, "string": lambda _: "n/a", "huge": lambda _: huge,
                   "nan": lambda _: math.nan, "micros": lambda ms: int(ms) * 1000,
                   "nanos": lambda ms: int(ms) * 1_000_000}
    values = dict(leaves)
    for path in rng.sample(eligible, min(len(eligible), rng.randint(1, 3))):
        if kind == "missing":
            _set(document, path, delete=True)
        else:
            _set(document, path, replacement[kind](values[path]))
    # 1e400 as a JSON number (Python's json reads it as inf) or as a string, by turns.
    huge_as = rng.choice(["1e400", '"1e400"'])
    return Answer(recorded.status, json.dumps(document).replace(f'"{huge}"', huge_as))


# -- the scan -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    served = VenueServer(*SNAPSHOTS)
    served.start()
    yield served
    served.stop()


BASELINE: dict[str, set[str]] = {}


def _scan(run_cli, write_config, server, cache_dir: Path, deadline: float | None = None):
    sections = "".join(f'[venues.{v}]\nenabled = true\nbase_url = "{server.url}"\n'
                       for v in VENUES)
    scan_section = f"[scan]\ndeadline_seconds = {deadline}\n" if deadline else ""
    path = write_config(f'cache_dir = "{cache_dir}"\n{scan_section}{sections}')
    result = run_cli("--config", str(path), "scan", "--json")
    assert "Traceback" not in result.stderr + result.stdout
    assert result.exit_code in (0, 1), result.stderr
    return json.loads(result.stdout)


def _rows(output: dict) -> dict[str, set[str]]:
    rows: dict[str, set[str]] = {v: set() for v in VENUES}
    for row in output["rows"] + output["reverse_rows"]:
        rows[row["venue"]].add(row["perp_symbol"])
    return rows


def _names(perp: str) -> set[str]:
    """The names a skip may give a perp: unified, or the venue's own symbol."""
    base, quote = perp.split(":")[0].split("/")
    return {perp, f"{base}{quote}", f"{base}-{quote}-SWAP"}


@pytest.mark.parametrize(("kind", "venue", "request_key", "seed"), CASES,
                         ids=[f"{k}-{v}-{r[1]}" for k, v, r, _ in CASES])
def test_a_mutated_response_never_costs_another_venue_its_rows(
        run_cli, write_config, server, tmp_path, kind, venue, request_key, seed):
    if not BASELINE:
        BASELINE.update(_rows(_scan(run_cli, write_config, server, tmp_path / "clean")))
        assert all(BASELINE.values()), "every venue has rows when nothing is broken"

    def rule(host, path, query, recorded):
        asked = (host, path, frozenset(query.items()))
        return mutate(kind, venue, recorded, seed) if asked == request_key else None

    server.rule = rule
    try:
        output = _scan(run_cli, write_config, server, tmp_path / "mutated",
                       HANG_DEADLINE_SECONDS if kind == "hang" else None)
    finally:
        server.rule = None
    rows = _rows(output)
    for other in set(VENUES) - {venue}:
        assert other not in output["failures"], output["failures"][other]
        assert rows[other] == BASELINE[other], other
    if venue in output["failures"]:
        reason = output["failures"][venue]
        assert reason and not reason.startswith("unexpected error"), reason
        return
    skipped = {s["symbol"] for s in output["skipped"] if s["venue"] == venue}
    assert rows[venue] <= BASELINE[venue]
    unexplained = [p for p in BASELINE[venue] - rows[venue] if not _names(p) & skipped]
    assert not unexplained, f"rows gone without a named skip: {unexplained}"
