"""What every command shares: the loaded config, the consoles, JSON output and option
parsing. Commands import from here, never from the app that registers them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console

from perpcarry.domain.errors import UsageError

console = Console()
err_console = Console(stderr=True)


class State:
    """Set by the app's global options before a command runs."""

    config_path: Path | None = None


state = State()


def load():
    """The configuration named by ``--config`` (or found the usual way), validated."""
    from perpcarry.config.loader import load_config

    return load_config(state.config_path)


def emit_json(payload) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def split_option(values: list[str] | None, option: str) -> tuple[str, ...] | None:
    """A repeatable, comma-separated option (``--venues a,b --venues c``) as one tuple;
    None when not given."""
    if not values:
        return None
    parts = tuple(part.strip() for value in values for part in value.split(",") if part.strip())
    if not parts:
        raise UsageError(f"{option}: no value given")
    return parts


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage for tables; ``n/a`` when unknown."""
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"
