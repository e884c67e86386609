"""What a sweep worker runs: panels prepared once per panel key and reused by the runs that
differ only in their strategy give every run exactly the numbers of its own ``replay``
(what ``perpcarry backtest`` runs), on the bundled real funding history."""

from __future__ import annotations

import pickle
from collections import Counter

import pytest

from perpcarry.backtest import run as backtest_run
from perpcarry.backtest.history import load_bundled
from perpcarry.backtest.panel import select
from perpcarry.config.loader import load_config
from perpcarry.sweep.cluster import batches
from perpcarry.sweep.grid import METRICS, load_grid, plan_jobs
from perpcarry.sweep.tasks import PANELS_KEPT, SweepData, panel_key, run_batch

# Every setting that shapes a panel is swept (with the selection and the span), beside two
# that do not: a key missing one of them would hand runs another run's panel.
# enter_apr first: it varies slowest, so the grid's own order goes through every key twice.
GRID = """[grid]
enter_apr = [0.05, 0.15]
venue = ["bybit,okx", "okx"]
start = "2023-01-01"
end = ["2023-02-01", "2023-03-01"]
estimator = ["mean", "ewma"]
window_days = [3, 7]
ewma_halflife_days = [1, 3]
cadence_hours = [8, 24]
"""


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    path = tmp_path_factory.mktemp("grid") / "grid.toml"
    path.write_text(GRID)
    config = load_config(None)
    history = load_bundled()
    fees, sources = backtest_run.taker_fees(config, history["venue"].unique())
    jobs, _ = plan_jobs(load_grid(path), config, history, fees, walk_forward=False,
                        config_path=None)
    return jobs, SweepData(history, fees, sources)


def test_runs_on_reused_panels_equal_their_own_replay(planned, monkeypatch):
    jobs, data = planned
    built = Counter()
    prepare = backtest_run.prepare

    def counting(history, fees, fee_sources, **kwargs):
        built[tuple(sorted(kwargs.items()))] += 1
        return prepare(history, fees, fee_sources, **kwargs)

    monkeypatch.setattr(backtest_run, "prepare", counting)
    fresh = SweepData(data.history, data.fees, data.fee_sources)
    # Grouped as the client sends them: each panel is built once for all its runs.
    records = [r for batch in batches(jobs, 2, None) for r in run_batch(fresh, batch)]
    keys = {panel_key(job) for job in jobs}
    assert len(keys) == 64 and len(jobs) == 128
    assert sum(built.values()) == len(keys)
    # In the grid's order the keys cycle through more than a worker keeps: each run builds
    # its own panel, and gets the same numbers.
    built.clear()
    again = run_batch(SweepData(data.history, data.fees, data.fee_sources), jobs)
    assert sum(built.values()) == len(jobs)
    by_key = {r["key"]: r for r in records}
    for record in again:
        assert {m: record[m] for m in METRICS} == {m: by_key[record["key"]][m] for m in METRICS}
    for job in jobs:
        record = by_key[job.key]
        assert record["status"] == "ok", record["error"]
        summary = backtest_run.replay(select(data.history, job.venues, job.symbols),
                                      job.settings, job.allocator, data.fees,
                                      data.fee_sources, start=job.start, end=job.end).summary
        for metric in METRICS:
            assert record[metric] == summary[metric], (job.command, metric)
        assert record["span_end"] == summary["end"]
    # Each of those settings moves the numbers, so a key missing one would show above.
    for name in ("venue", "end", "estimator", "window_days", "ewma_halflife_days",
                 "cadence_hours"):
        results: dict[tuple, set] = {}
        for job in jobs:
            rest = tuple(v for k, v in sorted(job.params.items()) if k != name)
            results.setdefault(rest, set()).add(by_key[job.key]["final_equity"])
        assert any(len(equities) > 1 for equities in results.values()), name


def test_batches_keep_each_panel_keys_jobs_together_in_the_given_order(planned):
    jobs, _ = planned
    for size in (None, 1, 5, 1000):
        cut = batches(jobs, 2, size)
        flat = [job for batch in cut for job in batch]
        assert sorted(j.key for j in flat) == sorted(j.key for j in jobs)
        sizes = [len(batch) for batch in cut]
        if size is None:   # 8 batches per worker, shrinking toward the end to a single job
            assert sizes[0] == -(-len(jobs) // 16) and sizes[-1] == 1
            assert sizes == sorted(sizes, reverse=True)
        else:
            assert set(sizes[:-1]) <= {size} and sizes[-1] <= size
        keys = [panel_key(job) for job in flat]
        runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
        assert len(runs) == len(set(keys))   # one contiguous run per key
        for key in set(keys):
            assert [j for j in flat if panel_key(j) == key] == \
                [j for j in jobs if panel_key(j) == key]


def test_data_sent_to_a_worker_leaves_the_prepared_panels_behind(planned):
    jobs, data = planned
    fresh = SweepData(data.history, data.fees, data.fee_sources)
    empty = len(pickle.dumps(fresh))
    run_batch(fresh, jobs[:PANELS_KEPT * 4])
    sent = pickle.dumps(fresh)
    assert len(sent) == empty
    copy = pickle.loads(sent)
    assert run_batch(copy, jobs[:3])[2]["sharpe"] == run_batch(fresh, jobs[:3])[2]["sharpe"]
