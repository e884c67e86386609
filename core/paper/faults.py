"""Faults the paper venue can be told to simulate, so executors are tested against the
failures a live venue produces without a live venue.

A test holds the venue's :class:`PaperFaults` and queues what the next orders meet::

    faults.reject()                          # the next place_order is refused
    faults.outcome_unknown(accepted=True)    # filled and committed, then the answer is lost
    faults.outcome_unknown(accepted=False)   # lost before the venue saw it
    faults.partial_fill(Decimal("0.5"))      # half fills, the rest expires
    faults.fail_queries(2)                   # the next two fetch_order calls get no answer

Each queued fault applies to one ``place_order`` call, first in first out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from perpcarry.domain.errors import VenueError


class FaultKind(StrEnum):
    REJECT = "reject"
    OUTCOME_UNKNOWN_ACCEPTED = "outcome_unknown_accepted"
    OUTCOME_UNKNOWN_LOST = "outcome_unknown_lost"
    PARTIAL_FILL = "partial_fill"


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    error: VenueError | None = None
    fill_ratio: Decimal | None = None


@dataclass
class PaperFaults:
    """The fault queue of one paper venue; empty, the venue behaves normally."""

    queued: deque[Fault] = field(default_factory=deque)
    failing_queries: int = 0

    def reject(self, error: VenueError | None = None) -> None:
        """The next order is refused with ``error`` (default: an ``InvalidOrder`` naming
        the simulation) and nothing is recorded, as a live venue refuses."""
        self.queued.append(Fault(FaultKind.REJECT, error=error))

    def outcome_unknown(self, *, accepted: bool) -> None:
        """The next order raises ``OutcomeUnknown``: after it was filled and committed
        (``accepted``), or before the venue saw it (nothing exists)."""
        kind = (FaultKind.OUTCOME_UNKNOWN_ACCEPTED if accepted
                else FaultKind.OUTCOME_UNKNOWN_LOST)
        self.queued.append(Fault(kind))

    def partial_fill(self, ratio: Decimal) -> None:
        """The next market or IOC order fills ``ratio`` of its quantity (floored to the
        step) and the rest expires, as on a thin book."""
        if not 0 <= ratio < 1:
            raise ValueError(f"partial fill ratio {ratio}: from 0 up to (not including) 1")
        self.queued.append(Fault(FaultKind.PARTIAL_FILL, fill_ratio=ratio))

    def fail_queries(self, count: int) -> None:
        """The next ``count`` ``fetch_order`` calls raise ``OutcomeUnknown`` (no answer)."""
        self.failing_queries += count

    def next_order(self) -> Fault | None:
        """The fault the order being placed meets, taken off the queue."""
        return self.queued.popleft() if self.queued else None

    def query_fails(self) -> bool:
        """Whether this ``fetch_order`` call gets no answer, counted down."""
        if self.failing_queries:
            self.failing_queries -= 1
            return True
        return False
