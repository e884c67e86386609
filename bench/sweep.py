"""Sweep speed: 1,000 backtests of the bundled history on 2 local Dask workers against a
serial loop over the same jobs in the same run.

    python bench/sweep.py [--runs 1000] [--workers 2] [--rounds 4]

The grid (2 venue selections x 10 entry x 5 exit thresholds x 2 estimators x 5 minimum
holds) runs on the bundled 2023-01 → 2024-07 stretch where Binance, Bybit and OKX all have
data. The serial loop is the one a user would write: ``replay`` (what ``perpcarry
backtest`` runs) per combination, on the history loaded once. The Dask run is ``perpcarry
sweep``'s path: a LocalCluster of single-threaded worker processes, the data scattered once,
jobs grouped by panel key in batches, and each worker reusing the panel it prepared for
runs that differ only in their strategy (``sweep.tasks``). That path also runs in this
process, serially, so the speed-up splits into what the panel reuse gives and what the
second worker gives. The three take turns on slices of the jobs (``--rounds``) so that
other load on the machine falls on all alike. Printed: the speed-up of the Dask run over the
loop (target >= 1.8x on 2 cores), and the scheduling overhead per run: worker-seconds not
spent inside a backtest, per run, against a run's mean time (target under 5 %). Every Dask
result is checked equal to the loop's.

The cores may be shared (other users, CI): before and after, a sample of the loop's backtests
runs in this process and then split over ``--workers`` plain processes (no Dask), and that
ratio, the most this machine gives that many single-threaded processes right now, is printed
beside the sweep's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from pathlib import Path

from perpcarry.backtest.history import load_bundled
from perpcarry.backtest.panel import select
from perpcarry.backtest.run import replay, taker_fees
from perpcarry.config.loader import load_config
from perpcarry.sweep.cluster import SINGLE_THREADED, batches, dask_client, run_on_cluster
from perpcarry.sweep.grid import METRICS, Grid, Job, plan_jobs
from perpcarry.sweep.tasks import SweepData, run_batch

VALUES = {
    "venue": ("bybit,okx", "binance,bybit,okx"),
    "start": ("2023-01-01",),
    "end": ("2024-07-01",),
    "enter_apr": tuple(round(0.05 * i, 2) for i in range(1, 11)),
    "exit_apr": (0.0, 0.01, 0.02, 0.03, 0.04),
    "estimator": ("mean", "ewma"),
    "min_hold_hours": (0.0, 24.0, 48.0, 72.0, 96.0),
}

CALIBRATION_RUNS = 60


def loop_run(data: SweepData, job: Job) -> dict:
    """One run of the serial loop: ``replay`` on the job's selection, as a user would call
    it; the metrics of its summary, or the error it raised."""
    try:
        summary = replay(select(data.history, job.venues, job.symbols), job.settings,
                         job.allocator, data.fees, data.fee_sources, start=job.start,
                         end=job.end).summary
    except Exception as exc:
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    return {"status": "ok", **{name: summary[name] for name in METRICS}}


def _run_when_told(data, jobs, ready, go, spans) -> None:
    loop_run(data, jobs[0])         # imports and first-call costs, not timed
    ready.set()
    go.wait()
    started = time.perf_counter()   # CLOCK_MONOTONIC: comparable across processes
    for job in jobs:
        loop_run(data, job)
    spans.put((started, time.perf_counter()))


def parallel_ceiling(data, jobs, workers: int) -> float:
    """Speed-up of ``workers`` plain processes (no Dask) over this one on the same
    backtests of the loop, measured now: the most a scheduler could reach on this machine
    at the moment. The processes start and load first; the clock runs from a common
    signal."""
    started = time.perf_counter()
    for job in jobs:
        loop_run(data, job)
    serial = time.perf_counter() - started
    context = multiprocessing.get_context("spawn")
    go, spans = context.Event(), context.Queue()
    readies = [context.Event() for _ in range(workers)]
    processes = [context.Process(target=_run_when_told,
                                 args=(data, jobs[i::workers], ready, go, spans))
                 for i, ready in enumerate(readies)]
    # Single-threaded like the sweep's workers, from their start (they import polars first).
    inherited = dict(os.environ)
    os.environ.update(SINGLE_THREADED)
    try:
        for process in processes:
            process.start()
    finally:
        os.environ.clear()
        os.environ.update(inherited)
    for ready in readies:
        ready.wait()
    go.set()
    times = [spans.get() for _ in processes]
    for process in processes:
        process.join()
    return serial / (max(end for _, end in times) - min(start for start, _ in times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="backtests (first N of the grid)")
    parser.add_argument("--workers", type=int, default=2, help="local Dask worker processes")
    parser.add_argument("--rounds", type=int, default=4,
                        help="turns: the three runs alternate on this many slices of the jobs")
    args = parser.parse_args()

    config = load_config(None)
    history = load_bundled()
    fees, sources = taker_fees(config, history["venue"].unique())
    grid = Grid(path=Path("bench"), values=VALUES, data=None)
    jobs, _ = plan_jobs(grid, config, history, fees, walk_forward=False, config_path=None)
    jobs = jobs[:args.runs]
    data = SweepData(history, fees, sources)
    print(f"workload: {len(jobs):,} backtests of the bundled history "
          f"({history.height:,} settlements loaded once)")
    sample = jobs[::max(1, len(jobs) // CALIBRATION_RUNS)][:CALIBRATION_RUNS]
    ceiling_before = parallel_ceiling(data, sample, args.workers)

    # The loop, the sweep's path in this process and Dask take turns on slices of the jobs,
    # so a change in what else runs on the machine falls on all alike; the cluster starts
    # once, before the first turn. Each turn gets the data afresh (as Dask scatters it), so
    # no prepared panel carries over from one turn to the next.
    # CPU seconds beside the wall clock: other load on shared cores stretches the wall time
    # of all three but not the CPU time each spends (all threads of the process; for Dask,
    # the worker processes whole: backtests, scheduling and transfer).
    serial: dict[str, dict] = {}
    records: list[dict] = []
    serial_s = same_path_s = dask_s = 0.0
    serial_cpu = same_path_cpu = dask_cpu = 0.0
    started = time.perf_counter()
    with dask_client(None, args.workers, connect_timeout=30) as client:
        startup_s = time.perf_counter() - started
        size = -(-len(jobs) // args.rounds)
        for first in range(0, len(jobs), size):
            chunk = jobs[first:first + size]
            turn, cpu = time.perf_counter(), time.process_time()
            serial.update((job.key, loop_run(data, job)) for job in chunk)
            serial_s += time.perf_counter() - turn
            serial_cpu += time.process_time() - cpu
            turn, cpu = time.perf_counter(), time.process_time()
            fresh = SweepData(history, fees, sources)
            for batch in batches(chunk, args.workers, None):
                run_batch(fresh, batch)
            same_path_s += time.perf_counter() - turn
            same_path_cpu += time.process_time() - cpu
            cpu = sum(client.run(time.process_time).values())
            turn = time.perf_counter()
            run_on_cluster(client, SweepData(history, fees, sources), chunk, None,
                           records.extend)
            dask_s += time.perf_counter() - turn
            dask_cpu += sum(client.run(time.process_time).values()) - cpu
        stopping = time.perf_counter()
    stop_s = time.perf_counter() - stopping
    n = len(jobs)
    print(f"serial loop (replay per run, as `perpcarry backtest` runs it): {serial_s:.1f} s, "
          f"{serial_s / n * 1000:.0f} ms a backtest ({serial_cpu / n * 1000:.0f} ms CPU)")
    print(f"the sweep's path in this process (one prepared panel per selection, span, "
          f"estimator and cadence, reused by the runs that share it): {same_path_s:.1f} s, "
          f"{same_path_s / n * 1000:.0f} ms a backtest ({same_path_cpu / n * 1000:.0f} ms CPU)")
    busy = sum(r["seconds"] for r in records)
    dask_run = busy / len(records)
    overhead = (dask_s * args.workers - busy) / len(records)
    print(f"dask, {args.workers} workers (the sweep's path): {dask_s:.1f} s from submit to the "
          f"last result, data scattered once per turn (+ {startup_s:.1f} s to start the local "
          f"cluster, {stop_s:.1f} s to stop it), {dask_run * 1000:.0f} ms a backtest inside a "
          f"worker ({dask_cpu / n * 1000:.0f} ms CPU of the workers per backtest)")

    by_key = {r["key"]: r for r in records}
    same = len(by_key) == len(serial) and all(
        by_key[key]["status"] == run["status"]
        and all(by_key[key][m] == run[m] for m in METRICS if run["status"] == "ok")
        for key, run in serial.items())
    failed = sum(run["status"] != "ok" for run in serial.values())
    print(f"same results as the loop: {'yes' if same else 'NO'} ({failed} failed runs in both)")
    ratio = serial_s / dask_s
    end_to_end = serial_s / (dask_s + startup_s + stop_s)
    print(f"speed-up: {ratio:.2f}x over the loop on {args.workers} workers (target >= 1.8x: "
          f"{'yes' if ratio >= 1.8 else 'NO'}); {end_to_end:.2f}x counting the cluster's "
          f"start and stop. Of it, panel reuse {serial_s / same_path_s:.2f}x (the loop over "
          f"the sweep's path in this process), the workers {same_path_s / dask_s:.2f}x (the "
          "sweep's path in this process over Dask)")
    ceiling_after = parallel_ceiling(data, sample, args.workers)
    ceiling = (ceiling_before + ceiling_after) / 2
    print(f"this machine's ceiling now: {ceiling:.2f}x for {args.workers} plain processes "
          f"(no Dask) on {len(sample)} of the backtests (before {ceiling_before:.2f}x, after "
          f"{ceiling_after:.2f}x; cores shared with other work lower it); the workers "
          f"reached {same_path_s / dask_s / ceiling:.0%} of it")
    print(f"scheduling overhead: {overhead * 1000:.1f} ms per run = "
          f"{overhead / dask_run:.1%} of a run's time (target < 5 %: "
          f"{'yes' if overhead / dask_run < 0.05 else 'NO'}; worker-seconds outside "
          "backtests: scatter, batching, transfer, idle tail)")


if __name__ == "__main__":
    main()
