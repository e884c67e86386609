"""The account and order half of a venue, in one file a plugin author reads.

A venue that trades implements :class:`OrderVenue` (ccxt plugins inherit it from the ccxt
base and override only where their venue differs) and declares :class:`OrderCapabilities`
in its ``VenueSpec``.
Executors, ``perpcarry account`` and the paper venue use nothing else.

The rules every implementation follows:

- Quantities cross this interface in **base units**, as ``Decimal``. Where a perp trades in
  contracts (OKX swaps) the implementation converts with the market's ``contract_size``;
  :func:`to_order_units` does it and refuses a quantity that is not a whole number of steps.
- Every order carries a **client order id the caller supplies** (:func:`client_order_id`
  makes them). It is the idempotency key the journal writes before sending; the venue
  never generates its own, and an id is never reused.
- A request that may have changed state and got no clear answer (a timeout, a 5xx, an
  "unknown status") raises ``OutcomeUnknown``; the caller then asks :meth:`fetch_order`
  by client id (see :func:`resolve_outcome`) and never re-sends blind.
- "Not found" is a result (``None``), not an error.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol, runtime_checkable

from perpcarry.domain.errors import (
    ExchangeUnavailable,
    InvalidOrder,
    NetworkError,
    OutcomeUnknown,
    RateLimitError,
)
from perpcarry.domain.types import Market, MarketKind

# -- client order ids ----------------------------------------------------------------------

# OKX clOrdId allows 1-32 letters and digits; Binance newClientOrderId and Bybit orderLinkId
# allow 36 characters of a wider set. One format valid everywhere: the narrowest.
CLIENT_ORDER_ID_MAX = 32
CLIENT_ORDER_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
CLIENT_ORDER_ID_PREFIX = "pc"
INTENT_ID = re.compile(r"^[A-Za-z0-9]{1,20}$")


class Leg(StrEnum):
    SPOT = "s"
    PERP = "p"


def client_order_id(intent_id: str, leg: Leg, slice_index: int, attempt: int, *,
                    unwind: bool = False) -> str:
    """The client order id of one order of an intent: deterministic, so a restarted process
    derives the same id from the journal, and venue-valid (letters and digits, at most 32).

    ``intent_id`` is the journal's id of the intent (1-20 letters and digits, unique per
    account set); ``slice_index`` < 1000 and ``attempt`` < 100 (a new attempt is only made
    once the previous one is proven absent); ``unwind`` marks an order that takes back an
    unhedged excess rather than building or closing the position."""
    if not INTENT_ID.match(intent_id):
        raise ValueError(f"intent id {intent_id!r}: 1-20 letters and digits")
    if not (0 <= slice_index < 1000 and 0 <= attempt < 100):
        raise ValueError(f"slice {slice_index} / attempt {attempt} out of range")
    purpose = "u" if unwind else "e"
    return (f"{CLIENT_ORDER_ID_PREFIX}{intent_id}{leg.value}{purpose}"
            f"{slice_index:03d}{attempt:02d}")


def check_client_order_id(value: str) -> str:
    """``value`` if it is valid on every venue, else ``InvalidOrder``."""
    if not CLIENT_ORDER_ID.match(value):
        raise InvalidOrder("", f"client order id {value!r}: 1-32 letters and digits")
    return value


# -- orders --------------------------------------------------------------------------------


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class TimeInForce(StrEnum):
    """For limit orders: fill what crosses now and cancel the rest, or rest as maker only."""

    IOC = "ioc"
    POST_ONLY = "post_only"


class OrderStatus(StrEnum):
    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        """No further fill can happen."""
        return self in {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED,
                        OrderStatus.EXPIRED}


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """One order as the caller wants it; ``quantity`` in base units."""

    market: Market
    side: Side
    quantity: Decimal
    client_order_id: str
    type: OrderType = OrderType.MARKET
    price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    reduce_only: bool = False

    def __post_init__(self) -> None:
        check_client_order_id(self.client_order_id)
        if self.type is OrderType.LIMIT and (self.price is None or self.time_in_force is None):
            raise InvalidOrder(self.market.venue, "a limit order needs a price and IOC or "
                               "post-only")
        if self.type is OrderType.MARKET and self.price is not None:
            raise InvalidOrder(self.market.venue, "a market order takes no price")
        if self.reduce_only and self.market.kind is not MarketKind.PERP:
            raise InvalidOrder(self.market.venue, "reduce-only applies to perps only")


@dataclass(frozen=True, slots=True)
class Fee:
    """A fee as charged: ``currency`` may be the quote, the base (Binance spot buys) or a
    third asset (BNB)."""

    amount: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class OrderState:
    """What the venue says of one order. Quantities in base units."""

    venue: str
    symbol: str
    base: str
    client_order_id: str
    venue_order_id: str | None
    side: Side
    type: OrderType
    status: OrderStatus
    quantity: Decimal
    filled_quantity: Decimal
    average_price: Decimal | None
    fees: tuple[Fee, ...]
    reduce_only: bool
    created_at: datetime | None
    updated_at: datetime | None
    # Where a simulated fill's price came from ("book ask", "mark+2bps"); None from a
    # live venue, whose fills are real.
    price_source: str | None = None
    # The venue's answer carried no fee and reading it costs another request: ``fees`` is
    # empty until the order is queried again. Only where no fee can be taken in base (a
    # linear perp), so ``delivered_quantity`` is already exact.
    fees_pending: bool = False

    @property
    def base_fee(self) -> Decimal:
        """The part of the fees charged in the base asset."""
        return sum((f.amount for f in self.fees if f.currency == self.base), Decimal(0))

    @property
    def delivered_quantity(self) -> Decimal:
        """Base actually gained (buy) or given up (sell): the fill, less fees taken in base
        on a buy (a spot buy on Binance delivers the fill minus its fee)."""
        if self.side is Side.BUY:
            return self.filled_quantity - self.base_fee
        return self.filled_quantity + self.base_fee


# -- account -------------------------------------------------------------------------------


class Wallet(StrEnum):
    SPOT = "spot"
    FUTURES = "futures"  # Binance USDⓈ-M
    UNIFIED = "unified"  # Bybit UTA, OKX trading account
    FUNDING = "funding"


class MarginMode(StrEnum):
    CROSS = "cross"
    ISOLATED = "isolated"


@dataclass(frozen=True, slots=True)
class Balance:
    currency: str
    free: Decimal
    used: Decimal
    total: Decimal


@dataclass(frozen=True, slots=True)
class PerpPosition:
    """An open perp position; fields the venue does not report are None, never zero."""

    venue: str
    symbol: str
    side: Side  # SELL: short
    quantity: Decimal  # base units, positive
    entry_price: Decimal | None
    mark_price: Decimal | None
    unrealised_pnl: Decimal | None
    leverage: Decimal | None
    margin_mode: MarginMode | None
    maintenance_margin: Decimal | None
    margin_ratio: Decimal | None
    liquidation_price: Decimal | None

    @property
    def liquidation_distance(self) -> Decimal | None:
        """How far the mark may move before liquidation, as a fraction of the mark."""
        if self.mark_price is None or self.liquidation_price is None or not self.mark_price:
            return None
        return abs(self.liquidation_price - self.mark_price) / self.mark_price


@dataclass(frozen=True, slots=True)
class Transfer:
    venue: str
    transfer_id: str | None
    currency: str
    amount: Decimal
    from_wallet: Wallet
    to_wallet: Wallet
    time: datetime | None


@dataclass(frozen=True, slots=True)
class FundingPayment:
    """One funding settlement on the account: positive ``amount`` is received."""

    venue: str
    symbol: str
    amount: Decimal
    currency: str
    time: datetime
    payment_id: str


@dataclass(frozen=True, slots=True)
class OrderCapabilities:
    """What the order half of a venue declares; core reads it instead of probing."""

    wallets: tuple[Wallet, ...]
    # Spot and perp margin live in different wallets (Binance spot and USDⓈ-M): margin for a
    # short must be transferred first.
    separate_wallets: bool
    client_order_id_max: int = CLIENT_ORDER_ID_MAX
    post_only: bool = True
    ioc: bool = True
    sandbox: bool = False


@runtime_checkable
class OrderVenue(Protocol):
    """The account and order half of a venue."""

    venue_id: str

    async def place_order(self, request: OrderRequest) -> OrderState:
        """Send ``request`` once. Rejections raise ``InvalidOrder``, ``InsufficientFunds``
        or ``DuplicateClientOrderId``; an unclear outcome raises ``OutcomeUnknown`` (never
        retried here)."""

    async def fetch_order(self, market: Market, client_order_id: str) -> OrderState | None:
        """The order's state by client id; None when the venue does not know it."""

    async def cancel_order(self, market: Market, client_order_id: str) -> OrderState | None:
        """Cancel by client id; the order's state afterwards (it may have filled first);
        None when the venue does not know it."""

    async def fetch_open_orders(self, market: Market | None = None) -> list[OrderState]:
        """Open orders of one market, or of every market (one bulk request per kind)."""

    async def fetch_recent_orders(self, market: Market, since: datetime | None = None
                                  ) -> list[OrderState]:
        """Recent orders of one market, open and closed, newest last."""

    async def fetch_balances(self) -> dict[Wallet, dict[str, Balance]]:
        """Balances per wallet the venue has."""

    async def fetch_positions(self) -> list[PerpPosition]:
        """Every open perp position (one bulk request)."""

    async def setup_account(self, market: Market, leverage: Decimal,
                            margin_mode: MarginMode = MarginMode.CROSS) -> None:
        """One-way position mode, ``margin_mode`` and ``leverage`` for ``market``;
        idempotent (a setting already in place is not an error)."""

    async def transfer(self, currency: str, amount: Decimal, from_wallet: Wallet,
                       to_wallet: Wallet) -> Transfer:
        """Move funds between wallets; only where ``separate_wallets`` is declared."""

    async def fetch_funding_payments(self, since: datetime, until: datetime | None = None
                                     ) -> list[FundingPayment]:
        """Funding received and paid in [since, until], all pages, oldest first."""


# -- quantities ----------------------------------------------------------------------------


def to_order_units(market: Market, base_quantity: Decimal) -> Decimal:
    """``base_quantity`` in the market's order unit (contracts where ``contract_size`` is not
    1), refused with ``InvalidOrder`` unless it is a positive whole number of steps."""
    if base_quantity <= 0:
        raise InvalidOrder(market.venue, f"{market.symbol}: quantity {base_quantity} is not "
                           "positive")
    units = base_quantity / market.contract_size
    if units % market.quantity_step:
        step = market.quantity_step * market.contract_size
        raise InvalidOrder(market.venue, f"{market.symbol}: {base_quantity} {market.base} is "
                           f"not a multiple of the step {step}")
    return units


def check_order_size(market: Market, base_quantity: Decimal, reference_price: Decimal | None,
                     order_type: OrderType = OrderType.MARKET) -> Decimal:
    """The order quantity in order units, after every rule the venue publishes for
    ``market``: whole steps, minimum quantity, maximum (market-order maximum for market
    orders) and minimum notional at ``reference_price``. A violation is ``InvalidOrder``
    naming the rule, so a precision or size reject from the venue cannot happen. Without a
    ``reference_price`` (a market order sent by a venue client that has no price) the
    notional rule is left to the venue, which prices the order at its fill."""
    units = to_order_units(market, base_quantity)
    if units < market.min_quantity:
        raise InvalidOrder(market.venue, f"{market.symbol}: {units} is below the minimum "
                           f"quantity {market.min_quantity}")
    maximum = market.max_quantity
    if order_type is OrderType.MARKET and market.max_market_quantity is not None:
        maximum = market.max_market_quantity
    if maximum is not None and units > maximum:
        raise InvalidOrder(market.venue, f"{market.symbol}: {units} is above the maximum "
                           f"quantity {maximum} per {order_type.value} order")
    if reference_price is None or market.min_notional is None:
        return units
    notional = base_quantity * reference_price
    if notional < market.min_notional:
        raise InvalidOrder(market.venue, f"{market.symbol}: notional {notional} is below the "
                           f"minimum {market.min_notional}")
    return units


def floor_to_step(market: Market, base_quantity: Decimal) -> Decimal:
    """The largest base quantity not above ``base_quantity`` that is a whole number of the
    market's steps."""
    step = market.quantity_step * market.contract_size
    return (base_quantity // step) * step


# -- outcome unknown -----------------------------------------------------------------------


async def resolve_outcome(venue: OrderVenue, market: Market, client_id: str, *,
                          sleep: Callable[[float], Awaitable[None]],
                          delays: tuple[float, ...] = (0.2, 0.5, 1, 2, 4, 8)
                          ) -> OrderState | None:
    """After ``OutcomeUnknown``: query the client id until the venue answers. An order found
    is returned; None means the venue answered "not found" at every query over the whole
    backoff (proven absent, so a new attempt may be sent under a new id). A query that
    itself fails keeps the outcome unknown: ``OutcomeUnknown`` is raised once the delays are
    used up, and nothing may be re-sent."""
    unanswered = 0
    for delay in (0.0, *delays):
        if delay:
            await sleep(delay)
        try:
            state = await venue.fetch_order(market, client_id)
        except (OutcomeUnknown, NetworkError, ExchangeUnavailable, RateLimitError):
            unanswered += 1
            continue
        if state is not None:
            return state
    if unanswered:
        raise OutcomeUnknown(venue.venue_id, f"order {client_id}: no answer to "
                             f"{unanswered} of {len(delays) + 1} queries; outcome still unknown")
    return None
