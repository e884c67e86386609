"""The request layer of the order half over ccxt: credentials, the send-once path of
state-changing calls and the retried path of queries, and the readers of ccxt's numbers.

- queries (order state, balances, positions, funding) are idempotent: they go through the
  base's retry helper; a Binance-style "timestamp outside recvWindow" resyncs the clock
  offset and is retried once.
- state-changing calls (place, cancel, transfer, account settings) are sent exactly once by
  :meth:`CcxtRequests._send_once`: a timeout, a 5xx, an unparseable answer or an "unknown
  status" code becomes ``OutcomeUnknown``, never a retry.
"""

from __future__ import annotations

import json
import re
from abc import ABC
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from loguru import logger

from perpcarry.config.settings import ENV_PREFIX
from perpcarry.domain.errors import (
    AuthenticationError,
    ClockSkew,
    ConfigError,
)
from perpcarry.domain.types import MarketKind

# ccxt's "<id> <METHOD> <url> <status> <reason> <body>" of an HTTP error: a 4xx status means
# the venue answered and refused, so the request did not execute.
_HTTP_STATUS = re.compile(r" (\d{3}) ")


def dec(value: Any) -> Decimal | None:
    """A ccxt number (float, str or None) as ``Decimal``; ``repr`` of a float parsed from a
    venue's decimal string gives that string back (up to 15 significant digits)."""
    if value is None or value == "":
        return None
    return Decimal(str(value))


def ms_to_datetime(value: Any) -> datetime | None:
    """A venue's epoch milliseconds (int or str) as a UTC time; None when absent."""
    return None if value in (None, "") else datetime.fromtimestamp(int(value) / 1000, UTC)


def error_body(exc: Exception) -> dict[str, Any] | None:
    """The venue's JSON error body that ccxt puts after the exchange id in its message."""
    text = str(exc)
    start = text.find("{")
    if start < 0:
        return None
    try:
        body = json.loads(text[start:])
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class CcxtRequests(ABC):
    """Mixed into a ``CcxtVenue`` subclass: uses the base's ``exchange``, ``budgets``,
    ``_translated``, ``_with_retries`` and ``config``."""

    # Request budget of the order and account calls of each market kind.
    order_budgets: ClassVar[dict[MarketKind, str]]
    # One sentence naming what to enable when a key lacks derivatives permission.
    derivatives_permission: ClassVar[str]

    exchange: Any
    budgets: Any
    config: Any
    venue_id: str
    request_count: int
    _translated: Any
    _with_retries: Any

    def _require_credentials(self) -> None:
        if not self.config.has_credentials:
            names = " and ".join(
                f"{ENV_PREFIX}VENUES__{self.venue_id.upper()}__{n.upper()}"
                for n in self.config.required_credentials)
            raise ConfigError(f"{self.venue_id}: account and order calls need API "
                              f"credentials: set {names} (or the keys in [venues."
                              f"{self.venue_id}])")

    async def _send_once(self, what: str, budget: str, call: Callable[[], Awaitable[Any]],
                         weight: int = 1) -> Any:
        """A state-changing request, sent exactly once (the base's request path with
        ``idempotent=False``): a timeout, a network failure or 5xx after sending, an
        unparseable answer or the venue's own "status unknown" raise ``OutcomeUnknown``; the
        caller queries by client id, it never re-sends."""
        self._require_credentials()
        return await self._with_retries(what, weight, budget, call, idempotent=False)

    async def _query(self, what: str, budget: str, call: Callable[[], Awaitable[Any]],
                     weight: int = 1) -> Any:
        """An idempotent query with the base's retries; a rejected timestamp resyncs ccxt's
        clock offset and is retried once."""
        self._require_credentials()
        try:
            return await self._with_retries(what, weight, budget, call)
        except ClockSkew:
            await self._resync_clock()
            return await self._with_retries(what, weight, budget, call)

    async def _resync_clock(self) -> None:
        """ccxt's offset to the venue's clock, read from the venue's time endpoint."""
        async with self._translated("load_time_difference"):
            offset = await self.exchange.load_time_difference()
        logger.warning("{}: request timestamp rejected; clock offset resynced to {} ms",
                       self.venue_id, offset)

    async def _derivatives(self, what: str, budget: str, call: Callable[[], Awaitable[Any]],
                           weight: int = 1, *, send_once: bool = False) -> Any:
        """A derivatives-account call; a key without that permission is one sentence saying
        what to enable."""
        send = self._send_once if send_once else self._query
        try:
            return await send(what, budget, call, weight)
        except AuthenticationError as err:
            raise AuthenticationError(
                self.venue_id, f"{what} refused: {self.derivatives_permission}") from err
