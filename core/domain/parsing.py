"""Reading venue responses field by field. A missing or malformed field skips the symbol;
it never becomes a zero."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from itertools import repeat
from operator import attrgetter
from typing import Any

from perpcarry.domain.types import FundingRecord

# No price, size, volume, rate or epoch-millisecond time of any venue comes near 10^30; a
# number beyond it is a corrupted field (and past 1e308 the float money math would read inf).
MAX_MAGNITUDE = Decimal("1e30")
MAX_EXPONENT = 30  # of MAX_MAGNITUDE: a number below 10^30 has at most 30 integer digits
# Epoch milliseconds of 2009-01-03 (the first bitcoin block) and 2100-01-01: a time outside
# is in another unit (seconds, micro- or nanoseconds) or corrupted.
EARLIEST_MS, LATEST_MS = 1_230_940_800_000, 4_102_444_800_000


class MalformedField(ValueError):
    """A required field of a venue record is missing, null, empty or not a number, or a
    response is not shaped as the endpoint documents. Every plugin parser raises this one
    type; the venue turns it into ``InvalidResponse`` or a skipped symbol."""

    def __init__(self, name: str, value: Any, problem: str | None = None) -> None:
        shown = "missing" if value is None else f"invalid value {_shown(value)}"
        super().__init__(problem or f"field {name} is {shown}")
        self.field = name


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def decimal_field(record: dict[str, Any], name: str) -> Decimal:
    """A required number: missing, null, blank, not a number, not finite or beyond
    ``MAX_MAGNITUDE`` is a ``MalformedField``."""
    return _decimal(name, record.get(name))


def _decimal(name: str, value: Any) -> Decimal:
    """``value`` of field ``name`` as a finite ``Decimal`` within ``MAX_MAGNITUDE``."""
    try:
        # A missing field (str(None)), "" and whitespace are not numbers either.
        number = Decimal(value if isinstance(value, str) else str(value))
    except InvalidOperation:
        raise MalformedField(name, value) from None
    # The magnitude is compared only when the leading digit's exponent says it may be
    # beyond: this runs for every figure of every history record.
    if not number.is_finite() or (number.adjusted() >= MAX_EXPONENT
                                  and abs(number) > MAX_MAGNITUDE):
        raise MalformedField(name, value)
    return number


def optional_decimal(record: dict[str, Any], name: str) -> Decimal | None:
    """A field the venue may leave out; present but malformed is still an error."""
    value = record.get(name)
    # Blank: empty or whitespace only (what ``not value.strip()`` means, without a copy).
    if value is None or (isinstance(value, str) and (not value or value.isspace())):
        return None
    return _decimal(name, value)


def int_field(record: dict[str, Any], name: str) -> int:
    value = record.get(name)
    if type(value) is int:  # a JSON integer (not a bool)
        return value
    if type(value) is str and len(value) <= MAX_EXPONENT and value.isdecimal():
        # Digits only (Bybit and OKX send times as strings), fewer than MAX_MAGNITUDE has:
        # what the Decimal reading below would return, read directly.
        return int(value)
    number = decimal_field(record, name)
    if number != number.to_integral_value():
        raise MalformedField(name, record.get(name))
    return int(number)


def time_field(record: dict[str, Any], name: str) -> datetime:
    """An epoch-millisecond field as an aware UTC datetime; a value in another unit (a
    micro- or nanosecond timestamp) or out of any plausible range is malformed."""
    ms = record.get(name)
    if type(ms) is not int:  # a JSON integer needs no int_field call (most times are)
        ms = int_field(record, name)
    if not EARLIEST_MS <= ms < LATEST_MS:
        raise MalformedField(name, record.get(name),
                             f"field {name} is {ms}, not a time in epoch milliseconds")
    return from_ms(ms)


def oldest_first(records: list[FundingRecord]) -> list[FundingRecord]:
    """``records`` sorted by settlement time, in place: the order every history parser
    returns, whichever order the venue sends."""
    records.sort(key=_FUNDING_TIME)
    return records


_FUNDING_TIME = attrgetter("funding_time")


def funding_page(venue: str, symbol: str, times: list[Any], rates: list[Any],
                 marks: list[Any] | None = None) -> list[FundingRecord] | None:
    """A history page's records, oldest first, from its columns (epoch-millisecond times,
    rates, optionally mark prices) checked a column at a time; None when any value fails a
    check, and the caller reads the page record by record (``time_field``,
    ``decimal_field``), which gives the same records or raises ``MalformedField`` naming
    the value. A time passes if the page's are all JSON integers or all digit strings,
    within ``EARLIEST_MS``..``LATEST_MS``; a number if the column is all strings that read
    as finite numbers within ``MAX_MAGNITUDE``: exactly what the per-field readers accept
    (a blank mark price, which they read as absent, sends the page to them)."""
    ms = _page_ms(times)
    rate_numbers = _page_decimals(rates)
    mark_numbers = repeat(None) if marks is None else _page_decimals(marks)
    if ms is None or rate_numbers is None or mark_numbers is None:
        return None
    # Built in C (map, zip, the tuple constructor), not through FundingRecord's __new__:
    # this runs for every record of a cold scan's ~10,000.
    records = list(map(_NEW_RECORD, zip(repeat(venue), repeat(symbol), _moments(ms),
                                        rate_numbers, mark_numbers)))
    if ms != sorted(ms):  # Bybit and OKX send newest first
        records.sort(key=_FUNDING_TIME)
    return records


_NEW_RECORD = partial(tuple.__new__, FundingRecord)


def _page_ms(values: list[Any]) -> list[int] | None:
    """A column of epoch-millisecond times, or None where ``time_field`` would take one
    record at a time (an empty page too: nothing to gain)."""
    kinds = set(map(type, values))
    if kinds == {int}:  # JSON integers; bool is a type of its own
        ms = values
    elif kinds == {str}:
        try:
            # int() reads what int_field reads from a string (digits, sign, underscores,
            # surrounding blanks) to the same value; anything else raises.
            ms = list(map(int, values))
        except ValueError:
            return None
    else:
        return None
    return ms if min(ms) >= EARLIEST_MS and max(ms) < LATEST_MS else None


def _page_decimals(values: list[Any]) -> list[Decimal] | None:
    """A column of numbers sent as strings, or None where ``_decimal`` would take one
    record at a time."""
    if set(map(type, values)) != {str}:
        return None
    try:
        numbers = list(map(Decimal, values))
    except InvalidOperation:
        return None
    # Finite first (an infinity's or NaN's adjusted() is 0), then below 10^MAX_EXPONENT
    # by the exponent alone (a number of exactly MAX_MAGNITUDE goes the slow way).
    if all(map(Decimal.is_finite, numbers)) and \
            max(map(Decimal.adjusted, numbers)) < MAX_EXPONENT:
        return numbers
    return None


def _moments(ms: list[int]) -> list[datetime]:
    """``from_ms`` of each time, the cached ones looked up without a Python call each."""
    moments = list(map(_MOMENT_OF_MS.get, ms))
    return moments if None not in moments else list(map(from_ms, ms))


def best_bid_ask(record: dict[str, Any], bid_name: str, ask_name: str) -> tuple[Decimal, Decimal]:
    """The best bid and ask of a book record: both present and positive, the bid not above
    the ask (equal is a locked book, still two-sided). The one rule every venue's books
    follow; anything else is a ``MalformedField`` that skips the symbol."""
    bid = decimal_field(record, bid_name)
    ask = decimal_field(record, ask_name)
    if bid <= 0 or ask <= 0:
        raise MalformedField(bid_name, bid, f"empty book (bid {bid:f}, ask {ask:f})")
    if bid > ask:
        raise MalformedField(bid_name, bid, f"crossed book (bid {bid:f} > ask {ask:f})")
    return bid, ask


# Settlement instants recur across symbols and scans (a cold scan reads ~10,000 records at
# ~200 distinct instants): each is converted once, and the datetime handed out maps back to
# its milliseconds by a lookup (the history paging and cache read every record's time).
# Caches only: cleared whole when full, shared by threads (each step is one dict operation).
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_CACHED_MOMENTS = 1 << 16
_MOMENT_OF_MS: dict[int, datetime] = {}
_MS_OF_MOMENT: dict[datetime, int] = {}


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds, the unit every supported venue's timestamps use (a fraction of a
    millisecond dropped)."""
    ms = _MS_OF_MOMENT.get(moment)
    if ms is not None:
        return ms
    if moment.tzinfo is None:  # local time, as datetime.timestamp() reads it
        return int(moment.timestamp() * 1000)
    # In integers: through a float, 1970-01-02 13:00:00.001 came out as ...000, one
    # millisecond early, and paging by it asked for the same settlement again.
    return (moment - _EPOCH) // _ONE_MS


def from_ms(ms: int) -> datetime:
    """A venue's epoch-millisecond timestamp as an aware UTC datetime."""
    moment = _MOMENT_OF_MS.get(ms)
    if moment is None:
        if len(_MOMENT_OF_MS) >= _CACHED_MOMENTS:
            _MOMENT_OF_MS.clear()
            _MS_OF_MOMENT.clear()
        moment = _MOMENT_OF_MS[ms] = datetime.fromtimestamp(ms / 1000, UTC)
        _MS_OF_MOMENT[moment] = ms
    return moment
