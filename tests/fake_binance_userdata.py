"""The fake Binance's USDⓈ-M user-data stream, as ccxt.pro 4.5 reaches it.

- ``POST /fapi/v1/listenKey`` (API key header only, unsigned, as Binance documents it)
  answers ``{"listenKey": ...}``; without the key header (or with another key than
  ``api_key``), Binance's -2015 refusal. ``PUT``
  (ccxt's keep-alive every 20 minutes) answers the same key.
- The websocket ``fstream.binance.com/private/ws?listenKey=<key>`` (where ccxt 4.5 connects
  for "linear") accepts the current key only, and closes with Binance's -1125 "This
  listenKey does not exist." text otherwise.
- Whenever a USDⓈ-M order it holds changes, an ``ORDER_TRADE_UPDATE`` is pushed on every
  open user-data socket. Its shape is the real captured event
  (shared/data/raw-responses/binance/private-usdm-userdata_2024-12-12_eduDorus-arkin/
  ORDER_TRADE_UPDATE_1.json, see tests/ws_captures/PROVENANCE.md); its values are the fake's
  own order and fill. :meth:`UserData.push` sends any event as given (the real captures).
- ``fill_delay_seconds`` > 0: a USDⓈ-M market order is answered NEW and filled that much
  later (what Binance answers under load, or with ``newOrderRespType=ACK``), so the
  executor has a working order to follow.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
from pathlib import Path

from aiohttp import web
from fake_binance_wire import average_price, error_response, json_response, text

USERDATA = (Path(__file__).resolve().parents[2] / "shared" / "data" / "raw-responses"
            / "binance" / "private-usdm-userdata_2024-12-12_eduDorus-arkin")
TEMPLATE = json.loads((USERDATA / "ORDER_TRADE_UPDATE_1.json").read_text())
USER_DATA_PATH = "/private/ws"


class UserData:
    """Listen keys, open user-data sockets and what was pushed on them."""

    def __init__(self) -> None:
        self.listen_key: str | None = None
        self.sockets: list[web.WebSocketResponse] = []
        self.pushed: list[dict] = []
        self.refused: list[str] = []
        self.fill_delay_seconds = 0.0
        self.api_key: str | None = None  # the only key accepted; None: any key
        self._tasks: set[asyncio.Task] = set()

    def listen_key_answer(self, request: web.Request) -> web.Response:
        """POST or PUT /fapi/v1/listenKey."""
        key = request.headers.get("X-MBX-APIKEY")
        if not key or self.api_key not in (None, key):
            return error_response(401, -2015, "Invalid API-key, IP, or permissions for "
                                  "action.")
        if request.method == "POST" or self.listen_key is None:
            self.listen_key = self.listen_key or secrets.token_hex(32)
        return json_response({"listenKey": self.listen_key})

    async def connect(self, request: web.Request) -> web.WebSocketResponse:
        """A user-data socket: the current listen key, or Binance's refusal."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        key = request.query.get("listenKey")
        if key is None or key != self.listen_key:
            self.refused.append(key or "")
            await ws.send_str(json.dumps({"code": -1125,
                                          "msg": "This listenKey does not exist."}))
            await ws.close()
            return ws
        self.sockets.append(ws)
        try:
            async for _ in ws:  # the client sends nothing but pings (answered by aiohttp)
                pass
        finally:
            self.sockets.remove(ws)
        return ws

    async def push(self, event: dict) -> None:
        """Send ``event`` on every open user-data socket."""
        self.pushed.append(event)
        for ws in list(self.sockets):
            await ws.send_str(json.dumps(event))

    async def drop(self) -> None:
        """Close every user-data socket (a network cut)."""
        for ws in list(self.sockets):
            await ws.close()

    def order_changed(self, order: dict, trade: dict | None, now: int) -> None:
        """Push the ORDER_TRADE_UPDATE of ``order`` (after ``trade``, if it just filled)."""
        task = asyncio.get_running_loop().create_task(self.push(order_event(order, trade,
                                                                            now)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def later(self, delay: float, fill) -> None:
        """Run ``fill`` after ``delay`` seconds (a market order matched after its answer)."""
        async def run() -> None:
            await asyncio.sleep(delay)
            fill()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def order_event(order: dict, trade: dict | None, now: int) -> dict:
    """The real ORDER_TRADE_UPDATE's shape with ``order``'s values."""
    event = copy.deepcopy(TEMPLATE)
    event["E"] = event["T"] = now
    status = order["status"]
    event["o"] |= {
        "s": order["symbol"], "c": order["clientOrderId"], "S": order["side"],
        "o": order["type"], "ot": order["type"], "f": order["timeInForce"],
        "q": text(order["origQty"]), "p": text(order["price"]),
        "ap": text(average_price(order)), "X": status,
        "x": "TRADE" if trade is not None else ("NEW" if status == "NEW" else status),
        "i": order["orderId"], "z": text(order["executedQty"]),
        "l": text(trade["qty"]) if trade else "0", "L": text(trade["price"]) if trade else "0",
        "n": text(trade["commission"]) if trade else "0",
        "N": trade["commissionAsset"] if trade else "USDT",
        "t": trade["id"] if trade else 0, "T": order["updateTime"], "R": order["reduceOnly"],
        "rp": "0", "b": "0", "a": "0", "m": False}
    return event

