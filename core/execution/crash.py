"""Named step boundaries of the execution protocol, where the crash tests kill the process,
and the paper faults those tests inject into a ``perpcarry`` subprocess.

``PERPCARRY_CRASH_AT=NAME[:N]`` makes the N-th (default first) arrival at the boundary
``NAME`` kill the process with SIGKILL, as a power cut would: no cleanup, no flush beyond
what was committed. ``PERPCARRY_CRASH_TRACE=FILE`` appends the name of every boundary
reached to ``FILE`` instead, so a test can list the arrivals of a command before killing
it at each. Unset (always, outside the crash tests) a boundary costs one dict lookup.

``PERPCARRY_PAPER_FAULTS=N=KIND[,N=KIND...]`` makes the N-th order the paper venue is
asked to place meet ``KIND`` (a :class:`~perpcarry.paper.faults.FaultKind` value;
``partial_fill@RATIO`` for a partial fill), so a subprocess reaches the boundaries only a
failure passes (an unknown outcome, an unwind).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from perpcarry.domain.errors import UsageError

if TYPE_CHECKING:
    from perpcarry.paper.faults import Fault

CRASH_ENV = "PERPCARRY_CRASH_AT"
TRACE_ENV = "PERPCARRY_CRASH_TRACE"
FAULTS_ENV = "PERPCARRY_PAPER_FAULTS"
# Read here, not settings: the config loader must not warn about them.
HOOK_ENVS = frozenset({CRASH_ENV, TRACE_ENV, FAULTS_ENV})

# Every boundary the protocol has, in the order an open passes them.
CRASH_POINTS = (
    "after_intent",  # intent and planned orders committed, nothing sent
    "after_sent",  # an order marked sent, the request not yet made
    "after_outcome_unknown",  # the venue did not answer clearly; nothing queried yet
    "after_acknowledged",  # the venue answered; its state not yet journalled
    "between_legs",  # the first leg's fill journalled, the second leg not yet sent
    "before_unwind",  # a failure seen, the unwind order not yet planned
    "before_finish",  # every order final, the intent not yet closed
)

_arrivals: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die here if the crash tests asked for it (or note the arrival when tracing)."""
    trace = os.environ.get(TRACE_ENV)
    if trace:
        with open(trace, "a", encoding="utf-8") as out:
            out.write(name + "\n")
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _arrivals[name] = _arrivals.get(name, 0) + 1
    if _arrivals[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class ScheduledFaults:
    """Paper faults by the order's rank in the process (1 = the first order placed); what
    the paper venue asks of its :class:`~perpcarry.paper.faults.PaperFaults`."""

    schedule: dict[int, Fault] = field(default_factory=dict)
    placed: int = 0

    def next_order(self) -> Fault | None:
        self.placed += 1
        return self.schedule.get(self.placed)

    def query_fails(self) -> bool:
        return False


def scheduled_faults() -> ScheduledFaults | None:
    """The faults ``PERPCARRY_PAPER_FAULTS`` asks for; None when it is unset."""
    text = os.environ.get(FAULTS_ENV, "").strip()
    if not text:
        return None
    # Imported here: the paper package imports the config, which imports the engine.
    from perpcarry.paper.faults import Fault, FaultKind

    schedule: dict[int, Fault] = {}
    for item in text.split(","):
        rank, _, kind = item.strip().partition("=")
        kind, _, ratio = kind.partition("@")
        try:
            fault_kind = FaultKind(kind)
            fault = Fault(fault_kind, fill_ratio=Decimal(ratio) if ratio else None)
            if not rank.isdigit() or int(rank) < 1:
                raise ValueError
            if (fault_kind is FaultKind.PARTIAL_FILL) != bool(ratio):
                raise ValueError
        except (ValueError, InvalidOperation):
            raise UsageError(f"{FAULTS_ENV}: {item!r} is not N=KIND (KIND one of "
                             f"{', '.join(k.value for k in FaultKind)}; partial_fill@RATIO)"
                             ) from None
        schedule[int(rank)] = fault
    return ScheduledFaults(schedule=schedule)
