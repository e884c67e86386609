"""A local websocket server speaking Binance's, Bybit's and OKX's subscription handshakes and
keep-alives as ccxt.pro expects, replaying real captured pushes (``tests/ws_captures/``,
see PROVENANCE.md there), with faults to inject.

It extends :class:`venue_server.VenueServer`: the same address answers the venues' REST
paths from the bundled snapshots (ccxt.pro's markets come from the REST client) and their
websocket paths, both reached through ``[venues.<id>] base_url`` (``wss://host/path`` is
rebased to ``ws://127.0.0.1:port/host/path``).

- Binance: ``{"method":"SUBSCRIBE","params":[...],"id":n}`` acked ``{"result":null,"id":n}``;
  keep-alive by websocket ping frames (aiohttp answers them unless pings are ignored).
- Bybit v5: ``{"op":"subscribe","args":[...]}`` acked ``{"success":true,...,"op":
  "subscribe"}``; ``{"op":"ping"}`` answered ``{"op":"pong",...}``.
- OKX: ``{"op":"subscribe","args":[{"channel":..,"instId":..}]}`` acked
  ``{"event":"subscribe","arg":..}``; text ``ping`` answered ``pong``.

Each subscribed stream's pushes are sent in a loop, every ``interval`` seconds, re-stamped
with a strictly increasing event time (the values are the captured ones).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from aiohttp import WSMsgType, web
from venue_server import VenueServer

CAPTURES = Path(__file__).parent / "ws_captures"
VENUE_OF_HOST = {"stream.binance.com:9443": "binance", "fstream.binance.com": "binance",
                 "stream.bybit.com": "bybit", "ws.okx.com:443": "okx"}


@dataclass
class Faults:
    """What to break, each once (on the first connection it applies to). Push counts are
    per venue, from 1."""

    disconnect_after: int | None = None  # close the connection after this push
    stall_after: int | None = None  # push nothing more after this one (pings still answered)
    malformed_at: int | None = None  # this push carries an unreadable value
    duplicate_at: int | None = None  # this push is sent twice
    out_of_order_at: int | None = None  # this push is stamped a minute in the past
    ignore_pings: bool = False  # keep-alives get no answer (this venue, every connection)
    # This many resubscriptions (subscribe requests on any connection after the venue's
    # first) get the venue's error answer.
    refuse_subscriptions: int = 0


class WsVenueServer(VenueServer):
    """REST from cassettes plus websocket replays, for ``venues`` (default: all three)."""

    def __init__(self, *cassettes: Path, interval: float = 0.02,
                 venues: tuple[str, ...] = ("binance", "bybit", "okx")) -> None:
        super().__init__(*cassettes)
        self.interval = interval
        self.captures = {v: json.loads((CAPTURES / f"{v}.json").read_text()) for v in venues}
        self.faults: dict[str, Faults] = {v: Faults() for v in venues}
        self.pushed: Counter[str] = Counter()
        self.connections: Counter[str] = Counter()
        self.subscribes: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.pings: Counter[str] = Counter()
        # (venue, event time in ms) -> perf_counter() when the push left, for bench/stream.py.
        self.sent_at: dict[tuple[str, int], float] | None = None
        self._stamp: dict[str, int] = Counter()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        host = request.path.lstrip("/").partition("/")[0]
        if request.headers.get("Upgrade", "").lower() == "websocket" and host in VENUE_OF_HOST:
            return await self._websocket(request, VENUE_OF_HOST[host], _market(request.path))
        return await super()._handle(request)

    # -- one connection -------------------------------------------------------------------

    async def _websocket(self, request: web.Request, venue: str, market: str
                         ) -> web.WebSocketResponse:
        faults = self.faults[venue]
        ws = web.WebSocketResponse(autoping=not faults.ignore_pings)
        await ws.prepare(request)
        self.connections[venue] += 1
        streams: list[str] = []
        pusher: asyncio.Task | None = None
        try:
            async for message in ws:
                if message.type == WSMsgType.PING:  # ignore_pings: no pong
                    self.pings[venue] += 1
                    continue
                if message.type != WSMsgType.TEXT:
                    continue
                keys = await self._control(ws, venue, message.data, market)
                if keys:
                    streams.extend(k for k in keys if k not in streams)
                    if pusher is None:
                        pusher = asyncio.create_task(self._push(ws, venue, streams))
        finally:
            if pusher is not None:
                pusher.cancel()
        return ws

    async def _control(self, ws: web.WebSocketResponse, venue: str, text: str,
                       market: str) -> list[str]:
        """Answer a subscribe or a ping; the stream keys newly subscribed."""
        faults = self.faults[venue]
        if text == "ping":  # OKX keep-alive
            self.pings[venue] += 1
            if not faults.ignore_pings:
                await ws.send_str("pong")
            return []
        request = json.loads(text)
        if venue == "binance":
            self.subscribes[venue] += 1
            if self._refuse(venue):
                await ws.send_json({"error": {"code": 2, "msg": "Invalid request: too many "
                                              "subscriptions"}, "id": request["id"]})
                return []
            await ws.send_json({"result": None, "id": request["id"]})
            return [f"{market}:{p}" for p in request["params"]]
        op = request.get("op")
        if venue == "bybit":
            if op == "ping":
                self.pings[venue] += 1
                if not faults.ignore_pings:
                    await ws.send_json({"success": True, "ret_msg": "pong", "conn_id": "local",
                                        "req_id": request.get("req_id"), "op": "pong"})
                return []
            self.subscribes[venue] += 1
            if self._refuse(venue):
                await ws.send_json({"success": False, "ret_msg": "error:too many requests",
                                    "conn_id": "local", "req_id": request.get("req_id"),
                                    "op": "subscribe"})
                return []
            await ws.send_json({"success": True, "ret_msg": "", "conn_id": "local",
                                "req_id": request.get("req_id"), "op": "subscribe"})
            return [f"{market}:{a}" for a in request["args"]]
        self.subscribes[venue] += 1
        if self._refuse(venue):
            await ws.send_json({"event": "error", "code": "60014",
                                "msg": "Requests too frequent.", "connId": "local"})
            return []
        keys = []
        for arg in request["args"]:
            await ws.send_json({"event": "subscribe", "arg": arg, "connId": "local"})
            keys.append(f"{arg['channel']}:{arg['instId']}")
        return keys

    def _refuse(self, venue: str) -> bool:
        faults = self.faults[venue]
        if faults.refuse_subscriptions > 0 and self.connections[venue] > 1:
            faults.refuse_subscriptions -= 1
            self.refused[venue] += 1
            return True
        return False

    async def _push(self, ws: web.WebSocketResponse, venue: str, streams: list[str]) -> None:
        """Replay the captured pushes of the subscribed streams, round robin, forever."""
        faults = self.faults[venue]
        cycles = {}
        for n in itertools.count(1):
            live = [k for k in streams if self.captures[venue].get(k)]
            if not live:
                await asyncio.sleep(self.interval)
                continue
            key = live[n % len(live)]
            cycles.setdefault(key, itertools.cycle(self.captures[venue][key]))
            push = self._stamped(venue, next(cycles[key]))
            count = self.pushed[venue] + 1
            if faults.out_of_order_at == count:
                faults.out_of_order_at = None
                push = _restamp(venue, push, self._stamp[venue] - 60_000)
            if faults.malformed_at == count:
                faults.malformed_at = None
                push = _malformed(venue, push)
            copies = 2 if faults.duplicate_at == count else 1
            if copies == 2:
                faults.duplicate_at = None
            for copy_number in range(copies):
                if copy_number:  # apart, so ccxt does not fold the two into one update
                    await asyncio.sleep(self.interval)
                if self.sent_at is not None:
                    self.sent_at[(venue, self._stamp[venue])] = time.perf_counter()
                await ws.send_str(json.dumps(push))
                self.pushed[venue] += 1
            if faults.disconnect_after is not None and count >= faults.disconnect_after:
                faults.disconnect_after = None
                await ws.close()
                return
            if faults.stall_after is not None and count >= faults.stall_after:
                faults.stall_after = None
                await asyncio.sleep(3600)
            await asyncio.sleep(self.interval)

    def _stamped(self, venue: str, push: dict) -> dict:
        """``push`` with the next event time: now, or one millisecond after the last."""
        self._stamp[venue] = max(int(time.time() * 1000), self._stamp[venue] + 1)
        return _restamp(venue, push, self._stamp[venue])


def _market(path: str) -> str:
    """Which market a connection's path serves: Binance by host, Bybit by path."""
    if path.lstrip("/").startswith("stream.binance.com"):
        return "spot"
    if "/v5/public/" in path:
        return path.rstrip("/").rsplit("/", 1)[-1]  # spot | linear
    return "perp"


def _restamp(venue: str, push: dict, ms: int) -> dict:
    push = copy.deepcopy(push)
    if venue == "binance":
        if "E" in push:  # a spot bookTicker push carries no event time: none is added
            push["E"] = ms
    elif venue == "bybit":
        push["ts"] = ms
    else:
        for row in push["data"]:
            row["ts"] = str(ms)
    return push


def _malformed(venue: str, push: dict) -> dict:
    """The push with its price field replaced by text no venue would send."""
    if venue == "binance":
        push["p" if "p" in push else "b"] = "not-a-number"
    elif venue == "bybit":
        push["data"]["markPrice"] = "not-a-number"
    else:
        row = push["data"][0]
        for name in ("markPx", "fundingRate"):
            if name in row:
                row[name] = "not-a-number"
    return push
