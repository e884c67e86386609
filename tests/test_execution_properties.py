"""Property test of two-leg execution against a random fault schedule on the paper venue
(offline, the Binance snapshot): whatever the venue does to each order, and whichever
executor runs, once the run and the recovery after it are over the invariants hold, read
from the venue's side (``Harness.assert_invariants``)."""

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

schedules = st.fixed_dictionaries({
    "orders": st.lists(order_faults, max_size=8),  # what each placement meets, in order
    "failing_queries": st.sampled_from([0, 0, 3, 12, 40]),  # order queries left unanswered
    "executor": st.sampled_from(["perp-first", "concurrent", "sliced"]),
    "slices": st.integers(1, 3),
    "steps": st.integers(3, 40),  # the target, in perp steps (0.001 BTC)
})

EXECUTORS = {"perp-first": PerpFirst, "concurrent": Concurrent, "sliced": Sliced}
# Recovery rounds before the schedule must have run dry (each round uses up faults).
ROUNDS = 40


def queue(faults: PaperFaults, schedule: dict) -> None:
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


async def scenario(data_dir: Path, schedule: dict) -> None:
    async with AsyncExitStack() as stack:
        harness: Harness = await open_paper(stack, data_dir)
        queue(harness.faults, schedule)
        executor = EXECUTORS[schedule["executor"]]()
        execution = harness.execution()
        target = Decimal(schedule["steps"]) * Decimal("0.001")
        intent = execution.plan("open", harness.journal.new_id(), target, executor,
                                schedule["slices"])
        with suppress(ExecutionIncomplete):
            await execution.run(executor)
        for _ in range(ROUNDS):
            if not harness.journal.unfinished_intents():
                break
            harness.reopen()
            await harness.recover()
        state = harness.journal.intent(intent.intent_id).state
        assert state is not IntentState.PENDING
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
