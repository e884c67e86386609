"""Named step boundaries of the execution protocol, where the crash tests kill the process.

``PERPCARRY_CRASH_AT=NAME[:N]`` makes the N-th (default first) arrival at the boundary
``NAME`` kill the process with SIGKILL, as a power cut would: no cleanup, no flush beyond
what was committed. Unset (always, outside the crash tests) a boundary costs one dict
lookup.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "PERPCARRY_CRASH_AT"

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
    """Die here if the crash tests asked for it."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _arrivals[name] = _arrivals.get(name, 0) + 1
    if _arrivals[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
