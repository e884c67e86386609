"""The simulated clock of a replay: time moves only when the replay moves it.

Everything that reads time in a paper session (the paper venue, its market view, the
history market data, the loop) is handed :meth:`ReplayClock.now`, so a replay of 18 months
takes as long as its computations, not as long as its months. Its steps are the data's own
settlement times, the only instants at which the history says something new.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta


class ReplayClock:
    """A clock that starts at the first step and only moves forward when told."""

    def __init__(self, steps: Sequence[datetime]) -> None:
        if not steps:
            raise ValueError("a replay clock needs at least one step")
        if any(t.tzinfo is None for t in steps):
            raise ValueError("replay steps must be timezone-aware (UTC)")
        # The union of every replayed series' settlement times: a venue on a 4h grid adds
        # steps between another's 8h ones.
        self.steps: tuple[datetime, ...] = tuple(sorted(set(steps)))
        self._now = self.steps[0]

    def now(self) -> datetime:
        return self._now

    def advance_to(self, moment: datetime) -> None:
        """Move to ``moment``; a replay never goes back in time."""
        if moment < self._now:
            raise ValueError(f"replay clock at {self._now:%Y-%m-%d %H:%M} cannot go back to "
                             f"{moment:%Y-%m-%d %H:%M}")
        self._now = moment

    async def sleep(self, seconds: float) -> None:
        """What a pause (an executor's slice pause, a retry's back-off) is in a replay: the
        simulated time moves on by ``seconds`` at once."""
        self.advance_to(self._now + timedelta(seconds=seconds))

    def run(self) -> Iterator[datetime]:
        """Each step not yet reached, the clock moved to it before it is yielded."""
        for step in self.steps:
            if step >= self._now:
                self.advance_to(step)
                yield step
