"""What one check of the margin monitor saw and did: each perp's liquidation distance,
each margin pool's leverage and utilisation, and the events (actions and alarms) it raised.
Read by the circuit breaker, the loop's status line and, through the journal's ``risk``
events, the dashboard and the alerts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from perpcarry.events import Event, EventKind, Severity
from perpcarry.execution.journal import Position
from perpcarry.venues.orders import Wallet


@dataclass(frozen=True)
class RiskEvent:
    """One action or alarm of the monitor."""

    # warning | top_up | rebalance | floor_unresolved | leverage_alarm | utilisation |
    # orders_canceled | reduced | unknown | venue_down
    kind: str
    venue: str
    subject: str  # a perp symbol, a position id, a settle currency's pool, or the venue
    numbers: dict[str, Decimal]
    message: str

    def as_dict(self) -> dict:
        return {"kind": self.kind, "venue": self.venue, "subject": self.subject,
                "numbers": {k: str(v) for k, v in self.numbers.items()},
                "message": self.message}

    def as_event(self, time: datetime) -> Event:
        """The event the bus journals, hands to plugins (``on_risk_alarm``) and alerts: a
        venue down, else a margin alarm (``data["risk_kind"]`` says which)."""
        kind = EventKind.VENUE_DOWN if self.kind == "venue_down" else EventKind.MARGIN_ALARM
        severity = (Severity.CRITICAL if self.kind in CRITICAL else
                    Severity.INFO if self.kind in ACTIONS else Severity.WARNING)
        return Event(kind, severity, f"{self.kind}: {self.message}", time, self.venue,
                     self.subject, {"risk_kind": self.kind,
                                    "numbers": {k: str(v) for k, v in self.numbers.items()}})


# What the monitor did (told as information) and what it could not fix (critical).
ACTIONS = frozenset({"top_up", "rebalance", "orders_canceled", "reduced"})
CRITICAL = frozenset({"floor_unresolved", "venue_down"})


@dataclass(frozen=True)
class PerpRisk:
    """One perp position as the venue reports it, with the journal positions on it."""

    venue: str
    symbol: str
    settle: str
    short: bool
    quantity: Decimal
    mark: Decimal | None
    margin_ratio: Decimal | None
    liquidation_price: Decimal | None
    distance: Decimal | None
    maintenance_rate: Decimal | None
    positions: tuple[Position, ...]  # the journal's, on this symbol

    @property
    def journalled(self) -> Decimal:
        return sum((p.perp_quantity for p in self.positions), Decimal(0))


@dataclass(frozen=True)
class PoolRisk:
    """One margin pool: a venue's perps settled in one currency."""

    venue: str
    settle: str
    wallet: Wallet
    equity: Decimal  # margin balance: cash plus unrealised PnL
    used: Decimal
    perp_notional: Decimal | None  # None when a mark is unknown

    @property
    def leverage(self) -> Decimal | None:
        if self.perp_notional is None or self.equity <= 0:
            return None
        return self.perp_notional / self.equity

    @property
    def utilisation(self) -> Decimal | None:
        return self.used / self.equity if self.equity > 0 else None


@dataclass
class RiskReport:
    """What one check saw and did."""

    at: datetime
    perps: list[PerpRisk] = field(default_factory=list)
    pools: list[PoolRisk] = field(default_factory=list)
    events: list[RiskEvent] = field(default_factory=list)
    down: dict[str, str] = field(default_factory=dict)  # venue -> why it did not answer
    # Both legs of the journal's positions at the perp marks (spot value - cost + short's
    # proceeds - value), and the capital they hold (spot cost + margin equity); None when a
    # mark is unknown. The circuit breaker's drawdown reads these.
    unrealised_pnl: Decimal | None = None
    equity: Decimal | None = None
    next_check_seconds: float = 0.0

    def of_kind(self, kind: str) -> list[RiskEvent]:
        return [e for e in self.events if e.kind == kind]
