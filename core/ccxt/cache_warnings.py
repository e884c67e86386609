"""A cache never stops a scan: an unusable cache file is reported once and left aside."""

from __future__ import annotations

from pathlib import Path

from loguru import logger

# Files already reported in this process: the venues of one scan share the funding-history
# file and the cache directory, and each would otherwise report the same damage.
_reported: set[Path] = set()

DAMAGED = "ignoring it and fetching from the venue; delete it to rebuild the cache"
NOT_CACHING = ("fetching from the venue without caching this run; delete it or make it "
               "writable to rebuild the cache")


def report_unusable_cache(path: Path, problem: str, consequence: str = DAMAGED) -> None:
    """Warn, once per process and file, that the cache at ``path`` cannot be used because
    of ``problem``, and what happens instead (``consequence`` says how to clear it)."""
    if path in _reported:
        return
    _reported.add(path)
    logger.warning("cache {}: {}; {}", path, problem, consequence)


def blocking_path(path: Path) -> Path:
    """What stops ``path`` from being created: its nearest ancestor that exists (an
    unwritable directory, or a file where a directory should be)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
