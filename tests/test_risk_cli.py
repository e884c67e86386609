"""``perpcarry kill`` and ``resume`` from another process while the trading lock is held,
the opens they stop and let through again, and the same veto for a tripped breaker."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from perpcarry.execution.journal import Journal
from perpcarry.execution.service import journal_path
from perpcarry.risk.state import kill_state, trip_breaker

pytestmark = pytest.mark.usefixtures("data_dir")


def perpcarry(*args: str) -> subprocess.CompletedProcess:
    """The command in a process of its own, as from another shell."""
    return subprocess.run([sys.executable, "-m", "perpcarry", *args], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ))


def open_btc(run_cli):
    result = run_cli("open", "--paper", "--offline", "binance", "BTC", "--notional", "1000",
                     "--json")
    return result.exit_code, json.loads(result.stdout)


def test_kill_from_another_process_while_the_lock_is_held_vetoes_opens_until_resume(
        run_cli, data_dir):
    path = journal_path(data_dir, paper=True)
    # The running loop: this process holds the trading lock.
    with Journal.open(path, trading=True) as running:
        killed = perpcarry("kill", "--paper", "--reason", "exchange incident")
        assert killed.returncode == 0, killed.stderr
        assert "kill switch engaged on" in killed.stdout
        assert "(exchange incident): the running loop stops opening" in killed.stdout
        # The loop's next poll sees it, through the lock it holds.
        state = kill_state(running)
        assert (state.reason, state.flatten) == ("exchange incident", False)
    code, refused = open_btc(run_cli)
    assert (code, refused["state"]) == (1, "failed")
    assert refused["note"] == ("vetoed by checks: kill switch engaged (exchange incident): "
                               "no new positions")
    listed = run_cli("positions")
    assert "kill switch engaged (exchange incident): no new positions until `perpcarry " \
        "resume`" in listed.stdout

    resumed = perpcarry("resume", "--paper")
    assert resumed.returncode == 0, resumed.stderr
    assert "cleared on" in resumed.stdout and "kill switch (exchange incident, since" \
        in resumed.stdout
    code, opened = open_btc(run_cli)
    assert (code, opened["state"]) == (0, "done")
    again = run_cli("resume", "--paper")
    assert again.exit_code == 0 and "nothing to clear" in again.stdout


def test_kill_flatten_is_recorded_for_the_loop(run_cli, data_dir):
    result = run_cli("kill", "--flatten", "--reason", "stop everything")
    assert result.exit_code == 0
    assert "(stop everything): the running loop stops opening and close every position" \
        in result.stdout
    listed = json.loads(run_cli("positions", "--json").stdout)
    assert listed["kill"]["reason"] == "stop everything" and listed["kill"]["flatten"] is True
    assert listed["breaker"] is None
    with Journal.open(journal_path(data_dir, paper=True), trading=False) as journal:
        assert kill_state(journal).flatten is True


def test_a_tripped_breaker_vetoes_opens_and_resume_clears_it(run_cli, data_dir):
    with Journal.open(journal_path(data_dir, paper=True), trading=False) as journal:
        trip_breaker(journal, "drawdown", "unrealised PnL fell 9 % within 300 s")
    code, refused = open_btc(run_cli)
    assert code == 1 and refused["note"] == (
        "vetoed by checks: circuit breaker tripped (unrealised PnL fell 9 % within 300 s): "
        "no new positions")
    listed = json.loads(run_cli("positions", "--json").stdout)
    assert listed["breaker"]["trigger"] == "drawdown" and listed["kill"] is None
    resumed = run_cli("resume")
    assert "circuit breaker (unrealised PnL fell 9 % within 300 s, since" in resumed.stdout
    code, opened = open_btc(run_cli)
    assert (code, opened["state"]) == (0, "done")


def test_kill_refuses_an_empty_reason_and_both_modes(run_cli):
    empty = run_cli("kill", "--reason", "  ")
    assert (empty.exit_code, empty.stderr) == (2, "error: --reason: empty; say why, or leave "
                                               "it out\n")
    both = run_cli("resume", "--paper", "--live")
    assert (both.exit_code, both.stderr) == (2, "error: --paper and --live: choose one\n")


@pytest.mark.parametrize(("section", "message"), [
    ("warning_distance = 0.1", "risk: warning_distance (0.1) must be above floor_distance "
                               "(0.15)"),
    ("top_up_target = 0.15", "risk: top_up_target (0.15) must be above floor_distance (0.15)"),
    ("max_drawdown = 1.5", "risk.max_drawdown: Input should be less than 1"),
])
def test_risk_settings_out_of_range_are_one_line_errors(run_cli, write_config, section,
                                                        message):
    path = write_config(f"[risk]\n{section}\n")
    result = run_cli("--config", str(path), "kill")
    assert (result.exit_code, result.stderr) == (2, f"error: {path}: {message}\n")


def test_an_unreadable_flag_is_named_and_resume_clears_it(run_cli, data_dir):
    with Journal.open(journal_path(data_dir, paper=True), trading=False) as journal:
        journal.set_flag("kill", "engaged by hand")
    listed = run_cli("positions")
    assert listed.exit_code == 2
    assert "the 'kill' flag is not what perpcarry writes ('engaged by hand'" in listed.stderr
    assert "`perpcarry resume` clears it" in listed.stderr
    resumed = run_cli("resume")
    assert resumed.exit_code == 0
    assert "kill switch (an unreadable flag: 'engaged by hand')" in resumed.stdout
    assert run_cli("positions").stdout == "no open positions\n"
