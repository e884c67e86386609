"""CLI commands that are more than a few lines; registered in perpcarry.cli."""

from __future__ import annotations

from perpcarry.errors import UsageError


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
