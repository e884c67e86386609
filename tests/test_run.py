"""``perpcarry run``: one cycle on the bundled snapshots (a fresh clone, no config, no
network), the service's stop and wake-up rules, and the one-line refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from perpcarry.config.settings import RunConfig
from perpcarry.run.service import next_wake

# Capital per unit of hedged notional at the allocator's defaults: spot + (1 + buffer) / lev.
K = 1 + (1 + 0.5) / 2


pytestmark = pytest.mark.usefixtures("data_dir")


def cycle(run_cli) -> dict:
    result = run_cli("run", "--paper", "--offline", "--once", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_one_cycle_opens_what_the_rules_choose_within_each_venues_capital(run_cli):
    report = cycle(run_cli)
    opened = [a for a in report["actions"] if a["kind"] == "open"]
    assert opened, report
    assert all(a["state"] == "done" and a["reason"].startswith("enter: net APR")
               for a in opened)
    positions = json.loads(run_cli("positions", "--paper", "--json").stdout)["positions"]
    by_id = {p["position_id"]: p for p in positions}
    for action in opened:
        position = by_id[action["position_id"]]
        assert (position["venue"], position["base"]) == (action["venue"], action["base"])
        # The perp is the target less at most the spot fee charged in base (0.1 %).
        short = Decimal(position["perp_quantity"])
        assert Decimal(action["quantity"]) * Decimal("0.998") <= short \
            <= Decimal(action["quantity"])
    # Each paper account holds 100,000 USDT: no venue is given more than it has.
    for venue in {a["venue"] for a in opened}:
        notional = sum(Decimal(p["perp_proceeds"]) for p in positions if p["venue"] == venue)
        assert float(notional) * K <= 100_000 * 1.001
    # The equity is the accounts' balances, not a --capital: three fresh accounts.
    assert report["equity"] == pytest.approx(300_000)


def test_the_next_cycle_holds_what_is_held(run_cli):
    cycle(run_cli)
    again = cycle(run_cli)
    assert [a for a in again["actions"] if a["kind"] in {"open", "add", "close", "reduce"}] \
        == []
    assert again["positions"] >= 1


@pytest.mark.parametrize(("args", "message"), [
    (["--json"], "--json: with --once or --replay"),
    (["--replay", "2023-01-01"], "--replay: expected START..END"),
    (["--replay", "2023-13-01..2024-01-01"], "'2023-13-01' is not a date"),
    (["--replay", "2024-01-01..2023-01-01"], "must come after the start"),
    (["--replay", "2023-01-01..2023-02-01", "--once"], "--replay and --once"),
    (["--live", "--replay", "2023-01-01..2023-02-01"], "drop --live"),
    (["--live", "--offline"], "--offline: a live account cannot be replayed"),
])
def test_mistakes_are_one_line_and_exit_2(run_cli, args, message):
    result = run_cli("run", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_the_next_cycle_comes_at_the_cadence_or_just_after_a_settlement():
    now = datetime(2025, 9, 9, 7, 58, tzinfo=UTC)
    settings = RunConfig(cadence_minutes=5, after_settlement_seconds=30)
    assert next_wake(now, settings, None) == now + timedelta(minutes=5)
    settlement = datetime(2025, 9, 9, 8, 0, tzinfo=UTC)
    assert next_wake(now, settings, settlement) == settlement + timedelta(seconds=30)
    # A position near danger: the risk monitor's sooner check wins.
    assert next_wake(now, settings, settlement, 20.0) == now + timedelta(seconds=20)
    # A settlement already passed does not pull the cycle back.
    assert next_wake(now, settings, now - timedelta(hours=1)) == now + timedelta(minutes=5)


def test_sigterm_stops_the_service_cleanly_between_cycles(data_dir, tmp_path):
    env = {**os.environ, "PERPCARRY_DATA_DIR": str(data_dir),
           "PERPCARRY_CACHE_DIR": str(tmp_path / "cache")}
    process = subprocess.Popen(
        [sys.executable, "-c", "from perpcarry.cli.app import main; main()", "run",
         "--paper", "--offline", "--log-json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()   # the first cycle's report
        first = json.loads(line)
        assert first["next_cycle"] is not None
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, process.stderr.read()
    # Read by the kill poll every second at most, not at the next 5-minute cycle.
    assert time.monotonic() - started < 30
    from perpcarry.execution.journal import Journal
    from perpcarry.execution.service import journal_path

    with Journal.open(journal_path(data_dir, True), trading=True) as journal:
        assert journal.unfinished_intents() == []


def test_kill_from_another_shell_stops_entries_and_flattens_a_running_loop(data_dir, tmp_path):
    env = {**os.environ, "PERPCARRY_DATA_DIR": str(data_dir),
           "PERPCARRY_CACHE_DIR": str(tmp_path / "cache")}
    entry = [sys.executable, "-c", "from perpcarry.cli.app import main; main()"]
    process = subprocess.Popen([*entry, "run", "--paper", "--offline", "--log-json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    try:
        first = json.loads(process.stdout.readline())
        opened = {a["position_id"] for a in first["actions"] if a["kind"] == "open"}
        assert opened and first["halted"] is None
        # Another shell, while the loop holds the journal's trading lock.
        kill = subprocess.run([*entry, "kill", "--paper", "--flatten", "--reason", "test"],
                              capture_output=True, text=True, env=env, timeout=120)
        assert kill.returncode == 0, kill.stderr
        started = time.monotonic()
        second = json.loads(process.stdout.readline())   # woken by the kill, not at 5 min
        assert time.monotonic() - started < 60
        assert second["halted"] == "kill switch (test)"
        closed = {a["position_id"] for a in second["actions"] if a["kind"] == "close"}
        assert closed == opened
        assert not [a for a in second["actions"] if a["kind"] in {"open", "add"}]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    # A restart stays stopped until `perpcarry resume`.
    from perpcarry.execution.journal import Journal
    from perpcarry.execution.service import journal_path
    from perpcarry.risk.state import kill_state

    with Journal.open(journal_path(data_dir, True), trading=False) as journal:
        assert kill_state(journal).reason == "test"
        assert journal.positions() == []
