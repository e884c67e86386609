"""What a Dask worker runs: a batch of backtest jobs on the data scattered to it once.

The worker needs no config file and no plugin: the client resolves the fee schedules and
validates every job's settings, so a worker on another machine only needs perpcarry
installed. Each job goes through :func:`perpcarry.backtest.run.prepare` and
:func:`perpcarry.backtest.run.replay_prepared`, the two halves of the ``replay`` that
``perpcarry backtest`` runs, which is why the reproducing command gives the same numbers.

The first half (selection, span, panel: about a quarter of a backtest) depends only on
:func:`panel_key`, so a worker keeps the last few it built with the data they came from
and runs that differ only in their strategy (thresholds, holding rules, horizon, costs,
caps) reuse them; the client sends jobs grouped by that key (``cluster.batches``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from perpcarry.sweep.grid import METRICS, Job

if TYPE_CHECKING:
    from perpcarry.backtest.run import Prepared

# Prepared panels a process keeps per scattered data set. Jobs arrive grouped by panel key,
# so a worker mostly needs the current one; the others cover a batch that straddles two keys
# and batches taken out of order. Small, because on a large history a panel (and the views
# a simulation caches on it) can take hundreds of megabytes.
PANELS_KEPT = 4


@dataclass(frozen=True, eq=False)
class SweepData:
    """Scattered to every worker once: the history and the fees resolved from the config.
    Each process that holds it keeps its own prepared panels (not sent with it)."""

    history: pl.DataFrame
    fees: dict[str, tuple[float, float]]
    fee_sources: dict[str, str]
    _kept: dict = field(init=False, repr=False, default_factory=dict)  # key -> Prepared
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __getstate__(self) -> dict:
        return {"history": self.history, "fees": self.fees, "fee_sources": self.fee_sources}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def prepared(self, job: Job) -> Prepared:
        """The job's history and panel, built once for every job with its ``panel_key``
        while it is among the last ``PANELS_KEPT`` used here."""
        from perpcarry.backtest.panel import select
        from perpcarry.backtest.run import panel_settings, prepare

        key = panel_key(job)
        with self._lock:   # a remote worker may run several threads
            ready = self._kept.pop(key, None)
            if ready is not None:
                self._kept[key] = ready   # the most recently used last
        if ready is None:
            ready = prepare(select(self.history, job.venues, job.symbols), self.fees,
                            self.fee_sources, start=job.start, end=job.end,
                            **panel_settings(job.settings))
            with self._lock:
                self._kept[key] = ready
                while len(self._kept) > PANELS_KEPT:
                    del self._kept[next(iter(self._kept))]
        return ready


def panel_key(job: Job) -> tuple:
    """Jobs with equal keys replay on the same prepared panel: the data selection, the span
    and the settings that shape the panel."""
    from perpcarry.backtest.run import panel_settings

    return (job.venues, job.symbols, job.start, job.end,
            tuple(panel_settings(job.settings).items()))


def run_batch(data: SweepData, jobs: list[Job]) -> list[dict[str, Any]]:
    """One result record per job; a job that raises is recorded with its error."""
    return [run_job(data, job) for job in jobs]


def run_job(data: SweepData, job: Job) -> dict[str, Any]:
    """The record of one backtest: its parameters, metrics (or error), time and command."""
    from perpcarry.backtest.run import replay_prepared

    started = time.perf_counter()
    record = base_record(job)
    try:
        ready = data.prepared(job)
        summary = replay_prepared(ready, job.settings, job.allocator, data.fees).summary
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
