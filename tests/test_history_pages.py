"""The history parsers read a page column by column (``funding_page``) and, when any value
is in doubt, record by record. Whatever a venue sends, the two readings must agree: the
same records in the same order, or the same ``MalformedField`` with the same message."""

from __future__ import annotations

import copy
import json
import operator
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perpcarry.domain.parsing import MalformedField
from perpcarry.domain.types import Market, MarketKind
from perpcarry_binance import parsing as binance
from perpcarry_bybit import parsing as bybit
from perpcarry_okx import parsing as okx

ROOT = Path(__file__).parents[1]
HISTORY_PATHS = {"/fapi/v1/fundingRate": "binance", "/v5/market/funding/history": "bybit",
                 "/api/v5/public/funding-rate-history": "okx"}
# Per venue: the page reader, the record-by-record reader, the rows of a decoded body, and
# the names of the symbol, time, rate and (Binance) mark price fields.
VENUES = {
    "binance": (lambda m, body: binance.parse_funding_rates("binance", body, m),
                lambda m, body: binance._funding_records("binance", body, m),
                lambda body: body, ("symbol", "fundingTime", "fundingRate", "markPrice")),
    "bybit": (lambda m, body: bybit.parse_funding_history("bybit", body, m),
              lambda m, body: bybit._funding_records("bybit", body["result"]["list"], m),
              lambda body: body["result"]["list"],
              ("symbol", "fundingRateTimestamp", "fundingRate")),
    # OKX's parser takes the envelope's data rows, as the venue hands them over.
    "okx": (lambda m, body: okx.parse_funding_history("okx", m, okx_rows(body)),
            lambda m, body: okx._funding_records("okx", m, okx_rows(body)),
            lambda body: body["data"], ("instId", "fundingTime", "fundingRate", "realizedRate")),
}


def okx_rows(body):
    return okx.response_rows("okx", body, "public/funding-rate-history")


def recorded_pages() -> list[tuple[str, str, object]]:
    """(venue, venue symbol, decoded body) of every recorded history page: the bundled
    snapshots and the paging cassettes."""
    pages = []
    for venue in VENUES:
        for path in [ROOT / "plugins" / venue / "snapshot" / "snapshot.json",
                     ROOT / "cassettes" / venue / "history_paging.json"]:
            for interaction in json.loads(path.read_text())["interactions"]:
                url = urlsplit(interaction["request"]["uri"])
                if HISTORY_PATHS.get(url.path) != venue:
                    continue
                query = dict(parse_qsl(url.query))
                body = json.loads(interaction["response"]["body"]["string"])
                pages.append((venue, query.get("symbol") or query["instId"], body))
    return pages


PAGES = recorded_pages()


def perp(venue: str, venue_symbol: str) -> Market:
    return Market(venue, "X/USDT:USDT", venue_symbol, "X", "USDT", "USDT", MarketKind.PERP,
                  Decimal(1), Decimal("0.001"), Decimal("0.001"), None, Decimal("0.1"))


def outcome(read, market: Market, body) -> tuple[str, str]:
    """What a reader gives, comparable: the records' repr (a Decimal's exponent and the
    times included) or the error's type and message."""
    try:
        return "records", repr(read(market, body))
    except MalformedField as err:
        return "MalformedField", f"{err.field}: {err}"


def test_every_recorded_page_reads_the_same_both_ways_oldest_first():
    assert len({venue for venue, _, _ in PAGES}) == 3 and len(PAGES) > 100
    for venue, symbol, body in PAGES:
        page, by_record, rows_of, _ = VENUES[venue]
        market = perp(venue, symbol)
        records = page(market, body)
        assert len(records) == len(rows_of(body)) > 0
        assert repr(records) == repr(by_record(market, body))
        times = [r.funding_time for r in records]
        assert times == sorted(times)


# Values a corrupted or hostile response may carry in place of any field: each is either
# read as the per-field readers read it or rejected by them with a named field.
ODD_VALUES = [
    None, "", "  ", "NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e30",
    "-1e30", "1E+30", "1e31", "0.01%", "abc", "0x10", True, False, 0, 1, -1, 0.0001, 1.5,
    float("nan"), float("inf"), [1], {}, "0", "-0", " 0.0001 ", "0.000_1", "１", "٠٫١",
    "1754784000003", " 1754784000003 ", "1_754_784_000_003", "+1754784000003",
    "1754784000003.0", "1754784000003.5", 1754784000003.5, "1.754784000003e12", 1754784000003,
    1754784000003.0, 1754784000003000, "1754784000003000", 1754784000003000000,
    "1754784000003000000", 1754784000, "1754784000", 1230940799999, 1230940800000,
    4102444799999, 4102444800000, -1754784000003, "BTCUSDT", "ETHUSDT", "BTC-USDT-SWAP",
    "DOGE-USDT-SWAP", "x" * 100, "9" * 40,
]
MISSING = object()  # the key deleted
ODD_ROWS = [None, [], [1], "row", 1, {}]
EDGE_MS = [1_230_940_800_000, 4_102_444_800_000]  # EARLIEST_MS, LATEST_MS
# Around the limits of what reads: 10^30 for numbers, the plausible epoch-ms range for times
# (and the same instants in micro- and nanoseconds), as strings and as JSON numbers.
near_limits = st.one_of(
    st.builds("{}e{}".format, st.integers(-10**3, 10**3), st.integers(26, 34)),
    st.builds(operator.add, st.sampled_from(EDGE_MS), st.integers(-2, 2)),
    # A settlement time in seconds, micro- and nanoseconds.
    st.sampled_from([1754784000, 1754784000003000, 1754784000003000000]),
).flatmap(lambda value: st.sampled_from([value, str(value)]))
field_value = st.one_of(st.sampled_from([*ODD_VALUES, MISSING]), near_limits)


@settings(max_examples=600, deadline=None)
@given(page_index=st.integers(0, len(PAGES) - 1),
       fields=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 3), field_value),
                       max_size=3),
       row=st.one_of(st.none(), st.tuples(st.integers(0, 10**6), st.sampled_from(ODD_ROWS))),
       order=st.sampled_from([None, "reverse", "duplicate", "swap"]))
def test_a_mutated_page_reads_the_same_both_ways(page_index, fields, row, order):
    venue, symbol, body = PAGES[page_index]
    page, by_record, rows_of, names = VENUES[venue]
    body = copy.deepcopy(body)
    rows = rows_of(body)
    for at, field, value in fields:
        name = names[field % len(names)]
        if value is MISSING:
            rows[at % len(rows)].pop(name, None)
        else:
            rows[at % len(rows)][name] = value
    if row is not None:
        rows[row[0] % len(rows)] = copy.deepcopy(row[1])
    if order == "reverse":
        rows.reverse()
    elif order == "duplicate":
        rows.append(copy.deepcopy(rows[0]))
    elif order == "swap":
        rows[0], rows[-1] = rows[-1], rows[0]
    market = perp(venue, symbol)
    assert outcome(page, market, body) == outcome(by_record, market, body)


@pytest.mark.parametrize("venue", sorted(VENUES))
@pytest.mark.parametrize(("field", "value", "message"), [
    (2, "NaN", "field fundingRate is invalid value 'NaN'"),
    (2, "1e400", "field fundingRate is invalid value '1e400'"),
    (2, "1.1e30", "field fundingRate is invalid value '1.1e30'"),
    (2, None, "field fundingRate is missing"),
    (2, 0.0001, None),  # a JSON number: read exactly, on the record-by-record path
    (1, "", "is invalid value ''"),
    (1, 1754784000003.5, "is invalid value 1754784000003.5"),
    (1, True, "is invalid value True"),
    (1, 1754784000003000, "is 1754784000003000, not a time in epoch milliseconds"),
    (1, "1754784000003000000", "is 1754784000003000000, not a time in epoch milliseconds"),
    (0, "ETHUSDT-X", "ETHUSDT-X"),
])
def test_one_bad_value_in_a_real_page_fails_the_page_naming_it(venue, field, value, message):
    _, symbol, body = next(p for p in PAGES if p[0] == venue)
    page, _, rows_of, fields = VENUES[venue]
    rows = rows_of(body := copy.deepcopy(body))
    rows[len(rows) // 2][fields[field]] = value
    if message is None:
        records = page(perp(venue, symbol), body)
        assert records[len(rows) - 1 - len(rows) // 2 if venue != "binance"
                       else len(rows) // 2].rate == Decimal("0.0001")
        return
    with pytest.raises(MalformedField, match=message.replace("(", r"\(")):
        page(perp(venue, symbol), body)
