"""Property test of two-leg execution against a random fault schedule on the paper venue
(offline, the Binance snapshot): whatever the venue does to each order, and whichever
executor runs, once an open (and, in about half the examples, the close of what it opened)
and the recovery after each are over, the invariants hold, read from the venue's side
(``Harness.assert_invariants``)."""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import AsyncExitStack, suppress
from decimal import Decimal
from pathlib import Path

from execution_support import Harness, open_paper
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perpcarry.domain.errors import ClockSkew, InsufficientFunds, InvalidOrder, RateLimitError
from perpcarry.execution.engine import ExecutionIncomplete
from perpcarry.execution.executors import Concurrent, PerpFirst, Sliced
from perpcarry.execution.journal import IntentState
from perpcarry.paper import PaperFaults

REFUSALS = {
    "invalid": lambda: InvalidOrder("binance", "rejected (simulated)"),
    "funds": lambda: InsufficientFunds("binance", "Margin is insufficient (simulated)"),
    "rate_limit": lambda: RateLimitError("binance", "rate limited (simulated)", 1.0),
    "clock_skew": lambda: ClockSkew("binance", "timestamp refused (simulated)"),
}

order_faults = st.one_of(
    st.none(),
    st.sampled_from(sorted(REFUSALS)).map(lambda kind: ("reject", kind)),
    st.booleans().map(lambda accepted: ("unknown", accepted)),
    st.sampled_from(["0", "0.3", "0.5", "0.9"]).map(lambda ratio: ("partial", ratio)),
)

fault_schedules = st.fixed_dictionaries({
    "orders": st.lists(order_faults, max_size=8),  # what each placement meets, in order
    "failing_queries": st.sampled_from([0, 0, 3, 12, 40]),  # order queries left unanswered
})

schedules = st.fixed_dictionaries({
    "open": fault_schedules,
    "close": st.none() | fault_schedules,  # then close what was opened, meeting these
    "executor": st.sampled_from(["perp-first", "concurrent", "sliced"]),
    "slices": st.integers(1, 3),
    "steps": st.integers(3, 40),  # the target, in perp steps (0.001 BTC)
})

EXECUTORS = {"perp-first": PerpFirst, "concurrent": Concurrent, "sliced": Sliced}
# Recovery rounds before the schedule must have run dry (each round uses up faults).
ROUNDS = 40


def queue(faults: PaperFaults, schedule: dict) -> None:
    """Queue what each placement meets, and the order queries left unanswered."""
    for fault in schedule["orders"]:
        if fault is None:
            faults.queued.append(None)
        elif fault[0] == "reject":
            faults.reject(REFUSALS[fault[1]]())
        elif fault[0] == "unknown":
            faults.outcome_unknown(accepted=fault[1])
        else:
            faults.partial_fill(Decimal(fault[1]))
    faults.fail_queries(schedule["failing_queries"])


async def run_to_the_end(harness: Harness, action: str, position_id: str,
                         target: Decimal, schedule: dict) -> None:
    """Plan and run one intent, then recover until nothing is pending (each round uses up
    faults); the intent never stays pending once the schedule has run dry."""
    executor = EXECUTORS[schedule["executor"]]()
    execution = harness.execution()
    intent = execution.plan(action, position_id, target, executor, schedule["slices"])
    with suppress(ExecutionIncomplete):
        await execution.run(executor)
    for _ in range(ROUNDS):
        if not harness.journal.unfinished_intents():
            break
        harness.reopen()
        await harness.recover()
    assert harness.journal.intent(intent.intent_id).state is not IntentState.PENDING


async def scenario(data_dir: Path, schedule: dict) -> None:
    async with AsyncExitStack() as stack:
        harness: Harness = await open_paper(stack, data_dir)
        queue(harness.faults, schedule["open"])
        target = Decimal(schedule["steps"]) * Decimal("0.001")
        await run_to_the_end(harness, "open", harness.journal.new_id(), target, schedule)
        [position] = harness.journal.positions(include_closed=True)
        if schedule["close"] is not None and position.perp_quantity > 0:
            # Closing meets faults of its own, as ``perpcarry close`` would.
            queue(harness.faults, schedule["close"])
            await run_to_the_end(harness, "close", position.position_id,
                                 position.perp_quantity, schedule)
        # The schedule is over: the venue answers the checks below.
        harness.faults.queued.clear()
        harness.faults.failing_queries = 0
        await harness.assert_invariants()


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(schedule=schedules)
def test_invariants_hold_under_any_fault_schedule(schedule):
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(scenario(Path(folder) / "data", schedule))
