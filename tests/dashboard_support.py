"""A journal made by a real replay run, for the dashboard's API and browser tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from perpcarry.config.loader import load_config
from perpcarry.dashboard.documents import Book
from perpcarry.risk.monitor import RiskMonitor
from perpcarry.risk.report import RiskReport
from perpcarry.run.replay import replay

# Three weeks of the bundled history: the loop opens, holds and closes positions on it.
START, END = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 22, tzinfo=UTC)
TOKEN = "test-token-0123456789abcdef"


@dataclass
class Replayed:
    config: object
    book: Book
    cycles: int
    last_risk: RiskReport | None  # RiskMonitor.last after the replay's last cycle


def replayed(folder: Path) -> Replayed:
    """``perpcarry run --paper --replay 2024-03-01..2024-03-22`` into ``folder``."""
    config_file = folder / "perpcarry.toml"
    config_file.write_text(f'data_dir = "{folder / "data"}"\n')
    config = load_config(config_file)
    monitors: list[RiskMonitor] = []
    real_init = RiskMonitor.__init__

    def watched(self, *args, **kwargs):  # the replay's loop makes its own monitor
        real_init(self, *args, **kwargs)
        monitors.append(self)

    RiskMonitor.__init__ = watched
    try:
        report = asyncio.run(replay(config, START, END))
    finally:
        RiskMonitor.__init__ = real_init
    [monitor] = monitors
    return Replayed(config, Book(report.journal, "replay", paper=True), report.cycles,
                    monitor.last)
