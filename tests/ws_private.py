"""The private (account) half of the local websocket server: Bybit's and OKX's login
handshakes as ccxt.pro 4.5 speaks them, and account pushes a test sends. (Binance's
user-data stream lives with the fake exchange: tests/fake_binance_userdata.py.)

- Bybit v5 ``/v5/private``: ``{"op":"auth","args":[key, expires, signature]}``, the
  signature the hex HMAC-SHA256 of ``"GET/realtime" + expires`` under the secret. Success is
  acked ``{"success":true,"ret_msg":"","op":"auth","conn_id":...}``; a wrong key or
  signature gets Bybit's refusal, which echoes the request (key and signature included, as
  in the example ccxt keeps in ``pro/bybit.py`` ``handle_error_message``):
  ``{"success":false,"ret_msg":"error:USVC1111","conn_id":...,"request":{...}}``.
  Subscribes (``order``, ``position``) are acked as on the public stream.
- OKX ``/ws/v5/private``: ``{"op":"login","args":[{apiKey, passphrase, timestamp,
  sign}]}``, the sign the base64 HMAC-SHA256 of ``timestamp + "GET/users/self/verify"``.
  Success: ``{"event":"login","code":"0","msg":"","connId":...}``; a wrong key, passphrase
  or sign: ``{"event":"error","code":"60007","msg":"Invalid sign","connId":...}`` (OKX's
  websocket error codes: 60007 "Invalid sign"). Subscribes are acked
  ``{"event":"subscribe","arg":...}``.

Pushes are sent by :meth:`PrivateWsServer.push` on every logged-in connection of the
venue; what they hold is the test's (tests/ws_captures/PROVENANCE.md says where each
value comes from).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections import Counter, defaultdict

from aiohttp import WSMsgType, web
from ws_server import VENUE_OF_HOST, WsVenueServer

PRIVATE_PATHS = {"bybit": "/v5/private", "okx": "/ws/v5/private"}


class PrivateWsServer(WsVenueServer):
    """The public replays plus the private streams, accepting one key set per venue."""

    def __init__(self, *cassettes, credentials: dict[str, tuple[str, str, str | None]],
                 **options) -> None:
        super().__init__(*cassettes, **options)
        self.credentials = credentials  # venue -> (key, secret, passphrase)
        self.logins: Counter[str] = Counter()
        self.refused_logins: Counter[str] = Counter()
        self.topics: dict[str, list[str]] = defaultdict(list)
        self._sockets: dict[str, list[web.WebSocketResponse]] = defaultdict(list)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        host, _, path = request.path.lstrip("/").partition("/")
        venue = VENUE_OF_HOST.get(host)
        if request.headers.get("Upgrade", "").lower() == "websocket" and venue is not None \
                and "/" + path == PRIVATE_PATHS.get(venue):
            return await self._private(request, venue)
        return await super()._handle(request)

    async def push(self, venue: str, message: dict) -> int:
        """Send ``message`` on every logged-in connection of ``venue``; how many."""
        return await self._in_server_loop(self._push_private(venue, message))

    async def drop(self, venue: str) -> None:
        """Close every private connection of ``venue`` (a network cut)."""
        await self._in_server_loop(self._drop(venue))

    async def _in_server_loop(self, work):
        # The server runs in its own thread and loop; its sockets belong to that loop.
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self._loop))

    async def _push_private(self, venue: str, message: dict) -> int:
        sockets = list(self._sockets[venue])
        for ws in sockets:
            await ws.send_str(json.dumps(message))
        return len(sockets)

    async def _drop(self, venue: str) -> None:
        for ws in list(self._sockets[venue]):
            await ws.close()

    def connected(self, venue: str) -> int:
        return len(self._sockets[venue])

    async def _private(self, request: web.Request, venue: str) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                if message.data == "ping":  # OKX keep-alive
                    await ws.send_str("pong")
                    continue
                await self._private_control(ws, venue, json.loads(message.data))
        finally:
            if ws in self._sockets[venue]:
                self._sockets[venue].remove(ws)
        return ws

    async def _private_control(self, ws: web.WebSocketResponse, venue: str,
                               request: dict) -> None:
        op = request.get("op")
        if op == "ping":  # Bybit keep-alive
            await ws.send_json({"success": True, "ret_msg": "pong", "conn_id": "local",
                                "req_id": request.get("req_id"), "op": "pong"})
        elif op in ("auth", "login"):
            if self._signed(venue, request["args"]):
                self.logins[venue] += 1
                self._sockets[venue].append(ws)
                await ws.send_json({"success": True, "ret_msg": "", "op": "auth",
                                    "conn_id": "local"} if venue == "bybit" else
                                   {"event": "login", "code": "0", "msg": "",
                                    "connId": "local"})
            else:
                self.refused_logins[venue] += 1
                await ws.send_json({"success": False, "ret_msg": "error:USVC1111",
                                    "conn_id": "local", "request": request}
                                   if venue == "bybit" else
                                   {"event": "error", "code": "60007", "msg": "Invalid sign",
                                    "connId": "local"})
        elif op == "subscribe":
            self.subscribes[venue] += 1
            if venue == "bybit":
                self.topics[venue] += request["args"]
                await ws.send_json({"success": True, "ret_msg": "", "conn_id": "local",
                                    "req_id": request.get("req_id"), "op": "subscribe"})
            else:
                for arg in request["args"]:
                    self.topics[venue].append(arg["channel"])
                    await ws.send_json({"event": "subscribe", "arg": arg, "connId": "local"})

    def _signed(self, venue: str, args: list) -> bool:
        key, secret, passphrase = self.credentials[venue]
        if venue == "bybit":
            sent_key, expires, signature = args
            wanted = hmac.new(secret.encode(), f"GET/realtime{expires}".encode(),
                              hashlib.sha256).hexdigest()
            return sent_key == key and hmac.compare_digest(signature, wanted)
        login = args[0]
        wanted = base64.b64encode(hmac.new(
            secret.encode(), f"{login['timestamp']}GET/users/self/verify".encode(),
            hashlib.sha256).digest()).decode()
        return (login["apiKey"], login["passphrase"]) == (key, passphrase) \
            and hmac.compare_digest(login["sign"], wanted)
