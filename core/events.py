"""The event bus: what happened while trading, told once to everyone who listens.

The run loop, the executor, the risk monitor and the ledger each report what happened (a
fill, an unwind, a naked leg, a funding payment, a margin alarm, a breaker trip, the kill
switch, a venue down, the daily summary) as one :class:`Event`. :meth:`EventBus.emit`
appends it to the journal's ``events`` table (the dashboard's and the operator's record),
calls the plugins' event hooks, and hands it to the alerter. Listeners are never allowed to
stop trading: a plugin hook that raises is logged with the plugin's name, counted, and the
event still reaches the other plugins and the alerts.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import pluggy
from loguru import logger

if TYPE_CHECKING:
    from perpcarry.alerts.alerter import Alerter
    from perpcarry.execution.journal import Journal
    from perpcarry.venues.orders import FundingPayment, OrderState

# The journal ``events`` kind every bus event is stored under (the alerter's is "alert").
JOURNAL_KIND = "event"


class EventKind(StrEnum):
    FILL = "fill"  # an order that builds or takes down a position filled
    UNWIND = "unwind"  # an order that removed an unhedged excess filled
    NAKED_LEG = "naked_leg"  # one leg stands without its hedge beyond tolerance
    FUNDING = "funding"  # a funding payment arrived
    MARGIN_ALARM = "margin_alarm"  # a perp's margin ratio or liquidation distance is unsafe
    BREAKER = "breaker"  # the circuit breaker tripped
    KILL = "kill"  # the kill switch was engaged
    VENUE_DOWN = "venue_down"  # a venue has not answered for too long
    DAILY_SUMMARY = "daily_summary"  # the ledger's daily figures


# Kinds that are risk alarms: the bus also calls ``on_risk_alarm`` for them.
RISK_KINDS = frozenset({EventKind.NAKED_LEG, EventKind.MARGIN_ALARM, EventKind.BREAKER,
                        EventKind.KILL, EventKind.VENUE_DOWN})


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Event:
    """One thing that happened. ``message`` is one line a person reads; ``data`` holds the
    figures behind it as plain JSON values (Decimals as strings), so the journal, plugins
    and alerts all see the same thing. ``time`` comes from the caller's clock (simulated in
    replay)."""

    kind: EventKind
    severity: Severity
    message: str
    time: datetime
    venue: str | None = None
    subject: str | None = None  # what it is about: a symbol, a position id
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Misuse by our own code, caught where it is made rather than in the journal.
        if "\n" in self.message or "\r" in self.message:
            raise ValueError(f"event message must be one line: {self.message!r}")
        if self.time.tzinfo is None:
            raise ValueError("event time must be timezone-aware")
        json.dumps(self.data, allow_nan=False)  # TypeError/ValueError on non-JSON values

    def as_dict(self) -> dict[str, Any]:
        """The event as plain JSON values: the journal's ``detail``."""
        return {**asdict(self), "kind": self.kind.value, "severity": self.severity.value,
                "time": self.time.isoformat()}


def fill_event(fill: OrderState, time: datetime, *, unwind: bool = False) -> Event:
    """The event of a filled order (``unwind``: it removed an unhedged excess)."""
    side = fill.side.value
    price = "?" if fill.average_price is None else f"{fill.average_price}"
    fees = ", ".join(f"{f.amount} {f.currency}" for f in fill.fees) or "none reported"
    what = "unwind" if unwind else "fill"
    return Event(
        EventKind.UNWIND if unwind else EventKind.FILL,
        Severity.WARNING if unwind else Severity.INFO,
        f"{what}: {side} {fill.filled_quantity} {fill.symbol} at {price}, fees {fees}",
        time, fill.venue, fill.symbol,
        {"side": side, "quantity": str(fill.filled_quantity),
         "price": None if fill.average_price is None else str(fill.average_price),
         "fees": [[str(f.amount), f.currency] for f in fill.fees],
         "client_order_id": fill.client_order_id, "status": fill.status.value})


def funding_event(payment: FundingPayment) -> Event:
    """The event of a funding payment, at the time the venue paid it."""
    verb = "received" if payment.amount >= 0 else "paid"
    return Event(
        EventKind.FUNDING, Severity.INFO,
        f"funding {verb}: {abs(payment.amount)} {payment.currency} on {payment.symbol}",
        payment.time, payment.venue, payment.symbol,
        {"amount": str(payment.amount), "currency": payment.currency,
         "payment_id": payment.payment_id})


class EventBus:
    """Where the loop, executor, risk monitor and ledger report events.

    ``pm`` is the plugin manager whose event hooks are called; ``journal`` (or None) keeps
    every event; ``alerter`` (or None) sends those its config selects. ``clock`` stamps the
    events the bus builds from a fill."""

    def __init__(self, pm: pluggy.PluginManager, journal: Journal | None,
                 alerter: Alerter | None, clock: Callable[[], datetime]) -> None:
        self.pm = pm
        self.journal = journal
        self.alerter = alerter
        self.clock = clock
        # plugin name -> how many of its hook calls raised
        self.hook_failures: Counter[str] = Counter()

    def emit(self, event: Event) -> None:
        """Record ``event``, tell the plugins (``on_risk_alarm`` for risk kinds, then
        ``on_event``) and hand it to the alerter. Never raises for a listener's fault."""
        if self.journal is not None:
            self.journal.append_event(JOURNAL_KIND, event.as_dict())
        if event.kind in RISK_KINDS:
            self._call("on_risk_alarm", alarm=event)
        self._call("on_event", event=event)
        if self.alerter is not None:
            self.alerter.submit(event)

    def fill(self, fill: OrderState, *, unwind: bool = False) -> Event:
        """An order filled (in full or in part, and will fill no further): ``on_fill`` with
        the order's state, then the ``fill`` (or ``unwind``) event."""
        self._call("on_fill", fill=fill)
        event = fill_event(fill, self.clock(), unwind=unwind)
        self.emit(event)
        return event

    def funding_payment(self, payment: FundingPayment) -> Event:
        """A funding payment arrived: ``on_funding_payment``, then the ``funding`` event."""
        self._call("on_funding_payment", payment=payment)
        event = funding_event(payment)
        self.emit(event)
        return event

    def _call(self, hook: str, **kwargs: Any) -> None:
        # Each implementation on its own, so one plugin's fault reaches no other listener.
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                impl.function(**kwargs)
            except Exception as exc:  # whatever third-party code raises; trading goes on
                self.hook_failures[impl.plugin_name] += 1
                logger.warning("plugin {}: {} raised {}: {} (failure {} of this plugin; "
                               "trading goes on)", impl.plugin_name, hook,
                               type(exc).__name__, exc, self.hook_failures[impl.plugin_name])
