"""What each carry position earned, from the journal alone: funding received, fees paid,
spread and basis, net PnL, and the APR it realised on the capital it used, against the APR
expected when it was opened. Per position, per venue, and in total; ``Decimal`` throughout.

Everything comes from what the journal recorded: funding payments (:mod:`.sync`) and the
fills of the position's orders. The spread and basis are the legs' own PnL at their fill
prices: for a closed position (spot sold - spot bought) + (perp sold - perp bought back);
for an open one the legs still held are valued at marks the caller gives, or the position
is "not marked". A fee charged in the base is converted at its fill's price; a fee in a
third currency (BNB) is shown in that currency, never converted at an invented price.
See docs/ledger.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from perpcarry.domain.types import decimal_text
from perpcarry.execution.journal import (
    Journal,
    Position,
    PositionFill,
    PositionState,
    RecordedFunding,
)
from perpcarry.venues.orders import Leg, Side

ZERO = Decimal(0)
DAY_SECONDS = Decimal(86_400)
YEAR_DAYS = Decimal(365)
APR_PLACES = Decimal("1e-10")  # an APR as text: a fraction to 10 places

# How a position's spread and basis were found.
REALISED = "realised"  # closed: every leg bought back or sold
MARKED = "marked"  # open: the legs held valued at the caller's marks
NOT_MARKED = "not marked"  # open, and no mark for one of its legs
NOT_DERIVABLE = "not derivable"  # the fills do not account for the legs held


@dataclass(frozen=True, slots=True)
class PositionPnl:
    """One position's earnings, in its quote currency."""

    position_id: str
    venue: str
    base: str
    quote: str
    state: PositionState
    opened_at: datetime
    closed_at: datetime | None
    funding: Decimal
    fees: Decimal  # quote and base fees, converted at the fill price
    unconverted: dict[str, Decimal]  # fees (and funding, as a negative fee) in a third currency
    spread_basis: Decimal | None
    spread_basis_status: str
    net: Decimal | None  # funding - fees + spread_basis
    capital: Decimal | None  # spot bought + perp margin at the position's leverage
    leverage: Decimal | None
    leverage_source: str | None  # "entry" (recorded at open) or "config" ([execution])
    days: Decimal
    realised_apr: Decimal | None  # net / capital / days * 365
    expected_apr: Decimal | None  # recorded at entry; None: unknown
    spot_dust: Decimal  # spot left on a closed position (below one order): not valued

    @property
    def capital_days(self) -> Decimal | None:
        return None if self.capital is None else self.capital * self.days


@dataclass(frozen=True, slots=True)
class VenuePnl:
    """The positions of one venue (or all of them, ``venue`` "total") in one quote currency,
    plus the payments no position held (``unattributed``, part of ``funding``)."""

    venue: str
    quote: str
    positions: int
    funding: Decimal
    unattributed: Decimal
    fees: Decimal
    unconverted: dict[str, Decimal]
    spread_basis: Decimal  # of the positions where it is known
    incomplete: int  # positions whose spread and basis are unknown (left out of net)
    net: Decimal
    realised_apr: Decimal | None  # net / capital-days * 365, complete positions only
    # The APRs expected at entry of the same positions, weighted by capital and days (None
    # when one of them has none recorded): what the realised APR is read against.
    expected_apr: Decimal | None = None

    def as_dict(self) -> dict:
        """What the daily summary and the dashboard read: amounts as decimal strings."""
        return {"venue": self.venue, "quote": self.quote, "positions": self.positions,
                "funding": decimal_text(self.funding),
                "unattributed_funding": decimal_text(self.unattributed),
                "fees": decimal_text(self.fees),
                "unconverted": {k: decimal_text(v) for k, v in self.unconverted.items()},
                "spread_basis": decimal_text(self.spread_basis), "incomplete": self.incomplete,
                "net": decimal_text(self.net),
                "realised_apr": apr_text(self.realised_apr),
                "expected_apr": apr_text(self.expected_apr)}


@dataclass(frozen=True, slots=True)
class PnlReport:
    """Every position, the sums per venue and in total, and the payments no position
    held."""

    positions: list[PositionPnl]
    venues: list[VenuePnl]
    totals: list[VenuePnl]  # one per quote currency
    unattributed: list[RecordedFunding]


def ledger_pnl(journal: Journal, *, now: datetime, marks: Mapping[tuple[str, str], Decimal],
               since: datetime | None = None, default_leverage: Decimal | None = None
               ) -> PnlReport:
    """The PnL of every position in ``journal`` (those closed before ``since`` left out),
    with funding and fees from ``since`` on. ``marks`` maps (venue, symbol) to a price for
    the legs still held; ``default_leverage`` stands for a position whose leverage was not
    recorded at entry (and says so)."""
    funding = journal.funding(since)
    fills_of: dict[str, list[PositionFill]] = defaultdict(list)
    for fill in journal.fills():
        fills_of[fill.position_id].append(fill)
    funding_of: dict[str, list[RecordedFunding]] = defaultdict(list)
    for recorded in funding:
        if recorded.position_id is not None:
            funding_of[recorded.position_id].append(recorded)
    terms = journal.entry_terms()
    rows = []
    for position in journal.positions(include_closed=True):
        if since is not None and position.closed_at is not None and position.closed_at < since:
            continue
        expected, leverage = terms.get(position.position_id, (None, None))
        rows.append(position_pnl(position, fills_of[position.position_id],
                                 funding_of[position.position_id], marks=marks, now=now,
                                 since=since, expected_apr=expected, leverage=leverage,
                                 default_leverage=default_leverage))
    unattributed = [r for r in funding if r.position_id is None]
    venues = summarise(rows, unattributed, lambda venue: venue)
    totals = summarise(rows, unattributed, lambda _venue: "total")
    return PnlReport(rows, venues, totals, unattributed)


def position_pnl(position: Position, fills: Iterable[PositionFill],
                 funding: Iterable[RecordedFunding], *, marks: Mapping[tuple[str, str], Decimal],
                 now: datetime, since: datetime | None = None,
                 expected_apr: Decimal | None = None, leverage: Decimal | None = None,
                 default_leverage: Decimal | None = None) -> PositionPnl:
    """One position's PnL from its fills and funding payments (see the module docstring)."""
    quote = quote_of(position)
    unconverted: dict[str, Decimal] = defaultdict(Decimal)
    received = ZERO
    for recorded in funding:
        payment = recorded.payment
        if since is not None and payment.time < since:
            continue
        if payment.currency == quote:
            received += payment.amount
        else:
            unconverted[payment.currency] -= payment.amount
    legs = _Legs()
    fees = ZERO
    for fill in fills:
        legs.add(fill)
        if since is None or fill.at >= since:
            fee, others = fill_fees(fill, position.base, quote)
            fees += fee
            for currency, amount in others.items():
                unconverted[currency] += amount
    spread_basis, status = legs.value(position, marks)
    net = None if spread_basis is None else received - fees + spread_basis
    if leverage is not None:
        source = "entry"
    elif default_leverage is not None:
        leverage, source = default_leverage, "config"
    else:
        source = None
    capital = (legs.spot_bought + legs.perp_sold / leverage
               if leverage and legs.spot_bought else None)
    start = position.opened_at if since is None else max(position.opened_at, since)
    held_for = (position.closed_at or now) - start
    days = max(Decimal(str(held_for.total_seconds())) / DAY_SECONDS, ZERO)
    apr = (net / capital / days * YEAR_DAYS
           if net is not None and capital and days > 0 else None)
    dust = position.spot_quantity if position.state is PositionState.CLOSED else ZERO
    return PositionPnl(position.position_id, position.venue, position.base, quote,
                       position.state, position.opened_at, position.closed_at, received, fees,
                       {k: v for k, v in unconverted.items() if v}, spread_basis, status, net,
                       capital, leverage, source, days, apr, expected_apr, dust)


class _Legs:
    """The quote flows and quantities of a position's fills, fee-free: a spot buy costs the
    base it delivered at the fill price (the part of the fill taken as a fee in base is a
    fee), so spread and basis plus fees is exactly the cash that moved."""

    def __init__(self) -> None:
        self.spot_flow = ZERO  # sold - bought
        self.perp_flow = ZERO  # sold - bought back
        self.spot_held = ZERO
        self.perp_short = ZERO
        self.spot_bought = ZERO  # quote paid for spot, fees included: capital used
        self.perp_sold = ZERO  # notional shorted: its margin is capital used
        self.unpriced = False

    def add(self, fill: PositionFill) -> None:
        order = fill.order
        if order.average_price is None:
            self.unpriced = True
            return
        price = order.average_price
        if order.leg is Leg.SPOT:
            sign = 1 if order.side is Side.BUY else -1
            self.spot_held += sign * order.delivered
            self.spot_flow -= sign * order.delivered * price
            if order.side is Side.BUY:
                self.spot_bought += order.filled * price
        else:
            sign = 1 if order.side is Side.SELL else -1
            self.perp_short += sign * order.filled
            self.perp_flow += sign * order.filled * price
            if order.side is Side.SELL:
                self.perp_sold += order.filled * price

    def value(self, position: Position, marks: Mapping[tuple[str, str], Decimal]
              ) -> tuple[Decimal | None, str]:
        """Spread and basis, and how they were found."""
        if (self.unpriced or self.spot_held != position.spot_quantity
                or self.perp_short != position.perp_quantity):
            # Adopted, or adjusted by reconciliation (a liquidated short): the journal's
            # fills are not the whole story of the legs held, and no entry price is made up.
            return None, NOT_DERIVABLE
        flow = self.spot_flow + self.perp_flow
        if position.state is PositionState.CLOSED:
            return flow, REALISED
        spot_mark = marks.get((position.venue, position.spot_symbol))
        perp_mark = marks.get((position.venue, position.perp_symbol))
        if spot_mark is None or perp_mark is None:
            return None, NOT_MARKED
        return flow + self.spot_held * spot_mark - self.perp_short * perp_mark, MARKED


def fill_fees(fill: PositionFill, base: str, quote: str) -> tuple[Decimal, dict[str, Decimal]]:
    """The fill's fees in ``quote`` (a base fee at the fill's price), and those in a third
    currency, unconverted."""
    order = fill.order
    in_quote, others = ZERO, {}
    for fee in order.fees:
        if fee.currency == quote:
            in_quote += fee.amount
        elif fee.currency == base and order.average_price is not None:
            in_quote += fee.amount * order.average_price
        else:
            others[fee.currency] = others.get(fee.currency, ZERO) + fee.amount
    return in_quote, others


def apr_text(apr: Decimal | None) -> str | None:
    """An APR for JSON: the fraction to 10 places (Decimal division leaves 28 digits)."""
    return None if apr is None else str(apr.quantize(APR_PLACES))


def quote_of(position: Position) -> str:
    """The quote currency of the position's spot market (``BTC/USDT`` -> ``USDT``), which
    its perp settles in too (a carry pair shares base and quote)."""
    return position.spot_symbol.split("/", 1)[1].split(":", 1)[0]


def summarise(rows: list[PositionPnl], unattributed: list[RecordedFunding],
              group: Callable[[str], str]) -> list[VenuePnl]:
    """Sums per (``group(venue)``, quote currency): funding (unattributed payments
    included), fees, known spread and basis, net, and the APR of the complete positions
    weighted by capital and days."""
    keys = sorted({(group(r.venue), r.quote) for r in rows}
                  | {(group(u.payment.venue), u.payment.currency) for u in unattributed})
    summaries = []
    for key in keys:
        mine = [r for r in rows if (group(r.venue), r.quote) == key]
        loose = sum((u.payment.amount for u in unattributed
                     if (group(u.payment.venue), u.payment.currency) == key), ZERO)
        funding = sum((r.funding for r in mine), ZERO) + loose
        fees = sum((r.fees for r in mine), ZERO)
        unconverted: dict[str, Decimal] = defaultdict(Decimal)
        for r in mine:
            for currency, amount in r.unconverted.items():
                unconverted[currency] += amount
        known = [r for r in mine if r.spread_basis is not None]
        spread_basis = sum((r.spread_basis for r in known), ZERO)
        complete = [r for r in known if r.capital_days]
        capital_days = sum((r.capital_days for r in complete), ZERO)
        apr = (sum((r.net for r in complete), ZERO) / capital_days * YEAR_DAYS
               if capital_days else None)
        expected = (sum((r.expected_apr * r.capital_days for r in complete), ZERO)
                    / capital_days
                    if capital_days and all(r.expected_apr is not None for r in complete)
                    else None)
        summaries.append(VenuePnl(key[0], key[1], len(mine), funding, loose, fees,
                                  dict(unconverted), spread_basis, len(mine) - len(known),
                                  funding - fees + spread_basis, apr, expected))
    return summaries
