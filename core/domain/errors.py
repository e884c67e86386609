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


class PluginError(PerpcarryError):
    """A plugin failed to load or clashes with another plugin."""

    exit_code = 2


class CacheError(PerpcarryError):
    """A local cache file cannot be used: the message names the file and why."""


class VenueError(PerpcarryError):
    """A venue could not answer. ``venue`` names it; the message says why."""

    def __init__(self, venue: str, message: str) -> None:
        super().__init__(f"{venue}: {message}")
        self.venue = venue


class NetworkError(VenueError):
    pass


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
    """The venue answered with something that cannot be parsed."""


# -- the order path ------------------------------------------------------------------------


class InsufficientFunds(VenueError):
    """Not enough balance or margin for the order."""


class InvalidOrder(VenueError):
    """The venue refused the order's terms: precision, min notional, max quantity, a
    reduce-only order that would open. Checked before sending, so reaching the venue with
    one is a bug of ours."""


class OrderNotFound(VenueError):
    """The venue does not know the order (where a call needs it to exist, e.g. cancel)."""


class DuplicateClientOrderId(VenueError):
    """The venue already has an order with this client order id."""


class OutcomeUnknown(VenueError):
    """A request that may have changed state got no clear answer (a timeout, a 5xx, an
    "unknown status"): the order may or may not exist. Query it by client id; never re-send
    blind."""


class ClockSkew(VenueError):
    """The venue refused the request's timestamp (outside its receive window): nothing was
    executed. Resync the clock offset, then the same request (same client id) may be sent."""
