"""Slow-moving venue responses (markets, instrument terms, 24h volumes) kept on disk as JSON
with the time they were fetched. Never used while replaying offline.

A file that cannot be read or is not what this module writes is reported once and the
response fetched again; a file that cannot be written is reported once and not cached.
Several processes may share the directory: each write goes to a temporary file of its own
and replaces the cached file atomically, so a reader sees the old or the new file, whole.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from perpcarry.ccxt.cache_warnings import NOT_CACHING, blocking_path, report_unusable_cache

ENTRY_SHAPE = 'not a cache entry (expected {"fetched_at": <epoch seconds>, "payload": ...})'


class ResponseCache:
    """One JSON file per response name under ``directory``."""

    def __init__(self, directory: Path, clock: Callable[[], datetime], offline: bool) -> None:
        self.directory = directory
        self.clock = clock
        self.offline = offline

    def read(
        self, name: str, max_age_seconds: float, valid: Callable[[Any], bool] | None = None
    ) -> Any | None:
        """A cached payload younger than ``max_age_seconds`` (and, given ``valid``, one it
        accepts), else None."""
        path = self.directory / f"{name}.json"
        if self.offline:
            return None
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None  # not cached yet (what stops it being written is reported then)
        except OSError as err:  # a directory where the file should be, no permission, ...
            report_unusable_cache(path, err.strerror or str(err))
            return None
        try:
            cached = orjson.loads(raw)
        except orjson.JSONDecodeError:
            report_unusable_cache(path, "not valid JSON")
            return None
        fetched_at = cached.get("fetched_at") if isinstance(cached, dict) else None
        if (not isinstance(fetched_at, int | float) or isinstance(fetched_at, bool)
                or "payload" not in cached
                or (valid is not None and not valid(cached["payload"]))):
            report_unusable_cache(path, ENTRY_SHAPE)
            return None
        if self.clock().timestamp() - fetched_at > max_age_seconds:
            return None
        return cached["payload"]

    def write(self, name: str, payload: Any) -> None:
        """Cache ``payload`` as fetched now; when it cannot be written, report it and go on."""
        if self.offline:
            return
        path = self.directory / f"{name}.json"
        entry = orjson.dumps({"fetched_at": self.clock().timestamp(), "payload": payload})
        # Named for this process and write alone, created with the mode a plain write gives.
        temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as err:
            report_unusable_cache(blocking_path(path.parent), err.strerror or str(err),
                                  NOT_CACHING)
            return
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(entry)
            os.replace(temporary, path)
        except OSError as err:
            temporary.unlink(missing_ok=True)
            report_unusable_cache(path, err.strerror or str(err), NOT_CACHING)
