"""The first-party executors, registered through ``register_executors`` like a third-party
one would be. Each only says how a target is cut into slices and in which order a slice's
legs go; the engine (:mod:`perpcarry.execution.engine`) gives all of them the same
guarantees. Read them as the examples for writing your own."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from decimal import ROUND_CEILING, Decimal

from perpcarry.execution.engine import SliceLegs


def even_slices(target: Decimal, count: int, step: Decimal) -> tuple[Decimal, ...]:
    """``target`` cut into ``count`` multiples of ``step``, the remainder on the last."""
    each = (target / count // step) * step
    return (*([each] * (count - 1)), target - each * (count - 1))


def needed_slices(target: Decimal, max_slice: Decimal, min_slice: Decimal) -> int:
    """The fewest slices that keep each under ``max_slice``."""
    if not max_slice.is_finite() or target <= max_slice:
        return 1
    return int((target / max_slice).to_integral_value(ROUND_CEILING))


class PerpFirst:
    """Short the perp first; if it fails, stop with spot untouched. Then buy spot for what
    the perp actually filled; if spot fails, the engine buys the perp back."""

    name = "perp-first"
    description = "hedge leg first: perp, then spot sized to the perp's fill"

    def slices(self, target, max_slice, min_slice, step):
        return even_slices(target, needed_slices(target, max_slice, min_slice), step)

    async def run_slice(self, legs: SliceLegs, quantity: Decimal) -> None:
        perp = await legs.perp(quantity)
        await legs.spot(perp.filled)

    async def between_slices(self, slice_index: int) -> str | None:
        return None


class Concurrent(PerpFirst):
    """Both legs at once: the shortest naked window; whatever one leg filled beyond the
    other is unwound by the engine."""

    name = "concurrent"
    description = "both legs at once, the excess of either unwound"

    async def run_slice(self, legs: SliceLegs, quantity: Decimal) -> None:
        await legs.both(quantity)


BasisCheck = Callable[[], Awaitable[str | None]]


class Sliced(PerpFirst):
    """Iceberg/TWAP as the FMZ strategy opens and closes: ``count`` perp-first slices (more
    when a venue's per-order maximum demands it), ``pause_seconds`` apart, stopping when
    ``basis_check`` reports the spread or basis moved beyond its limit."""

    name = "sliced"
    description = "N perp-first slices with a pause, stopping when the basis moves"

    def __init__(self, count: int = 5, pause_seconds: float = 2.0,
                 basis_check: BasisCheck | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.count = count
        self.pause_seconds = pause_seconds
        self.basis_check = basis_check
        self.sleep = sleep

    def slices(self, target, max_slice, min_slice, step):
        count = max(self.count, needed_slices(target, max_slice, min_slice))
        # Never a slice below what both legs accept.
        count = max(1, min(count, math.floor(target / min_slice)))
        return even_slices(target, count, step)

    async def between_slices(self, slice_index: int) -> str | None:
        await self.sleep(self.pause_seconds)
        return await self.basis_check() if self.basis_check else None
