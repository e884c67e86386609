"""Log sinks, configured by the CLI only. Tracebacks never show local variables."""

from __future__ import annotations

import sys

from loguru import logger


def configure_logging(level: str, as_json: bool) -> None:
    logger.remove()
    logger.add(sys.stderr, level=level.upper(), serialize=as_json, diagnose=False,
               backtrace=False,
               format="<level>{level: <7}</level> {name}: {message}")
    # "" re-enables every library that disabled its logger: core and all plugins alike.
    logger.enable("")
