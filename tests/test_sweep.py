"""``perpcarry sweep`` on real Dask clusters: a LocalCluster the command starts, and a
``dask scheduler`` + ``dask worker`` pair started here on 127.0.0.1. Every sweep runs the
bundled real funding history; reproducing commands are run and compared exactly."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from perpcarry.sweep.grid import METRICS

# Dask's client, scheduler and workers talk over TCP on the loopback interface only.
pytestmark = pytest.mark.block_network(allowed_hosts=["127.0.0.1"])

# A short stretch of the bundled history where Bybit and OKX both have BTC and ETH.
SPAN = 'venue = "bybit,okx"\nstart = "2023-01-01"\nend = "2023-05-01"\n'
WAIT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(path: Path, text: str, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while text not in path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {path.read_text()[-2000:]}")
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """``dask scheduler`` and one ``dask worker`` on 127.0.0.1; their address."""
    logs = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    processes = []
    try:
        for role, args, ready in (
            ("scheduler", ["--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                           "--no-dashboard"], "Scheduler at"),
            ("worker", [address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
                        "--no-dashboard"], "Registered to"),
        ):
            log = logs / f"{role}.log"
            with log.open("w") as fh:
                processes.append(subprocess.Popen([sys.executable, "-m", "dask", role, *args],
                                                  stdout=fh, stderr=subprocess.STDOUT))
            wait_for(log, ready, processes[-1], f"dask {role}")
        yield address
    finally:
        for process in reversed(processes):
            stop(process)


@pytest.fixture
def grid(tmp_path):
    def write(body: str, sweep: str = "") -> Path:
        path = tmp_path / "grid.toml"
        path.write_text(f"[sweep]\n{sweep}\n[grid]\n{body}")
        return path

    return write


def sweep_json(run_cli, *args: str) -> dict:
    result = run_cli("sweep", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def assert_reproduces(run_cli, command: str, record: dict, prefix: str = "") -> None:
    """The row's command, run as printed (plus output flags), gives the same numbers."""
    words = shlex.split(command)
    assert words[:2] == ["perpcarry", "backtest"]
    result = run_cli(*words[1:], "--json", "--no-plots")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    for metric in METRICS:
        assert summary[metric] == record[prefix + metric], metric
    assert summary["start"] == record[prefix + "span_start"]


def test_local_cluster_sweep_ranks_writes_files_and_rows_reproduce(run_cli, grid, tmp_path):
    path = grid(SPAN + "enter_apr = [0.05, 0.15]\nexit_apr = [0.0, 0.02]\n"
                "window_days = [3, 7]\n", 'rank_by = "apr"')
    out = tmp_path / "out"
    summary = sweep_json(run_cli, str(path), "--workers", "2", "--out", str(out))
    assert summary["scheduler"] == "local (2 workers)" and summary["runs"] == 8
    assert summary["failed"] == 0
    rows = summary["rows"]
    aprs = [row["apr"] for row in rows]
    assert aprs == sorted(aprs, reverse=True) and len(set(aprs)) > 1
    assert [row["rank"] for row in rows] == list(range(1, 9))
    # Parquet and CSV hold every run with its parameters, metrics and command.
    table = pl.read_parquet(out / "results.parquet")
    assert table.height == 8 and table["command"].to_list() == [r["command"] for r in rows]
    assert table["apr"].to_list() == aprs
    with (out / "results.csv").open() as fh:
        assert [float(r["apr"]) for r in csv.DictReader(fh)] == pytest.approx(aprs, rel=1e-12)
    charts = sorted(p.name for p in out.glob("*.png"))
    assert charts == ["heatmap_apr__enter_apr__exit_apr.png",
                      "heatmap_apr__enter_apr__window_days.png",
                      "heatmap_apr__exit_apr__window_days.png"]
    assert all((out / name).stat().st_size > 10_000 for name in charts)
    # A sample of rows: the best, one with the non-default window, the worst.
    sample = [rows[0], next(r for r in rows if r["window_days"] == 3.0), rows[-1]]
    for row in sample:
        assert_reproduces(run_cli, row["command"], row)


def test_scheduler_address_runs_records_a_failing_run_and_goes_on(run_cli, grid, scheduler,
                                                                   tmp_path):
    # OKX's bundled history ends in 2024: its runs over 2025 fail, Bybit's go on.
    path = grid('venue = ["bybit", "okx"]\nstart = "2025-09-01"\nend = "2025-10-15"\n'
                'leverage = [1.5, 3]\nsymbol = "BTC,ETH,SOL"\n'
                'enter_apr = 0.02\nexit_apr = 0.0\n',
                f'scheduler = "{scheduler}"\nrank_by = "sharpe"\nbatch_size = 1')
    summary = sweep_json(run_cli, str(path), "--out", str(tmp_path / "out"))
    assert summary["scheduler"] == scheduler
    assert summary["runs"] == 4 and summary["failed"] == 2
    ok, failed = summary["rows"][:2], summary["rows"][2:]
    assert {r["venue"] for r in ok} == {"bybit"} and {r["status"] for r in ok} == {"ok"}
    assert ok[0]["funding_income"] != ok[1]["funding_income"]   # leverage sizes positions
    for row in failed:
        assert row["venue"] == "okx" and row["status"] == "error"
        assert "no funding history between the chosen start and end" in row["error"]
        result = run_cli(*shlex.split(row["command"])[1:], "--no-plots")
        assert result.exit_code == 2 and "no funding history between" in result.stderr
    for row in ok:
        assert_reproduces(run_cli, row["command"], row)


def test_walk_forward_ranks_on_the_earlier_part_and_reports_the_held_out_part(
        run_cli, grid, scheduler, tmp_path):
    path = grid('venue = "bybit,okx"\nenter_apr = [0.05, 0.1, 0.2]\n',
                f'scheduler = "{scheduler}"\nrank_by = "apr"\ntest_share = 0.25')
    out = tmp_path / "out"
    summary = sweep_json(run_cli, str(path), "--walk-forward", "--out", str(out))
    rows = summary["rows"]
    assert summary["runs"] == 6 and len(rows) == 3
    train = [row["train_apr"] for row in rows]
    assert train == sorted(train, reverse=True)
    for row in rows:
        # The default span (2023-01-01 → 2024-07-01, 547 days) split at a midnight.
        assert row["train_span_start"] == "2023-01-01T00:00:00Z"
        assert row["train_span_end"] < row["test_span_start"]
        assert row["test_span_end"] == "2024-07-01T00:00:00Z"
        assert row["test_apr"] is not None and row["test_apr"] != row["train_apr"]
    assert_reproduces(run_cli, rows[0]["test_command"], rows[0], "test_")
    assert_reproduces(run_cli, rows[-1]["train_command"], rows[-1], "train_")
    assert pl.read_parquet(out / "results.parquet")["part"].to_list().count("test") == 3
    result = run_cli("sweep", str(path), "--walk-forward", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert "chosen on the earlier part: #1" in result.stdout
    assert "held-out" in result.stdout


def test_interrupted_sweep_keeps_its_results_and_resume_skips_them(run_cli, grid, scheduler,
                                                                    tmp_path):
    path = grid(SPAN + "enter_apr = { from = 0.02, to = 0.2, step = 0.02 }\n"
                "exit_apr = [0.0, 0.01, 0.02]\n", "batch_size = 1")
    out = tmp_path / "out"
    journal = out / "runs.jsonl"
    # A local cluster in its own session: Ctrl-C in a terminal signals the whole group,
    # the sweep and its worker processes alike.
    process = subprocess.Popen(
        [sys.executable, "-m", "perpcarry", "sweep", str(path), "--out", str(out),
         "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        start_new_session=True)
    try:
        deadline = time.monotonic() + WAIT_S
        while not (journal.exists() and journal.read_text().count("\n") >= 2):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=WAIT_S)
    finally:
        stop(process)
    assert process.returncode == 130, stderr
    assert stderr.startswith("interrupted: ") and "--resume" in stderr
    assert "Traceback" not in stderr and "Error" not in stderr
    finished = [json.loads(line) for line in journal.read_text().splitlines()]
    assert 2 <= len(finished) < 30
    assert pl.read_csv(out / "results.csv").height == len(finished)

    # Where the rest runs does not matter: the journal keys the runs, not the cluster.
    summary = sweep_json(run_cli, str(path), "--out", str(out), "--resume",
                         "--scheduler", scheduler)
    assert summary["runs"] == 30 and summary["resumed"] == len(finished)
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert lines[:len(finished)] == finished        # kept as they were, not run again
    assert len({r["key"] for r in lines}) == len(lines) == 30
    assert pl.read_parquet(out / "results.parquet").height == 30


def test_local_workers_run_polars_single_threaded_even_if_the_main_module_imported_it(
        tmp_path):
    """Two workers on two cores: a polars pool per core in each would only contend. The
    main module (a script such as bench/sweep.py) imports polars before the cluster starts,
    and a spawned worker imports the main module first."""
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent("""
        import polars
        from perpcarry.sweep.cluster import dask_client

        def pool_size():
            return polars.thread_pool_size()

        if __name__ == "__main__":
            with dask_client(None, 2, connect_timeout=30) as client:
                print(sorted(client.run(pool_size).values()))
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=WAIT_S * 2, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[1, 1]"


def test_unreachable_scheduler_is_one_line_and_exit_code_2(run_cli, grid, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"   # nothing listens there
    path = grid(SPAN + "enter_apr = [0.05, 0.1]\n", "connect_timeout = 1")
    out = tmp_path / "out"
    result = run_cli("sweep", str(path), "--scheduler", address, "--out", str(out))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot reach the Dask scheduler at {address}")
    assert result.stderr.count("\n") == 1
    assert not out.exists()
