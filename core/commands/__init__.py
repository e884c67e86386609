"""CLI commands that are more than a few lines; registered in perpcarry.cli."""

from __future__ import annotations


def split_option(values: list[str] | None) -> tuple[str, ...] | None:
    """A repeatable, comma-separated option (``--venues a,b --venues c``) as one tuple."""
    if not values:
        return None
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage for tables; ``n/a`` when unknown."""
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"
