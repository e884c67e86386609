"""ccxt's exceptions translated into perpcarry's: the one place this happens.

``CCXT_ERRORS`` is the table: every exception class of ccxt 4.5's ``ccxt.base.errors``, the
perpcarry type it becomes and the phrase its message starts with. A class ccxt adds later
maps as its nearest listed ancestor. Two things refine the table: the transport failure
under a ccxt network error (DNS, connection refused, TLS, timeout), which names the cause,
and whether the request was idempotent: a state-changing request that failed after it may
have reached the venue is ``OutcomeUnknown``, never a plain network error.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from http import HTTPStatus
from urllib.parse import urlsplit

from perpcarry.domain.errors import (
    AuthenticationError,
    BadSymbol,
    ClockSkew,
    DuplicateClientOrderId,
    ExchangeUnavailable,
    InsufficientFunds,
    InvalidOrder,
    InvalidResponse,
    NetworkError,
    OrderNotFound,
    OutcomeUnknown,
    RateLimitError,
    RequestRejected,
    RequestTimedOut,
    VenueError,
)
from perpcarry.domain.parsing import MalformedField

CCXT_ERRORS: dict[str, tuple[type[VenueError], str]] = {
    "BaseError": (RequestRejected, "venue error"),
    # The venue answered and said no.
    "ExchangeError": (RequestRejected, "the venue refused the request"),
    "AuthenticationError": (AuthenticationError, "authentication failed"),
    "PermissionDenied": (AuthenticationError, "permission denied"),
    "AccountNotEnabled": (AuthenticationError, "account not enabled for this"),
    "AccountSuspended": (AuthenticationError, "account suspended"),
    "ArgumentsRequired": (RequestRejected, "missing argument"),
    "BadRequest": (RequestRejected, "bad request"),
    "BadSymbol": (BadSymbol, "bad symbol"),
    "OperationRejected": (RequestRejected, "operation rejected"),
    "NoChange": (RequestRejected, "nothing to change"),
    "MarginModeAlreadySet": (RequestRejected, "margin mode already set"),
    "MarketClosed": (RequestRejected, "market closed"),
    "ManualInteractionNeeded": (RequestRejected, "manual interaction needed on the venue"),
    "RestrictedLocation": (AuthenticationError, "not available from this location"),
    "InsufficientFunds": (InsufficientFunds, "insufficient funds or margin"),
    "InvalidAddress": (RequestRejected, "invalid address"),
    "AddressPending": (RequestRejected, "address pending"),
    "InvalidOrder": (InvalidOrder, "invalid order"),
    "OrderNotFound": (OrderNotFound, "order not found"),
    "OrderNotCached": (OrderNotFound, "order not found"),
    "OrderImmediatelyFillable": (InvalidOrder, "post-only order would have taken liquidity, "
                                               "not placed"),
    "OrderNotFillable": (InvalidOrder, "order cannot be filled"),
    "DuplicateOrderId": (DuplicateClientOrderId, "duplicate client order id"),
    "ContractUnavailable": (InvalidOrder, "contract unavailable"),
    "NotSupported": (RequestRejected, "not supported"),
    "InvalidProxySettings": (RequestRejected, "invalid proxy settings"),
    "ExchangeClosedByUser": (NetworkError, "connection closed"),
    # The request did not get a usable answer.
    "OperationFailed": (ExchangeUnavailable, "the venue failed to process the request"),
    "NetworkError": (NetworkError, "network error"),
    "DDoSProtection": (RateLimitError, "rate limited"),
    "RateLimitExceeded": (RateLimitError, "rate limited"),
    "ExchangeNotAvailable": (ExchangeUnavailable, "exchange unavailable or in maintenance"),
    "OnMaintenance": (ExchangeUnavailable, "exchange unavailable or in maintenance"),
    # Binance -1021: the request's timestamp is outside recvWindow.
    "InvalidNonce": (ClockSkew, "request timestamp refused, not executed (is the system clock "
                                "right?)"),
    "ChecksumError": (InvalidResponse, "order book checksum mismatch"),
    "RequestTimeout": (RequestTimedOut, "request timed out"),
    "BadResponse": (InvalidResponse, "invalid response"),
    "NullResponse": (InvalidResponse, "empty response"),
    "CancelPending": (RequestRejected, "cancel already pending"),
    "UnsubscribeError": (RequestRejected, "unsubscribe failed"),
}

# A venue saying it cannot tell whether the request took effect (Binance -1006 and -1007,
# "Send status unknown; execution status unknown"). ccxt maps -1007 to RequestTimeout,
# ExchangeError or BadResponse depending on the market type, so the text decides.
_STATUS_UNKNOWN = re.compile(r"execution status unknown", re.IGNORECASE)
# ccxt's message for an HTTP error status: "{id} {method} {url} {code} {reason} {body}".
_HTTP_STATUS = re.compile(
    r"^\S+ (?:GET|POST|PUT|DELETE|PATCH) (?P<url>https?://\S+) (?P<code>\d{3}) ?(?P<rest>.*)$")
_URL = re.compile(r"\bhttps?://[^\s?\"']+(\?[^\s\"']*)?")
_SIGNED = re.compile(r"\b(signature|sign|timestamp|recvWindow|apiKey)=[^&\s\"']*", re.IGNORECASE)

# A signed request's query (Binance puts it in the URL, which ccxt quotes in its messages).


def translate_ccxt_error(
    venue: str,
    exc: Exception,
    headers: dict[str, str] | None,
    *,
    idempotent: bool = True,
) -> VenueError:
    """Map a ccxt exception (or a parse error met while reading a response) to perpcarry's
    error types, with a one-line message that names the cause and carries no query string.

    With ``idempotent=False`` (a state-changing request), a failure after which the venue
    may have acted is ``OutcomeUnknown``."""
    import ccxt

    text = redact(_first_line(exc))
    if not isinstance(exc, ccxt.BaseError):  # ValueError, KeyError, ... from parsing
        error_type: type[VenueError] = InvalidResponse
        phrase = "invalid response" if isinstance(exc, MalformedField) else \
            f"invalid response: {type(exc).__name__}"
        maybe_sent = True
    else:
        error_type, phrase = _table_entry(type(exc))
        maybe_sent = issubclass(error_type, NetworkError | ExchangeUnavailable | InvalidResponse)
        transport = _transport_cause(exc)
        status = _HTTP_STATUS.match(text)
        if transport is not None:
            phrase, maybe_sent = transport
            error_type = RequestTimedOut if phrase == "request timed out" else NetworkError
            text = _request_of(text)
        elif status is not None:
            text, code = _http_failure(status)
            # 5xx and 408: the venue (or a gateway before it) may have acted; 4xx: it did not.
            maybe_sent = code >= 500 or code == 408
    if _STATUS_UNKNOWN.search(text):
        error_type, phrase, maybe_sent = NetworkError, "the venue's backend did not answer", True
    if error_type is RateLimitError or isinstance(exc, _refused_unprocessed()):
        maybe_sent = False
    if not idempotent and maybe_sent:
        return OutcomeUnknown(venue, f"outcome unknown, query the venue before sending again "
                                     f"({phrase}: {text})")
    message = f"{phrase}: {text}" if text else phrase
    if error_type is RateLimitError:
        return RateLimitError(venue, message, _retry_after(headers))
    return error_type(venue, message)


def _refused_unprocessed() -> tuple[type, ...]:
    """ccxt's network errors a venue answers before it processes anything: a rate limit,
    and a request timestamp outside its window (Binance -1021)."""
    import ccxt

    return ccxt.DDoSProtection, ccxt.InvalidNonce


def _table_entry(cls: type) -> tuple[type[VenueError], str]:
    for ancestor in cls.__mro__:
        if ancestor.__name__ in CCXT_ERRORS and ancestor.__module__ == "ccxt.base.errors":
            return CCXT_ERRORS[ancestor.__name__]
    return CCXT_ERRORS["BaseError"]


def _transport_cause(exc: BaseException) -> tuple[str, bool] | None:
    """What failed under a ccxt network error, from the aiohttp/asyncio exception ccxt
    raised it from (DNS, connection refused, TLS, timeout, a dropped connection), and
    whether the request may have reached the venue: a connection never made sent nothing."""
    import aiohttp

    cause = exc.__cause__
    if cause is None:
        return None
    if isinstance(cause, asyncio.TimeoutError):
        return "request timed out", True
    if isinstance(cause, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup failed for {cause.host}", False
    if isinstance(cause, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate of {cause.host} not trusted", False
    if isinstance(cause, aiohttp.ClientSSLError) or isinstance(
            getattr(cause, "os_error", None), ssl.SSLError):
        return f"TLS handshake with {cause.host} failed", False
    if isinstance(cause, aiohttp.ClientConnectorError):
        if isinstance(cause.os_error, ConnectionRefusedError):
            return f"connection refused by {cause.host}:{cause.port}", False
        return f"cannot connect to {cause.host}:{cause.port} ({cause.os_error})", False
    if isinstance(cause, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "the venue closed the connection before answering", True
    if isinstance(cause, aiohttp.ClientError | OSError):
        return f"connection failed ({type(cause).__name__})", True
    return None


def _http_failure(status: re.Match) -> tuple[str, int]:
    """ccxt's HTTP error message as ``HTTP 503 Service Unavailable from host/path`` with a
    short excerpt of the body; and the status code."""
    code = int(status["code"])
    try:
        reason = HTTPStatus(code).phrase
    except ValueError:
        reason = ""
    body = status["rest"].removeprefix(reason).strip()
    url = urlsplit(status["url"])
    text = f"HTTP {code} {reason}".rstrip() + f" from {url.netloc}{url.path}"
    if body.startswith("<"):
        text += " (an HTML page)"
    elif body:
        text += f": {body[:120]}"
    return text, code


def _request_of(text: str) -> str:
    """``binance GET https://host/path`` (ccxt's message for a transport failure) as
    ``GET host/path``."""
    match = re.search(r"\b(GET|POST|PUT|DELETE|PATCH) https?://(\S+)", text)
    return f"{match.group(1)} {match.group(2)}" if match else text


def endpoint_path(url: str) -> str:
    """The path of a URL, what an error message names (never the query)."""
    return urlsplit(url).path


def redact(text: str) -> str:
    """``text`` without query strings (a signed request's ``timestamp=...&signature=...``)
    or any signing parameter's value."""
    text = _URL.sub(lambda m: m.group(0).split("?", 1)[0], text)
    return _SIGNED.sub(lambda m: f"{m.group(1)}=<redacted>", text)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _retry_after(headers: dict[str, str] | None) -> float | None:
    for key, value in (headers or {}).items():
        if key.lower() == "retry-after":
            try:
                return float(value)
            except ValueError:
                return None
    return None
