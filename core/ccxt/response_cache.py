"""Slow-moving venue responses (markets, instrument terms, 24h volumes) kept on disk as JSON
with the time they were fetched. Never used while replaying offline."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson


class ResponseCache:
    """One JSON file per response name under ``directory``."""

    def __init__(self, directory: Path, clock: Callable[[], datetime], offline: bool) -> None:
        self.directory = directory
        self.clock = clock
        self.offline = offline

    def read(self, name: str, max_age_seconds: float) -> Any | None:
        """A cached payload younger than ``max_age_seconds``, else None."""
        path = self.directory / f"{name}.json"
        if self.offline or not path.is_file():
            return None
        try:
            cached = orjson.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        if self.clock().timestamp() - cached.get("fetched_at", 0) > max_age_seconds:
            return None
        return cached["payload"]

    def write(self, name: str, payload: Any) -> None:
        if self.offline:
            return
        path = self.directory / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"fetched_at": self.clock().timestamp(), "payload": payload}))
        tmp.replace(path)
