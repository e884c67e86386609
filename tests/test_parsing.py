"""Field readers every venue parser uses: a missing or malformed field is an error, never 0."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from perpcarry.domain.parsing import (
    EARLIEST_MS,
    LATEST_MS,
    MalformedField,
    best_bid_ask,
    decimal_field,
    from_ms,
    int_field,
    optional_decimal,
    time_field,
    to_ms,
)

NOT_A_NUMBER = [
    ({}, "field rate is missing"),
    ({"rate": None}, "field rate is missing"),
    ({"rate": ""}, "field rate is invalid value ''"),
    ({"rate": "  "}, "field rate is invalid value '  '"),
    ({"rate": "NaN"}, "field rate is invalid value 'NaN'"),
    ({"rate": "Infinity"}, "field rate is invalid value 'Infinity'"),
    ({"rate": "0.01%"}, "field rate is invalid value '0.01%'"),
    ({"rate": True}, "field rate is invalid value True"),
    ({"rate": [1]}, "field rate is invalid value [1]"),
]


@pytest.mark.parametrize(("record", "message"), NOT_A_NUMBER)
def test_a_required_field_that_is_not_a_number_is_an_error(record, message):
    for read in (decimal_field, int_field):
        with pytest.raises(MalformedField) as err:
            read(record, "rate")
        assert str(err.value) == message


@pytest.mark.parametrize(("value", "expected"), [
    ("0.00010000", Decimal("0.00010000")), ("-0.0025", Decimal("-0.0025")),
    (" 3 ", Decimal(3)), (7, Decimal(7)), (0.5, Decimal("0.5")),
])
def test_decimal_field_reads_strings_and_json_numbers_exactly(value, expected):
    read = decimal_field({"rate": value}, "rate")
    assert read == expected and type(read) is Decimal


@pytest.mark.parametrize(("value", "expected"), [
    (1757376000000, 1757376000000), ("1757376000000", 1757376000000), (8.0, 8),
])
def test_int_field_reads_whole_numbers(value, expected):
    read = int_field({"time": value}, "time")
    assert read == expected and type(read) is int


@pytest.mark.parametrize("value", ["1.5", 2.5])
def test_int_field_refuses_fractions(value):
    with pytest.raises(MalformedField, match="field time is invalid value"):
        int_field({"time": value}, "time")


def test_optional_field_absent_or_blank_is_none_but_malformed_is_an_error():
    for record in ({}, {"mark": None}, {"mark": ""}, {"mark": " "}):
        assert optional_decimal(record, "mark") is None
    assert optional_decimal({"mark": "65000.1"}, "mark") == Decimal("65000.1")
    with pytest.raises(MalformedField, match="invalid value 'n/a'"):
        optional_decimal({"mark": "n/a"}, "mark")


# -- values that are numbers but not plausible ones, and the one book rule -------------------


@pytest.mark.parametrize("value", ["1e400", 1e400, "-1e31", float("nan"), "sNaN"])
def test_a_number_beyond_any_market_figure_is_malformed(value):
    with pytest.raises(MalformedField, match=r"^field rate is invalid value"):
        decimal_field({"rate": value}, "rate")


@given(ms=st.integers(min_value=-(10**30), max_value=10**30))
def test_a_time_field_is_epoch_milliseconds_or_an_error(ms):
    """Seconds, micro- and nanoseconds and garbage are refused by name; no ValueError or
    OverflowError from datetime ever escapes."""
    if EARLIEST_MS <= ms < LATEST_MS:
        assert to_ms(time_field({"time": ms}, "time")) == ms
    else:
        with pytest.raises(MalformedField, match=f"^field time is {ms}, not a time in epoch "
                                                 "milliseconds$"):
            time_field({"time": ms}, "time")


@given(number=st.decimals(allow_nan=False, allow_infinity=False))
def test_any_finite_number_up_to_1e30_reads_exactly_and_beyond_is_malformed(number):
    for value in (str(number), f"{number:f}"):
        if abs(number) <= Decimal("1e30"):
            assert decimal_field({"rate": value}, "rate") == number
        else:
            with pytest.raises(MalformedField, match=r"^field rate is invalid value"):
                decimal_field({"rate": value}, "rate")


@given(whole=st.integers(min_value=0, max_value=10**32), zeros=st.integers(0, 3))
def test_a_whole_number_in_digits_reads_as_that_number_up_to_1e30(whole, zeros):
    """Times come as JSON integers or (Bybit, OKX) as digit strings: both read the same,
    leading zeros or not; digits beyond 10^30 are no number any venue sends."""
    digits = "0" * zeros + str(whole)
    if whole <= 10**30:
        assert int_field({"time": digits}, "time") == int_field({"time": whole}, "time") == whole
    else:
        with pytest.raises(MalformedField, match=r"^field time is invalid value"):
            int_field({"time": digits}, "time")


@given(ms=st.integers(min_value=EARLIEST_MS, max_value=LATEST_MS - 1),
       offset_minutes=st.integers(min_value=-12 * 60, max_value=14 * 60))
def test_from_ms_and_to_ms_are_exact_inverses_in_any_timezone(ms, offset_minutes):
    moment = from_ms(ms)
    assert moment == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert to_ms(moment) == ms
    # The same instant written in another zone, or built afresh, is the same milliseconds.
    assert to_ms(moment.astimezone(timezone(timedelta(minutes=offset_minutes)))) == ms
    assert to_ms(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)) == ms


@example(ms=133_200_001, micros=0)  # came out as ...000 through a float: paging repeated
@given(ms=st.integers(min_value=0, max_value=LATEST_MS - 1), micros=st.integers(0, 999))
def test_to_ms_drops_only_the_fraction_of_a_millisecond(ms, micros):
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms, microseconds=micros)
    assert to_ms(moment) == ms


def test_a_microsecond_or_nanosecond_time_is_named():
    for scale in (1000, 1_000_000):
        with pytest.raises(MalformedField, match="not a time in epoch milliseconds"):
            time_field({"fundingTime": str(1757376000000 * scale)}, "fundingTime")


@given(bid=st.decimals(min_value=-10, max_value=10**6, places=8),
       ask=st.decimals(min_value=-10, max_value=10**6, places=8))
def test_best_bid_ask_is_two_sided_or_an_error(bid, ask):
    record = {"b": str(bid), "a": str(ask)}
    if bid > 0 and ask > 0 and bid <= ask:
        assert best_bid_ask(record, "b", "a") == (bid, ask)
    else:
        with pytest.raises(MalformedField, match=r"^(empty|crossed) book \(bid "):
            best_bid_ask(record, "b", "a")


def test_every_plugin_parser_reports_a_malformed_history_field_as_malformed_field():
    from perpcarry.domain.types import Market, MarketKind
    from perpcarry_binance.parsing import parse_funding_rates
    from perpcarry_bybit.parsing import parse_funding_history as bybit_history
    from perpcarry_okx.parsing import parse_funding_history as okx_history

    def perp(venue_symbol: str) -> Market:
        return Market("x", "BTC/USDT:USDT", venue_symbol, "BTC", "USDT", "USDT",
                      MarketKind.PERP, Decimal(1), Decimal("0.001"), Decimal("0.001"), None,
                      Decimal("0.1"))

    parsers = [
        lambda: parse_funding_rates("binance", [{"symbol": "BTCUSDT", "fundingRate": "0.0001",
                                                 "fundingTime": "soon"}], perp("BTCUSDT")),
        lambda: bybit_history("bybit", {"result": {"list": [
            {"symbol": "BTCUSDT", "fundingRate": "0.0001", "fundingRateTimestamp": "soon"}]}},
            perp("BTCUSDT")),
        lambda: okx_history("okx", perp("BTC-USDT-SWAP"), [
            {"instId": "BTC-USDT-SWAP", "fundingRate": "0.0001", "fundingTime": "soon"}]),
    ]
    for parse in parsers:
        with pytest.raises(MalformedField, match="invalid value 'soon'"):
            parse()
