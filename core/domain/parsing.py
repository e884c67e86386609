"""Reading venue responses field by field. A missing or malformed field skips the symbol;
it never becomes a zero."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any


class MalformedField(ValueError):
    """A required field of a venue record is missing, null, empty or not a number."""

    def __init__(self, name: str, value: Any) -> None:
        shown = "missing" if value is None else f"invalid value {value!r}"
        super().__init__(f"field {name} is {shown}")


def decimal_field(record: dict[str, Any], name: str) -> Decimal:
    value = record.get(name)
    try:
        # A missing field (str(None)), "" and whitespace are not numbers either.
        number = Decimal(value if isinstance(value, str) else str(value))
    except InvalidOperation:
        raise MalformedField(name, value) from None
    if not number.is_finite():
        raise MalformedField(name, value)
    return number


def optional_decimal(record: dict[str, Any], name: str) -> Decimal | None:
    """A field the venue may leave out; present but malformed is still an error."""
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return decimal_field(record, name)


def int_field(record: dict[str, Any], name: str) -> int:
    value = record.get(name)
    if type(value) is int:  # a JSON integer (not a bool)
        return value
    number = decimal_field(record, name)
    if number != number.to_integral_value():
        raise MalformedField(name, record.get(name))
    return int(number)


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds, the unit every supported venue's timestamps use."""
    return int(moment.timestamp() * 1000)


@functools.lru_cache(maxsize=1 << 16)
def from_ms(ms: int) -> datetime:
    """A venue's epoch-millisecond timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)
