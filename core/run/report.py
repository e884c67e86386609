"""What one cycle (or risk step) of ``perpcarry run`` did: its actions and notes, as the
status line, ``--json`` and the replay summary show them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


@dataclass
class Action:
    """One thing a cycle did (or chose not to do) to one pair."""

    kind: str  # open | add | close | reduce | skip | failed
    venue: str
    base: str
    quantity: Decimal
    reason: str
    position_id: str | None = None
    state: str | None = None  # the intent's final state

    def as_dict(self) -> dict:
        return {"kind": self.kind, "venue": self.venue, "base": self.base,
                "quantity": str(self.quantity), "reason": self.reason,
                "position_id": self.position_id, "state": self.state}

    def line(self) -> str:
        done = f" -> {self.state}" if self.state else ""
        return f"{self.kind} {self.base} on {self.venue} {self.quantity}{done}: {self.reason}"


@dataclass
class CycleReport:
    at: datetime
    actions: list[Action] = field(default_factory=list)
    equity: float | None = None
    positions: int = 0
    halted: str | None = None  # why no entry was allowed (kill switch, breaker)
    notes: list[str] = field(default_factory=list)
    next_settlement: datetime | None = None  # the earliest of the universe's pairs
    next_check_seconds: float | None = None  # sooner, when a position nears danger
    step: str = "cycle"  # or "risk": a risk step between cycles (CarryLoop.risk_step)

    def as_dict(self) -> dict:
        return {"at": self.at.isoformat(), "step": self.step, "equity": self.equity,
                "positions": self.positions,
                "halted": self.halted, "actions": [a.as_dict() for a in self.actions],
                "notes": self.notes}
