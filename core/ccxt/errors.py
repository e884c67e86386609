"""ccxt's exceptions translated into perpcarry's: the one place this happens."""

from __future__ import annotations

import re

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
    RateLimitError,
    VenueError,
)

# A signed request's query (Binance puts it in the URL, which ccxt quotes in its messages).
_SIGNED_QUERY = re.compile(r"\?[^ ]*(signature|sign)=[^ ]*")


def translate_ccxt_error(venue: str, exc: Exception, headers: dict[str, str] | None) -> VenueError:
    """Map a ccxt exception to perpcarry's error types. The one place this happens."""
    import ccxt

    text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    text = _SIGNED_QUERY.sub("?<signed query>", text)
    order_error = _order_error(venue, exc, text)
    if order_error is not None:
        return order_error
    # Order matters: ccxt's hierarchy nests these (RateLimitExceeded < DDoSProtection <
    # NetworkError; OnMaintenance < ExchangeNotAvailable < NetworkError).
    if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
        retry_after = None
        for key, value in (headers or {}).items():
            if key.lower() == "retry-after":
                try:
                    retry_after = float(value)
                except ValueError:
                    retry_after = None
        return RateLimitError(venue, f"rate limited: {text}", retry_after)
    if isinstance(exc, ccxt.ExchangeNotAvailable):
        return ExchangeUnavailable(venue, f"exchange unavailable or in maintenance: {text}")
    if isinstance(exc, ccxt.RequestTimeout | ccxt.NetworkError):
        return NetworkError(venue, f"network error: {text}")
    if isinstance(exc, ccxt.OperationFailed):  # e.g. Binance -1001 "internal error"
        return ExchangeUnavailable(venue, f"exchange failed to process the request: {text}")
    if isinstance(exc, ccxt.AuthenticationError | ccxt.PermissionDenied | ccxt.AccountSuspended):
        return AuthenticationError(venue, f"authentication failed: {text}")
    if isinstance(exc, ccxt.BadSymbol):
        return BadSymbol(venue, f"bad symbol: {text}")
    if isinstance(exc, ccxt.BadResponse | ccxt.NullResponse):
        return InvalidResponse(venue, f"invalid response: {text}")
    if isinstance(exc, ccxt.ExchangeError):
        return InvalidResponse(venue, f"exchange error: {text}")
    if isinstance(exc, ValueError | KeyError | TypeError):  # JSONDecodeError included
        return InvalidResponse(venue, f"invalid response: {type(exc).__name__}: {text}")
    return NetworkError(venue, f"{type(exc).__name__}: {text}")


# -- the order path (separate block: the lead folds it into the table) --------------------


def _order_error(venue: str, exc: Exception, text: str) -> VenueError | None:
    """ccxt's order-path exceptions as perpcarry's; None for the rest. Checked first:
    ccxt nests them under its generic classes (DuplicateOrderId < InvalidOrder <
    ExchangeError, InvalidNonce < ExchangeError)."""
    import ccxt

    if isinstance(exc, ccxt.InvalidNonce):
        return ClockSkew(venue, f"request timestamp refused, not executed: {text}")
    if isinstance(exc, ccxt.DuplicateOrderId):
        return DuplicateClientOrderId(venue, f"client order id already used: {text}")
    if isinstance(exc, ccxt.OrderNotFound):
        return OrderNotFound(venue, f"order not found: {text}")
    if isinstance(exc, ccxt.InsufficientFunds):
        return InsufficientFunds(venue, f"insufficient balance or margin: {text}")
    if isinstance(exc, ccxt.OrderImmediatelyFillable):  # e.g. Binance spot LIMIT_MAKER
        return InvalidOrder(venue, f"post-only order would have taken liquidity, not "
                            f"placed: {text}")
    if isinstance(exc, ccxt.InvalidOrder):
        return InvalidOrder(venue, f"order refused: {text}")
    return None
