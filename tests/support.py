"""Small helpers the venue and order tests share."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path


async def no_sleep(_seconds: float) -> None:
    """A venue's ``sleep`` in tests: backoffs and Retry-After waits take no time."""
    return None


def recorded_requests(cassette: Path) -> list[dict]:
    """The requests a cassette holds, in order: what the code under test must have sent."""
    return [i["request"] for i in json.loads(cassette.read_text())["interactions"]]


async def until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait on the running loop until ``predicate()`` holds; the test fails after
    ``timeout`` seconds without it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)
