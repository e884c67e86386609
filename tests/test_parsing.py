"""Field readers every venue parser uses: a missing or malformed field is an error, never 0."""

from __future__ import annotations

from decimal import Decimal

import pytest

from perpcarry.domain.parsing import MalformedField, decimal_field, int_field, optional_decimal

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
