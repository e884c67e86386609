"""What a Dask worker runs: a batch of backtest jobs on the data scattered to it once.

The worker needs no config file and no plugin: the client resolves the fee schedules and
validates every job's settings, so a worker on another machine only needs perpcarry
installed. Each job goes through :func:`perpcarry.backtest.run.replay`, the same code
``perpcarry backtest`` runs, which is why the reproducing command gives the same numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import polars as pl

from perpcarry.sweep.grid import METRICS, Job


@dataclass(frozen=True)
class SweepData:
    """Scattered to every worker once: the history and the fees resolved from the config."""

    history: pl.DataFrame
    fees: dict[str, tuple[float, float]]
    fee_sources: dict[str, str]


def run_batch(data: SweepData, jobs: list[Job]) -> list[dict[str, Any]]:
    """One result record per job; a job that raises is recorded with its error."""
    return [run_job(data, job) for job in jobs]


def run_job(data: SweepData, job: Job) -> dict[str, Any]:
    """The record of one backtest: its parameters, metrics (or error), time and command."""
    from perpcarry.backtest.panel import select
    from perpcarry.backtest.run import replay

    started = time.perf_counter()
    record = base_record(job)
    try:
        history = select(data.history, job.venues, job.symbols)
        summary = replay(history, job.settings, job.allocator, data.fees, data.fee_sources,
                         start=job.start, end=job.end).summary
    except Exception as exc:  # a failing run is recorded with its error; the sweep goes on
        record.update(status="error", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
    else:
        record.update({name: summary[name] for name in METRICS})
        record.update(span_start=summary["start"], span_end=summary["end"],
                      days=summary["days"])
    record["seconds"] = time.perf_counter() - started
    return record


def base_record(job: Job) -> dict[str, Any]:
    """A record's identity and parameters, before any result."""
    return {"key": job.key, "combination": job.combination, "part": job.part,
            **job.params, "status": "ok", "error": None, "command": job.command}
