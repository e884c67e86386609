"""The first-party executors, registered through ``register_executors`` exactly as a
third-party plugin's would be (this module is the ``executors`` entry point). Each only says
how a target is cut into slices and in which order a slice's legs go; the engine
(:mod:`perpcarry.execution.engine`) gives all of them the same guarantees. Read them as the
examples for writing your own (docs/execution.md)."""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, Decimal

from perpcarry.execution.engine import Pacing, SliceLegs, SliceLimits
from perpcarry.plugins.hookspecs import hookimpl


def even_slices(target: Decimal, count: int, step: Decimal) -> tuple[Decimal, ...]:
    """``target`` cut into ``count`` multiples of ``step``, the remainder on the last."""
    each = (target / count // step) * step
    return (*([each] * (count - 1)), target - each * (count - 1))


def slice_count(target: Decimal, limits: SliceLimits) -> int:
    """As many slices as asked for, at least as many as the per-order maximum demands, and
    never so many that one falls below what both legs accept."""
    needed = 1
    if limits.max_slice.is_finite() and target > limits.max_slice:
        needed = int((target / limits.max_slice).to_integral_value(ROUND_CEILING))
    most = max(1, math.floor(target / limits.min_slice))
    return max(needed, min(limits.requested, most))


class PerpFirst:
    """Short the perp first; if it fails, stop with spot untouched. Then buy spot for what
    the perp actually filled; if spot fails, the engine buys the perp back. Closing: the
    perp bought back first (reduce-only), then the spot sold."""

    name = "perp-first"
    description = "hedge leg first: perp, then spot sized to the perp's fill"

    def slices(self, target: Decimal, limits: SliceLimits) -> tuple[Decimal, ...]:
        return even_slices(target, slice_count(target, limits), limits.step)

    async def run_slice(self, legs: SliceLegs, quantity: Decimal) -> None:
        perp = await legs.perp(quantity)
        await legs.spot(perp.filled)

    async def between_slices(self, slice_index: int, pacing: Pacing) -> str | None:
        return None


class Concurrent(PerpFirst):
    """Both legs at once: the shortest naked window; whatever one leg filled beyond the
    other is unwound by the engine."""

    name = "concurrent"
    description = "both legs at once, the excess of either unwound"

    async def run_slice(self, legs: SliceLegs, quantity: Decimal) -> None:
        await legs.both(quantity)


class Sliced(PerpFirst):
    """Iceberg/TWAP as the FMZ strategy opens and closes: perp-first slices (``--slices``,
    more when a venue's per-order maximum demands it) with a pause between them, stopping
    when the spread or basis moves beyond its limit."""

    name = "sliced"
    description = "perp-first slices with a pause, stopping when the basis moves"

    async def between_slices(self, slice_index: int, pacing: Pacing) -> str | None:
        await pacing.sleep(pacing.pause_seconds)
        return await pacing.basis_check() if pacing.basis_check else None


@hookimpl
def register_executors(register):
    register(PerpFirst())
    register(Concurrent())
    register(Sliced())
