"""Dask: a local cluster of worker processes, or an existing scheduler, and the batches.

The same code runs on a laptop and on a cluster: the client scatters the history once to
every worker, submits the jobs in batches (a backtest takes 0.05-1 s, so one task per
backtest would spend a noticeable share of it on scheduling) and hands each finished batch
to ``on_batch`` as it arrives.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from perpcarry.domain.errors import PerpcarryError

if TYPE_CHECKING:
    from distributed import Client

    from perpcarry.sweep.grid import Job
    from perpcarry.sweep.tasks import SweepData

# Batches per worker: enough that the last ones balance the load across workers, few
# enough that scheduling stays a small share of the work.
BATCHES_PER_WORKER = 8
# Toward the end a batch takes at most 1 / (TAIL_SHARE x workers) of the jobs left: while
# one worker finishes its last batch the others have smaller ones to take, instead of
# waiting idle for up to a whole batch's time.
TAIL_SHARE = 2
SINGLE_THREADED = {"POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1",
                   "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PRE_SPAWN_ENVIRON = "distributed.nanny.pre-spawn-environ"


class SchedulerUnreachable(PerpcarryError):
    """The Dask scheduler given by --scheduler or [sweep] scheduler does not answer."""

    exit_code = 2


@contextmanager
def dask_client(scheduler: str | None, workers: int, connect_timeout: float
                ) -> Iterator[Client]:
    """A client of the scheduler at ``scheduler``, else of a local cluster of ``workers``
    single-threaded worker processes, closed (with the local cluster) on exit."""
    import dask
    from distributed import Client, LocalCluster

    # Dask logs connection retries and shutdown chatter as warnings; the sweep reports
    # what matters itself, in one line.
    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=connect_timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SchedulerUnreachable(
                f"cannot reach the Dask scheduler at {scheduler}: {reason}") from None
        try:
            try:
                client.wait_for_workers(1, timeout=connect_timeout)
            except TimeoutError:
                raise SchedulerUnreachable(f"the Dask scheduler at {scheduler} has no worker "
                                           f"(waited {connect_timeout:g} s)") from None
            yield client
        finally:
            client.close()
        return
    # One backtest per worker process at a time, and one thread in it: polars would start a
    # thread per core in every worker, and the workers' threads would contend for the cores.
    # Set before the worker process starts (Dask's pre-spawn environment, which it also sets
    # in this process): polars and BLAS size their pools on import, and a worker imports the
    # main module (a script that imports polars) before Dask's ``env`` would apply. This
    # process has its pools already (it loaded the history), so they stay as they are.
    # Ctrl-C in a terminal signals every process of the foreground group. Only this one
    # should act on it (keep what finished, close the cluster); a worker would die with a
    # traceback. So workers start with SIGINT ignored (inherited through exec), then leave
    # the group: polars installs its own SIGINT handler while a query runs.
    pre_spawn = {**dask.config.get(PRE_SPAWN_ENVIRON, {}), **SINGLE_THREADED}
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        # No dashboard; the scheduler's HTTP endpoints (health, metrics) on a free port of
        # the loopback rather than the default 8787, which another cluster may hold.
        with dask.config.set({PRE_SPAWN_ENVIRON: pre_spawn}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address=None,
                                   scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                   silence_logs=logging.ERROR)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        with Client(cluster, set_as_default=False) as client:
            client.run(os.setpgrp)
            yield client
    finally:
        cluster.close()


def batches(jobs: list[Job], workers: int, batch_size: int | None) -> list[list[Job]]:
    """Jobs grouped by panel key (each group in the order given), cut into batches of
    ``batch_size``; by default about BATCHES_PER_WORKER batches per worker, none larger than
    1 / (TAIL_SHARE x workers) of the jobs left, so the last batches shrink and the workers
    finish together. The jobs of a batch mostly share one panel, which a worker builds once."""
    from perpcarry.sweep.tasks import panel_key

    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(panel_key(job), []).append(job)
    grouped = [job for group in groups.values() for job in group]
    largest = max(1, -(-len(jobs) // (workers * BATCHES_PER_WORKER)))
    cut, first = [], 0
    while first < len(grouped):
        left = len(grouped) - first
        take = batch_size or min(largest, -(-left // (workers * TAIL_SHARE)))
        cut.append(grouped[first:first + take])
        first += take
    return cut


def run_on_cluster(client: Client, data: SweepData, jobs: list[Job],
                   batch_size: int | None, on_batch: Callable[[list[dict]], None]) -> None:
    """Run every job; ``on_batch`` gets each batch's records as it finishes. A batch lost
    with its worker is recorded as failed runs. On KeyboardInterrupt the batches still
    queued are cancelled before it propagates."""
    from distributed import as_completed

    from perpcarry.sweep.tasks import base_record, run_batch

    workers = max(1, sum(client.nthreads().values()))
    scattered = client.scatter(data, broadcast=True, hash=False)
    pending = {}
    for batch in batches(jobs, workers, batch_size):
        future = client.submit(run_batch, scattered, batch, pure=False)
        pending[future] = batch
    try:
        for future in as_completed(list(pending), loop=client.loop):
            batch = pending.pop(future)
            try:
                records = future.result()
            except Exception as exc:  # e.g. the worker died: recorded, the sweep goes on
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
                records = [{**base_record(job), "status": "error", "error": reason}
                           for job in batch]
            on_batch(records)
    finally:
        if pending:
            client.cancel(list(pending))
