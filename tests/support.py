"""Small helpers the venue and order tests share."""

from __future__ import annotations

import json
from pathlib import Path


async def no_sleep(_seconds: float) -> None:
    """A venue's ``sleep`` in tests: backoffs and Retry-After waits take no time."""
    return None


def recorded_requests(cassette: Path) -> list[dict]:
    """The requests a cassette holds, in order: what the code under test must have sent."""
    return [i["request"] for i in json.loads(cassette.read_text())["interactions"]]
