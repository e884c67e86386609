"""What every command shares: the loaded config, the consoles, JSON output and option
parsing. Commands import from here, never from the app that registers them."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from perpcarry.domain.errors import ConfigError, InvalidValue, UsageError

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


def path_option(text: str | None, option: str) -> Path | None:
    """A path option; None when not given. An empty one is refused: ``Path("")`` is the
    working directory, which nobody means by typing ``--out ""``."""
    if text is None:
        return None
    if not text.strip():
        raise UsageError(f"{option}: empty path")
    return Path(text)


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage for tables; ``n/a`` when unknown."""
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


@contextmanager
def value_names(config, section: str, flags: dict[str, tuple[str, float]],
                sections: dict[str, str] | None = None) -> Iterator[None]:
    """Turn core's :class:`InvalidValue`, which names a field, into the error a user can act
    on: the flag when the user passed one (``flags``: field -> (flag, scale), e.g.
    ``{"max_venue_share": ("--venue-cap", 100)}`` for a flag in percent), else the config key
    (``[section] field``, or the section in ``sections`` for that field) and where it was
    set: the file, an env var or the defaults."""
    try:
        yield
    except InvalidValue as exc:
        if exc.field in flags:
            flag, scale = flags[exc.field]
            raise UsageError(exc.describe(flag, scale)) from None
        from perpcarry.config.loader import source_of

        owner = (sections or {}).get(exc.field, section)
        where = source_of((owner, exc.field), config.path)
        key = f"[{owner}] {exc.field}"
        if where == "defaults":
            raise ConfigError(exc.describe(f"{key} (default)")) from None
        raise ConfigError(f"{where}: {exc.describe(key)}") from None


def given(**flags: tuple[str, object, float]) -> dict[str, tuple[str, float]]:
    """The flags a user passed, for :func:`value_names`: field=(flag, value, scale), kept
    when value is not None."""
    return {field: (flag, scale) for field, (flag, value, scale) in flags.items()
            if value is not None}
