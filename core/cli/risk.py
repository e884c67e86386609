"""``perpcarry kill`` and ``perpcarry resume``: the kill switch, from any shell.

Both open the account set's journal without the trading lock, so they work while ``run``
holds it: ``kill`` engages the switch (the running loop stops opening, and with
``--flatten`` closes every position, at its next poll); ``resume`` clears the switch and a
tripped circuit breaker, and says what it cleared. The state lives in the journal, so a
restarted ``run`` stays stopped until ``resume``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from perpcarry.cli.common import console, load
from perpcarry.cli.trade import LiveOption, PaperOption, _mode

DEFAULT_REASON = "perpcarry kill"


def _journal_of(config, paper: bool):
    """The account set's journal, opened without the trading lock."""
    from perpcarry.execution.journal import Journal
    from perpcarry.execution.service import journal_path

    return Journal.open(journal_path(config.data_dir, paper), trading=False)


def kill(
    flatten: Annotated[bool, typer.Option(
        "--flatten", help="Close every position too (the running loop does it).")] = False,
    reason: Annotated[str, typer.Option(
        "--reason", help="Why; shown by positions, the alerts and every refused open.")
    ] = DEFAULT_REASON,
    paper: PaperOption = False, live: LiveOption = False,
) -> int:
    """Engage the kill switch: no new positions until `perpcarry resume`."""
    from perpcarry.domain.errors import UsageError
    from perpcarry.risk.state import engage_kill

    is_paper = _mode(paper, live, False)
    reason = " ".join(reason.split())
    if not reason:
        raise UsageError("--reason: empty; say why, or leave it out")
    with _journal_of(load(), is_paper) as journal:
        state = engage_kill(journal, reason, flatten=flatten)
        path = journal.path
    then = (" and close every position" if state.flatten else "")
    console.print(f"kill switch engaged on {path} at {state.at:%Y-%m-%d %H:%M:%S} UTC "
                  f"({state.reason}): the running loop stops opening{then}",
                  highlight=False, markup=False, soft_wrap=True)
    return 0


def resume(paper: PaperOption = False, live: LiveOption = False) -> int:
    """Clear the kill switch and a tripped circuit breaker: entries may resume."""
    from perpcarry.risk.state import resume as clear

    is_paper = _mode(paper, live, False)
    with _journal_of(load(), is_paper) as journal:
        cleared = clear(journal)
        path = journal.path
    if cleared:
        console.print(f"cleared on {path}: {'; '.join(cleared)}", highlight=False,
                      markup=False, soft_wrap=True)
    else:
        console.print(f"nothing to clear on {path}: the kill switch is off and the breaker "
                      "is not tripped", highlight=False, markup=False, soft_wrap=True)
    return 0


def halt_json(journal) -> dict:
    """The kill switch and the breaker as ``positions --json`` lists them (null when off)."""
    from perpcarry.risk.state import breaker_state, kill_state

    kill, breaker = kill_state(journal), breaker_state(journal)
    return {"kill": None if kill is None else {
                "reason": kill.reason, "at": kill.at.isoformat(), "flatten": kill.flatten},
            "breaker": None if breaker is None else {
                "trigger": breaker.trigger, "reason": breaker.reason,
                "at": breaker.at.isoformat()}}


def halt_note(config, paper: bool) -> str | None:
    """The line ``positions`` prints above its table while entries are stopped."""
    from perpcarry.risk.state import entry_stop

    with _journal_of(config, paper) as journal:
        stop = entry_stop(journal)
    return None if stop is None else f"{stop}: no new positions until `perpcarry resume`"
