"""Grid files and output paths a user gets wrong: one line naming the file and the field,
exit code 2, nothing written, no cluster started. And the backtest options a grid sweeps
that ``perpcarry backtest`` gained for it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from perpcarry.config.loader import load_config
from perpcarry.sweep.grid import load_grid, plan_jobs

SPAN = 'venue = "bybit,okx"\nstart = "2023-01-01"\nend = "2023-05-01"\n'


@pytest.mark.parametrize(("text", "field", "message"), [
    ("[grid\nenter_apr = 1", None, "not valid TOML"),
    ("[grid]\nenter_apr = [0.1]\nthreshold = [1, 2]\n", "grid.threshold", "unknown parameter"),
    ("[grid]\nenter_apr = [0.1, \"high\"]\n", "grid.enter_apr", "'high': expected a number"),
    ("[grid]\nenter_apr = []\n", "grid.enter_apr", "empty list"),
    ("[grid]\nmax_positions = [2.5]\n", "grid.max_positions", "expected a whole number"),
    ("[grid]\nestimator = [\"mean\", \"median\"]\n", "grid.estimator", "'median'"),
    ("[grid]\nleverage = [2, 9]\n", "grid.leverage", "at most 5, got 9"),
    ("[grid]\nvenue = [\"bybit\", \"kraken\"]\n", "grid.venue", "'kraken': no funding history"),
    ("[grid]\nstart = \"2023-13-01\"\n", "grid.start", "expected a date"),
    ("[grid]\nenter_apr = { from = 0.2, to = 0.1, step = 0.05 }\n", "grid.enter_apr",
     "to >= from"),
    ("[grid]\nenter_apr = 0.1\n[sweep]\nrank_by = \"profit\"\n", "sweep.rank_by",
     "'profit' is not a metric"),
    ("[grid]\nenter_apr = 0.1\n[sweep]\nconstraint = \"drawdown small\"\n",
     "sweep.constraint", "expected 'METRIC < NUMBER'"),
    ("[grid]\nenter_apr = 0.1\n[sweep]\nworkers = 0\n", "sweep.workers", "1 or more"),
    ("[sweep]\nrank_by = \"apr\"\n", "grid", "no parameter given"),
    # Every combination inverts the hysteresis: the conflicting values are named.
    ("[grid]\nenter_apr = [0.01, 0.02]\nexit_apr = [0.05, 0.1]\n", None,
     "no valid combination in the grid: exit_apr 0.05 is above enter_apr 0.01"),
])
def test_bad_grid_is_one_line_naming_file_and_field(run_cli, tmp_path, text, field, message):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    out = tmp_path / "out"
    result = run_cli("sweep", str(path), "--out", str(out))
    assert result.exit_code == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: {path}: " + (f"{field}: " if field else ""))
    assert message in result.stderr
    assert not out.exists()


def test_unreadable_grid_and_bad_out_paths_exit_2_before_anything_runs(run_cli, tmp_path):
    missing = tmp_path / "nope.toml"
    result = run_cli("sweep", str(missing))
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {missing}: cannot read")
    path = tmp_path / "grid.toml"
    path.write_text("[grid]\nenter_apr = [0.1, 0.2]\n")
    a_file = tmp_path / "taken"
    a_file.write_text("")
    for out, message in ((str(a_file), "exists and is not a folder"),
                         ("", "--out: empty path"),
                         (str(a_file / "sub"), "is not a folder")):
        result = run_cli("sweep", str(path), "--out", out)
        assert result.exit_code == 2, result.stderr
        assert result.stderr.startswith("error: ") and message in result.stderr
        assert result.stderr.count("\n") == 1


def test_grid_expands_ranges_lists_and_leaves_out_inverted_hysteresis(tmp_path):
    from perpcarry.backtest.history import load_bundled
    from perpcarry.backtest.run import taker_fees

    path = tmp_path / "grid.toml"
    path.write_text("[grid]\n" + SPAN + "enter_apr = { from = 0.02, to = 0.1, step = 0.04 }\n"
                    "exit_apr = [0.0, 0.05]\nsymbol = [[\"BTC\", \"ETH\"], \"BTC\"]\n")
    grid = load_grid(path)
    assert grid.values["enter_apr"] == (0.02, 0.06, 0.1)     # not 0.06000000000000001
    assert grid.values["symbol"] == ("BTC,ETH", "BTC")
    config = load_config(None)
    history = load_bundled()
    fees, _ = taker_fees(config, history["venue"].unique())
    jobs, notes = plan_jobs(grid, config, history, fees, walk_forward=False, config_path=None)
    # 3 x 2 x 2 combinations less the two whose exit (0.05) is above enter (0.02).
    assert len(jobs) == 10
    assert notes == ["left out 2 combinations: exit_apr 0.05 is above enter_apr 0.02"]
    assert len({job.key for job in jobs}) == 10
    assert jobs[0].command == (
        "perpcarry backtest --venue bybit,okx --symbol BTC,ETH --start 2023-01-01 "
        "--end 2023-05-01 --enter-apr 0.02 --exit-apr 0.0")
    walk, _ = plan_jobs(grid, config, history, fees, walk_forward=True,
                        config_path=tmp_path / "perpcarry.toml")
    train, test = walk[0], walk[1]
    assert (train.part, test.part) == ("train", "test")
    assert train.command.startswith(f"perpcarry --config {tmp_path / 'perpcarry.toml'} "
                                    "backtest ")
    # 120 days, the last 30 % held out: split at the midnight 84 days in.
    assert "--start 2023-01-01 --end 2023-03-25T23:59:59+00:00" in train.command
    assert "--start 2023-03-26 --end 2023-05-01" in test.command


def test_backtest_takes_the_allocator_options_a_sweep_varies(run_cli):
    """Buy and hold one pair: funding scales with the notional the caps and leverage allow
    (one unit of notional uses 1 + 1.5 / leverage of capital)."""
    args = ("backtest", "--venue", "binance", "--symbol", "BTC", "--start", "2024-01-01",
            "--end", "2024-03-01", "--estimator", "current", "--enter-apr=-1e9",
            "--exit-apr=-1e9", "--min-hold-hours", "0", "--no-plots", "--json")

    def funding(*extra: str) -> float:
        result = run_cli(*args, *extra)
        assert result.exit_code == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["entries"] == 1
        return summary["funding_income"]

    base = funding()
    assert funding("--max-asset-share", "0.1") == pytest.approx(base / 2, rel=1e-9)
    assert funding("--leverage", "3") == pytest.approx(base * 1.75 / 1.5, rel=1e-9)
    result = run_cli(*args, "--max-pair-share", "0")
    assert result.exit_code == 2 and "--max-pair-share" in result.stderr


def test_data_path_is_relative_to_the_grid_file_and_in_the_command(tmp_path):
    from perpcarry.backtest.history import load_path
    from perpcarry.backtest.run import taker_fees

    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "aha-3exch"
    folder = tmp_path / "grids"
    folder.mkdir()
    path = folder / "grid.toml"
    path.write_text(f'[grid]\ndata = "{os.path.relpath(shared, folder)}"\n'
                    "enter_apr = [0.05, 0.1]\n")
    grid = load_grid(path)
    assert grid.data == shared
    config = load_config(None)
    history = load_path(grid.data)
    fees, _ = taker_fees(config, history["venue"].unique())
    jobs, _ = plan_jobs(grid, config, history, fees, walk_forward=False, config_path=None)
    assert [job.command for job in jobs] == [
        f"perpcarry backtest --data {grid.data} --enter-apr {apr}" for apr in (0.05, 0.1)]
