"""The one exception hierarchy of perpcarry.

Anything a user caused (config, arguments, credentials) is a ``PerpcarryError`` whose
message is one readable line; the CLI prints it and exits with ``exit_code``.
"""

from __future__ import annotations


class PerpcarryError(Exception):
    exit_code = 1


class ConfigError(PerpcarryError):
    """Bad configuration: the message names the file or env var and the field."""

    exit_code = 2


class UsageError(PerpcarryError):
    """Bad command-line arguments."""

    exit_code = 2


class InvalidValue(UsageError):
    """A value core refuses. ``field`` names the setting (``capital``, ``window_days``), in the
    setting's own units; the CLI renames it after the flag or config key that supplied the
    value (see :func:`perpcarry.cli.common.value_names`), scaling bounds for percent flags."""

    def __init__(self, field: str, value: float | int | str | None, *,
                 low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False,
                 rule: str | None = None, kind: str = "a number") -> None:
        self.field, self.value, self.rule, self.kind = field, value, rule, kind
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open
        super().__init__(self.describe(field))

    def describe(self, name: str, scale: float = 1.0) -> str:
        """The message with ``name`` for the field and bounds and value times ``scale``."""
        value = self.value
        if scale != 1 and isinstance(value, float | int):
            value *= scale
        shown = (str(value) if isinstance(value, int) else f"{value:g}"
                 if isinstance(value, float) else repr(value))
        if self.rule is not None:
            return f"{name}: {self.rule}, got {shown}"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'above' if self.low_open else 'at least'} {self.low * scale:g}")
        if self.high is not None:
            bounds.append(f"{'below' if self.high_open else 'at most'} {self.high * scale:g}")
        return f"{name}: must be {self.kind} {' and '.join(bounds)}, got {shown}"


class PluginError(PerpcarryError):
    """A plugin failed to load or clashes with another plugin."""

    exit_code = 2


class LocalStateError(PerpcarryError):
    """A local state file (a paper account) cannot be used: the message names the file,
    why, and how to start it afresh."""


class VenueError(PerpcarryError):
    """A venue could not answer. ``venue`` names it; the message says why."""

    def __init__(self, venue: str, message: str) -> None:
        super().__init__(f"{venue}: {message}")
        self.venue = venue


class NetworkError(VenueError):
    """The request did not get an answer: DNS, connection, TLS, timeout. The message names
    which."""


class RequestTimedOut(NetworkError):
    """The venue did not answer one request within the per-request timeout."""


class NotRecorded(NetworkError):
    """Replaying a recording (``--offline``, tests) met a request the recording lacks."""


class RateLimitError(VenueError):
    def __init__(self, venue: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(venue, message)
        self.retry_after = retry_after


class AuthenticationError(VenueError):
    pass


class ExchangeUnavailable(VenueError):
    """The venue is down or in maintenance."""


class BadSymbol(VenueError):
    pass


class InvalidResponse(VenueError):
    """The venue answered with something that cannot be parsed: an HTML page, an empty or
    truncated body, a malformed field."""


class RequestRejected(VenueError):
    """The venue understood the request and refused it with an error of its own (a code and
    message in its error JSON) that none of the more specific types below names."""


# -- the order path: what placing, cancelling or querying an order can end in --------------


class InsufficientFunds(RequestRejected):
    """Not enough balance or margin for the order; nothing was placed."""


class InvalidOrder(RequestRejected):
    """The venue rejected the order's terms (price or quantity precision, minimum notional,
    maximum quantity, an order type it does not accept); nothing was placed."""


class OrderNotFound(RequestRejected):
    """The venue knows no order with the id or client order id asked about."""


class DuplicateClientOrderId(InvalidOrder):
    """An order with this client order id already exists: the earlier send reached the venue.
    Query that order by its client id instead of placing it again."""


class OutcomeUnknown(VenueError):
    """A state-changing request (place, cancel, transfer, set leverage) may or may not have
    taken effect: a timeout, an HTTP 5xx or a venue saying "execution status unknown" after
    it was sent. Never retried blind; the caller must query the venue (by client order id)
    to learn what happened."""


class ClockSkew(NetworkError):
    """The venue refused the request's timestamp (outside its receive window, Binance
    -1021): nothing was executed. Resync the clock offset; then the same request (same
    client id) may be sent."""
