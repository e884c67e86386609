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
