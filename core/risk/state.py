"""The kill switch and the circuit breaker's state, kept in the journal's ``flags`` table.

Both stop new entries, so both live where every process sees them: ``perpcarry kill`` writes
the "kill" flag from another shell (the journal opened without the trading lock) while
``run`` holds the lock, and a restarted ``run`` finds a tripped breaker still tripped. Each
flag's value is one JSON object (reason, time, and for the kill switch the wish to
flatten); ``perpcarry resume`` removes both.

:func:`entry_stop` is the one reading the pre-trade checks use: a reason to refuse opening,
or None.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

from perpcarry.execution.journal import Journal, JournalError

KILL_FLAG = "kill"
BREAKER_FLAG = "breaker"


@dataclass(frozen=True, slots=True)
class KillState:
    """The kill switch, engaged: why, when, and whether every position is to be closed."""

    reason: str
    at: datetime
    flatten: bool


@dataclass(frozen=True, slots=True)
class BreakerState:
    """A tripped circuit breaker: which trigger, why, when."""

    trigger: str  # naked_leg | order_errors | margin_floor | drawdown | venue_down
    reason: str
    at: datetime


def _write(journal: Journal, name: str, state: KillState | BreakerState) -> None:
    fields = asdict(state)
    fields["at"] = state.at.isoformat()
    journal.set_flag(name, json.dumps(fields))


def _read(journal: Journal, name: str) -> dict | None:
    value = journal.flag(name)
    if value is None:
        return None
    try:
        fields = json.loads(value)
        fields["at"] = datetime.fromisoformat(fields["at"])
    except (ValueError, TypeError, KeyError) as err:
        raise JournalError(f"journal {journal.path}: the {name!r} flag is not what perpcarry "
                           f"writes ({value[:80]!r}: {err}); `perpcarry resume` clears it"
                           ) from None
    return fields


def engage_kill(journal: Journal, reason: str, *, flatten: bool) -> KillState:
    """Engage the kill switch (again: the newest reason and wish win)."""
    state = KillState(reason, journal.clock(), flatten)
    _write(journal, KILL_FLAG, state)
    return state


def kill_state(journal: Journal) -> KillState | None:
    """The kill switch when engaged, else None. The loop calls it every cycle and every
    second while it sleeps."""
    fields = _read(journal, KILL_FLAG)
    return None if fields is None else KillState(fields["reason"], fields["at"],
                                                 bool(fields["flatten"]))


def trip_breaker(journal: Journal, trigger: str, reason: str) -> BreakerState:
    """Record the breaker as tripped, for ``trigger`` and ``reason``."""
    state = BreakerState(trigger, reason, journal.clock())
    _write(journal, BREAKER_FLAG, state)
    return state


def breaker_state(journal: Journal) -> BreakerState | None:
    """The tripped breaker, else None."""
    fields = _read(journal, BREAKER_FLAG)
    return None if fields is None else BreakerState(fields["trigger"], fields["reason"],
                                                    fields["at"])


def resume(journal: Journal) -> list[str]:
    """Clear the kill switch and a tripped breaker; one line for each that was set. A flag
    that cannot be read is cleared all the same (that is what resume is for) and named as
    such."""
    cleared = []
    for name, what, reader in ((KILL_FLAG, "kill switch", kill_state),
                               (BREAKER_FLAG, "circuit breaker", breaker_state)):
        try:
            state = reader(journal)
        except JournalError:
            state = None
        raw = journal.clear_flag(name)
        if state is not None:
            cleared.append(f"{what} ({state.reason}, since {state.at:%Y-%m-%d %H:%M:%S} UTC)")
        elif raw is not None:
            cleared.append(f"{what} (an unreadable flag: {raw[:80]!r})")
    return cleared


def entry_stop(journal: Journal) -> str | None:
    """Why no new position may be opened (the kill switch, a tripped breaker), or None."""
    kill = kill_state(journal)
    if kill is not None:
        return f"kill switch engaged ({kill.reason})"
    breaker = breaker_state(journal)
    if breaker is not None:
        return f"circuit breaker tripped ({breaker.reason})"
    return None
