"""A local HTTP server answering from recorded cassettes, with an injected delay.

Venue clients reach it through ``VenueContext(base_url=...)``, which turns
``https://host/path`` into ``{base_url}/host/path``. Requests are matched on host, path and
query; a request whose query was not recorded gets the first recording of the same path
(the benchmark measures requests and latency, not values), and an unknown path gets ``{}``.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web


def _key(host: str, path: str, query: str) -> tuple[str, str, frozenset]:
    return host, path, frozenset(parse_qsl(query, keep_blank_values=True))


class ReplayServer:
    def __init__(self, cassettes: list[Path], delay_seconds: float) -> None:
        self.delay = delay_seconds
        self.exact: dict[tuple, dict] = {}
        self.by_path: dict[tuple[str, str], dict] = {}
        for cassette in cassettes:
            for interaction in json.loads(cassette.read_text())["interactions"]:
                url = urlsplit(interaction["request"]["uri"])
                response = interaction["response"]
                self.exact.setdefault(_key(url.hostname, url.path, url.query), response)
                self.by_path.setdefault((url.hostname, url.path), response)
        self.requests: Counter[str] = Counter()
        # Every request since the last reset, as "/host/path?query", in arrival order.
        self.log: list[str] = []

    async def _handle(self, request: web.Request) -> web.Response:
        host, _, path = request.path.lstrip("/").partition("/")
        self.requests[host] += 1
        self.log.append(request.path_qs)
        await asyncio.sleep(self.delay)
        recorded = self.exact.get(_key(host, "/" + path, request.query_string)) or \
            self.by_path.get((host, "/" + path))
        if recorded is None:
            return web.json_response({})
        body = recorded["body"]["string"]
        headers = {k: v[0] for k, v in recorded["headers"].items()
                   if k.lower() in {"content-type", "retry-after"}}
        return web.Response(status=recorded["status"]["code"], body=body.encode(),
                            headers=headers)

    async def _stats(self, request: web.Request) -> web.Response:
        if request.method == "DELETE":
            self.requests.clear()
            self.log.clear()
        if "log" in request.query:
            return web.json_response(self.log)
        return web.json_response(dict(self.requests))

    def serve(self, port_out) -> None:
        """Run the server until the process is terminated (in a child process)."""
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_route("*", "/__stats", self._stats)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port_out.send(site._server.sockets[0].getsockname()[1])
        loop.run_forever()


class ServerProcess:
    """The replay server in its own process, so its work never competes with the client
    being measured for the interpreter lock."""

    def __init__(self, cassettes: list[Path], delay_seconds: float) -> None:
        self._server = ReplayServer(cassettes, delay_seconds)
        self.url = ""

    def start(self) -> str:
        receive, send = multiprocessing.Pipe(duplex=False)
        self._process = multiprocessing.Process(target=self._server.serve, args=(send,),
                                                daemon=True)
        self._process.start()
        self.url = f"http://127.0.0.1:{receive.recv()}"
        return self.url

    def _stats(self, method: str, query: str = "") -> Any:
        import urllib.request

        request = urllib.request.Request(f"{self.url}/__stats{query}", method=method)
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())

    @property
    def requests(self) -> dict[str, int]:
        return self._stats("GET")

    @property
    def log(self) -> list[str]:
        """Every request since the last reset, as "/host/path?query", in arrival order."""
        return self._stats("GET", "?log")

    def reset(self) -> None:
        self._stats("DELETE")

    def stop(self) -> None:
        self._process.terminate()
        self._process.join()
