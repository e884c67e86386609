"""A local HTTP server for the venue clients to reach through ``[venues.<id>] base_url``.

It answers from recorded sessions (vcrpy cassettes: the bundled snapshots, cassettes/),
matched on host, path and query without the signing parameters, and lets a test replace the
answer to one path: a mutated body, another status, an HTML page, or no answer at all. It
runs in its own thread and event loop, so the CLI under test can run ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

from perpcarry.ccxt.replay import VOLATILE_QUERY

# The block_network mark that lets a test reach this server and nothing else.
LOCAL_ONLY = {"allowed_hosts": [r"^127\.0\.0\.1$"]}


@dataclass(frozen=True)
class Answer:
    """What the server sends back; ``hang`` sends nothing until the client gives up."""

    status: int
    body: str
    content_type: str = "application/json"
    hang: bool = False


# (host, path, query, answer as recorded) -> the answer to send instead, or None to leave it.
Rule = Callable[[str, str, dict[str, str], Answer], Answer | None]


def _key(host: str, path: str, query: str) -> tuple:
    params = frozenset(p for p in parse_qsl(query, keep_blank_values=True)
                       if p[0] not in VOLATILE_QUERY)
    return host, path, params


class VenueServer:
    def __init__(self, *cassettes: Path) -> None:
        self.recorded: dict[tuple, Answer] = {}
        for cassette in cassettes:
            for interaction in json.loads(cassette.read_text())["interactions"]:
                url = urlsplit(interaction["request"]["uri"])
                response = interaction["response"]
                self.recorded.setdefault(_key(url.hostname, url.path, url.query), Answer(
                    response["status"]["code"], response["body"]["string"]))
        self.rule: Rule | None = None
        self.requests: Counter[tuple[str, str]] = Counter()
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        host, _, rest = request.path.lstrip("/").partition("/")
        path = "/" + rest
        self.requests[host, path] += 1
        answer = self.recorded.get(_key(host, path, request.query_string)) or Answer(
            404, json.dumps({"msg": f"not recorded: {request.method} {host}{path}"}))
        if self.rule is not None:
            answer = self.rule(host, path, dict(request.query), answer) or answer
        if answer.hang:
            await asyncio.sleep(3600)
        return web.Response(status=answer.status, body=answer.body.encode(),
                            headers={"Content-Type": answer.content_type})

    def start(self) -> str:
        """Serve on 127.0.0.1 (a free port) in a daemon thread; the base URL."""
        started = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
            started.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        started.wait(10)
        return self.url

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
