"""A small fake Binance (spot + USDⓈ-M) for the live code path: ccxt over real HTTP.

It speaks the endpoints ccxt calls for the order half (exchangeInfo served from the real
dumps in shared/data, time, order POST/GET/DELETE by client id, open and all orders, trades,
account and balances, positionRisk, income, asset transfer, leverage, marginType,
positionSide/dual), keeps orders in memory per client id, records every request, and
injects faults on demand::

    server.inject("POST /fapi/v1/order", Fault.TIMEOUT_AFTER_ACCEPT)

Market orders fill at the price the test sets (``server.prices``). It checks that private
requests are signed-shaped (``timestamp`` and ``signature`` present, timestamp within
``recvWindow`` of its own clock) but does not verify the HMAC. Error bodies and codes are
Binance's (developers.binance.com "Error Codes", read 2026-12).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl

from aiohttp import web
from fake_binance_userdata import USER_DATA_PATH, UserData
from fake_binance_wire import (
    FAPI,
    SPOT,
    Fault,
    error_response,
    fapi_order,
    json_response,
    refusal,
    spot_order,
    text,
    trade_row,
)

RAW = Path(__file__).resolve().parents[2] / "shared" / "data" / "raw-responses" / "binance"
SPOT_INFO = RAW / (
    "api-v3-exchangeInfo_spot-full_2023-09-08_SM2A-Binance_API_exchangeInfoCompact.json")
FAPI_INFO = RAW / "fapi-v1-exchangeInfo_usdm-full_2025-08-22_eduDorus-arkin_binance_usdm.json"
# The fake lists only these (trimmed at load time; the full dumps are 2-3 MB).
SYMBOLS = frozenset({"BTCUSDT", "ETHUSDT"})
SPOT_FEE = Decimal("0.001")  # regular-tier spot taker
FAPI_FEE = Decimal("0.0005")  # regular-tier USDⓈ-M taker (the real ETHUSDT fill's 0.05 %)


ACCEPTING = {Fault.TIMEOUT_AFTER_ACCEPT, Fault.ERROR_5XX_AFTER_ACCEPT,
             Fault.UNKNOWN_STATUS_1007, Fault.PARTIAL_FILL}


@dataclass
class Recorded:
    method: str
    path: str  # without the rebased host, e.g. /fapi/v1/order
    params: dict[str, str]


@dataclass
class FakeBinance:
    """The fake's state; tests set prices, balances and faults, and read ``requests``."""

    prices: dict[str, Decimal] = field(default_factory=dict)
    spot_balances: dict[str, Decimal] = field(default_factory=dict)
    futures_wallet: Decimal = Decimal(0)
    funding_balances: dict[str, Decimal] = field(default_factory=dict)
    income: list[dict] = field(default_factory=list)
    clock_offset_ms: int = 0  # the venue's clock ahead of ours
    timeout_seconds: float = 1.0
    latency_seconds: float = 0.0  # added to every answer (bench/execution.py round trips)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self.orders: dict[tuple[str, str], dict] = {}  # (spot|fapi, clientOrderId)
        self.trades: list[dict] = []
        self.positions: dict[str, dict] = {}  # symbol -> {amt, entry}
        self.position_side_dual = False
        self.margin_type: dict[str, str] = {}
        self.leverage: dict[str, int] = {}
        self._faults: dict[str, deque[Fault]] = {}
        self._ids = itertools.count(8389765792662572101)  # a real-looking USDⓈ-M order id
        self._runner: web.AppRunner | None = None
        self.user_data = UserData()  # the USDⓈ-M user-data stream (fake_binance_userdata)

    # -- test API -------------------------------------------------------------------

    def inject(self, route: str, *faults: Fault) -> None:
        """The next requests to ``route`` ("POST /fapi/v1/order") meet ``faults`` in order."""
        self._faults.setdefault(route, deque()).extend(faults)

    def inject_any(self, routes: tuple[str, ...], *faults: Fault) -> None:
        """The next requests to any of ``routes`` meet ``faults`` in order: one queue the
        routes share (it replaces what was queued on them)."""
        shared = deque(faults)
        for route in routes:
            self._faults[route] = shared

    def settle_funding(self, symbol: str, rate: Decimal) -> None:
        """Settle funding on the open position of ``symbol`` at ``rate`` and the current
        price, as Binance does: a FUNDING_FEE income record of -rate x mark x position
        (a short receives a positive rate), credited to the futures wallet."""
        amount = -rate * self.prices[symbol] * self.positions[symbol]["amt"]
        amount = amount.quantize(Decimal("1e-8"))  # Binance's income has 8 decimals
        self.futures_wallet += amount
        self.income.append({"symbol": symbol, "incomeType": "FUNDING_FEE",
                            "income": text(amount), "asset": "USDT", "time": self._now(),
                            "info": "FUNDING_FEE", "tranId": next(self._ids),
                            "tradeId": ""})

    def sent(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    async def start(self) -> FakeBinance:
        app = web.Application()
        app.router.add_route("*", "/{host}/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- dispatch -------------------------------------------------------------------

    def _now(self) -> int:
        return int(time.time() * 1000) + self.clock_offset_ms

    async def _handle(self, request: web.Request) -> web.Response:
        if self.latency_seconds:
            await asyncio.sleep(self.latency_seconds)
        path = "/" + request.match_info["path"]
        if path == USER_DATA_PATH and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.user_data.connect(request)
        if path == "/fapi/v1/listenKey":  # unsigned: the API key header only
            self.requests.append(Recorded(request.method, path, {}))
            return self.user_data.listen_key_answer(request)
        params = dict(parse_qsl(request.query_string))
        if request.can_read_body:
            params.update(parse_qsl(await request.text()))
        self.requests.append(Recorded(request.method, path, params))
        route = f"{request.method} {path}"
        handler = ROUTES.get(route)
        if handler is None:
            return error_response(404, -1, f"fake binance has no route {route}")
        if not route.endswith(("/exchangeInfo", "/time")):
            refused = self._check_signed(params)
            if refused is not None:
                return refused
        queue = self._faults.get(route)
        fault = queue.popleft() if queue else None
        if fault is Fault.LOST_BEFORE_ACCEPT:
            await asyncio.sleep(self.timeout_seconds)
            return error_response(504, -1007, "Timeout waiting for response from backend "
                                  "server.")
        if fault is not None and fault not in ACCEPTING:
            return refusal(fault, path)
        response = handler(self, params, fault)
        if route in ("POST /fapi/v1/order", "DELETE /fapi/v1/order") and response.status == 200:
            order = self._lookup(FAPI, {"origClientOrderId": params.get(
                "newClientOrderId", params.get("origClientOrderId"))})
            fill = self.trades[-1] if self.trades and order is not None \
                and self.trades[-1]["orderId"] == order["orderId"] \
                and route.startswith("POST") else None
            if order is not None:
                self.user_data.order_changed(order, fill, self._now())
        if fault is Fault.TIMEOUT_AFTER_ACCEPT:
            await asyncio.sleep(self.timeout_seconds)
        elif fault is Fault.ERROR_5XX_AFTER_ACCEPT:
            return web.Response(status=502, text="<html>502 Bad Gateway</html>",
                                content_type="text/html")
        elif fault is Fault.UNKNOWN_STATUS_1007:
            return error_response(408, -1007, "Timeout waiting for response from backend server. "
                          "Send status unknown; execution status unknown.")
        return response

    def _check_signed(self, params: dict[str, str]) -> web.Response | None:
        if "signature" not in params or "timestamp" not in params:
            return error_response(400, -1102, "Mandatory parameter 'signature' was not sent, was "
                          "empty/null, or malformed.")
        window = int(params.get("recvWindow", 5000))
        if abs(int(params["timestamp"]) - self._now()) > window:
            return error_response(400, -1021, "Timestamp for this request is outside of the "
                          "recvWindow.")
        return None

    # -- orders ---------------------------------------------------------------------

    def _place(self, kind: str, params: dict[str, str], fault: Fault | None) -> web.Response:
        client_id = params["newClientOrderId"]
        existing = self.orders.get((kind, client_id))
        if existing is not None and existing["status"] in ("NEW", "PARTIALLY_FILLED"):
            if kind == FAPI:
                return error_response(400, -4116, "ClientOrderId is duplicated.")
            return error_response(400, -2010, "Duplicate order sent.")
        symbol, side, order_type = params["symbol"], params["side"], params["type"]
        quantity = Decimal(params["quantity"])
        if kind == SPOT and side == "BUY":
            cost = quantity * Decimal(params.get("price") or self.prices[symbol])
            if self.spot_balances.get("USDT", Decimal(0)) < cost:
                return error_response(400, -2010, "Account has insufficient balance for requested "
                              "action.")
        if kind == FAPI and params.get("reduceOnly") == "true":
            held = self.positions.get(symbol, {"amt": Decimal(0)})["amt"]
            # One-way mode: a reduce-only order must face the position and not exceed it
            # (the fake refuses an oversized one rather than trimming it).
            reducible = -held if side == "BUY" else held
            if quantity > reducible:
                return error_response(400, -2022, "ReduceOnly Order is rejected.")
        now = self._now()
        order = {
            "symbol": symbol, "orderId": next(self._ids), "clientOrderId": client_id,
            "side": side, "type": order_type, "origQty": quantity,
            "price": Decimal(params.get("price", "0")), "executedQty": Decimal(0),
            "quote": Decimal(0), "status": "NEW",
            "timeInForce": params.get("timeInForce", "GTC"),
            "reduceOnly": params.get("reduceOnly") == "true", "time": now, "updateTime": now,
        }
        self.orders[(kind, client_id)] = order
        price = self.prices[symbol]
        crosses = order_type == "MARKET" or (
            order_type in ("LIMIT", "LIMIT_MAKER")
            and (order["price"] >= price if side == "BUY" else order["price"] <= price))
        if order_type == "LIMIT_MAKER" or order["timeInForce"] == "GTX":
            if crosses and kind == SPOT:
                # Spot refuses a LIMIT_MAKER that would take; USDⓈ-M accepts a GTX order
                # and expires it.
                del self.orders[(kind, client_id)]
                return error_response(400, -2010, "Order would immediately match and take.")
            if crosses:
                order["status"] = "EXPIRED"
                return self._order_response(kind, order, [])
            crosses = False
        fills = []
        if crosses and kind == FAPI and order_type == "MARKET" \
                and self.user_data.fill_delay_seconds:
            self.user_data.later(self.user_data.fill_delay_seconds,
                                 lambda: self._fill_later(order, quantity))
            return self._order_response(kind, order, [])
        if crosses:
            fill = quantity / 2 if fault is Fault.PARTIAL_FILL else quantity
            fills = [self._fill(kind, order, fill, price)]
            if order["executedQty"] == quantity:
                order["status"] = "FILLED"
            elif order_type == "MARKET" or order["timeInForce"] == "IOC":
                order["status"] = "EXPIRED"
            else:
                order["status"] = "PARTIALLY_FILLED"
        elif order["timeInForce"] == "IOC":
            order["status"] = "EXPIRED"
        elif fault is Fault.PARTIAL_FILL:
            # A resting order: a taker fills half of it at its price.
            fills = [self._fill(kind, order, quantity / 2, order["price"])]
            order["status"] = "PARTIALLY_FILLED"
        return self._order_response(kind, order, fills)

    def _fill(self, kind: str, order: dict, quantity: Decimal, price: Decimal) -> dict:
        symbol, side = order["symbol"], order["side"]
        base, quote = symbol.removesuffix("USDT"), "USDT"
        notional = quantity * price
        if kind == SPOT:
            # A spot buy pays its fee in the base asset, a sell in the quote.
            fee, fee_asset = ((quantity * SPOT_FEE, base) if side == "BUY"
                              else (notional * SPOT_FEE, quote))
            sign = 1 if side == "BUY" else -1
            self.spot_balances[base] = self.spot_balances.get(base, Decimal(0)) \
                + sign * quantity - (fee if fee_asset == base else 0)
            self.spot_balances[quote] = self.spot_balances.get(quote, Decimal(0)) \
                - sign * notional - (fee if fee_asset == quote else 0)
        else:
            fee, fee_asset = notional * FAPI_FEE, quote
            self.futures_wallet -= fee
            position = self.positions.setdefault(symbol, {"amt": Decimal(0),
                                                          "entry": Decimal(0)})
            signed = quantity if side == "BUY" else -quantity
            if position["amt"] == 0 or (position["amt"] > 0) == (signed > 0):
                total = position["amt"] + signed
                position["entry"] = (position["entry"] * abs(position["amt"])
                                     + price * quantity) / abs(total)
                position["amt"] = total
            else:
                position["amt"] += signed
        order["executedQty"] += quantity
        order["quote"] += notional
        order["updateTime"] = self._now()
        trade = {"symbol": symbol, "id": len(self.trades) + 4830000000,
                 "orderId": order["orderId"], "price": price, "qty": quantity,
                 "quoteQty": notional, "commission": fee, "commissionAsset": fee_asset,
                 "time": order["updateTime"], "side": side, "kind": kind}
        self.trades.append(trade)
        return trade

    def _fill_later(self, order: dict, quantity: Decimal) -> None:
        trade = self._fill(FAPI, order, quantity, self.prices[order["symbol"]])
        order["status"] = "FILLED"
        self.user_data.order_changed(order, trade, self._now())

    def _order_response(self, kind: str, order: dict, fills: list[dict]) -> web.Response:
        return json_response(spot_order(order, fills) if kind == SPOT else fapi_order(order))

    def _lookup(self, kind: str, params: dict[str, str]) -> dict | None:
        if "origClientOrderId" in params:
            return self.orders.get((kind, params["origClientOrderId"]))
        order_id = int(params.get("orderId", -1))
        return next((o for (k, _), o in self.orders.items()
                     if k == kind and o["orderId"] == order_id), None)

    def _get(self, kind: str, params: dict[str, str], _fault) -> web.Response:
        order = self._lookup(kind, params)
        if order is None:
            return error_response(400, -2013, "Order does not exist.")
        return self._order_response(kind, order, [])

    def _cancel(self, kind: str, params: dict[str, str], _fault) -> web.Response:
        order = self._lookup(kind, params)
        if order is None or order["status"] not in ("NEW", "PARTIALLY_FILLED"):
            return error_response(400, -2011, "Unknown order sent.")
        order["status"] = "CANCELED"
        order["updateTime"] = self._now()
        return self._order_response(kind, order, [])

    def _open(self, kind: str, params: dict[str, str], _fault) -> web.Response:
        rows = [o for (k, _), o in self.orders.items()
                if k == kind and o["status"] in ("NEW", "PARTIALLY_FILLED")
                and params.get("symbol", o["symbol"]) == o["symbol"]]
        return json_response([spot_order(o, []) if kind == SPOT else fapi_order(o) for o in rows])

    def _all(self, kind: str, params: dict[str, str], _fault) -> web.Response:
        rows = [o for (k, _), o in self.orders.items()
                if k == kind and o["symbol"] == params["symbol"]]
        return json_response([spot_order(o, []) if kind == SPOT else fapi_order(o) for o in rows])

    def _trades(self, kind: str, params: dict[str, str], _fault) -> web.Response:
        rows = [t for t in self.trades if t["kind"] == kind and t["symbol"] == params["symbol"]
                and ("orderId" not in params or t["orderId"] == int(params["orderId"]))]
        return json_response([trade_row(t, kind) for t in rows])

    # -- account --------------------------------------------------------------------

    def _spot_account(self, _params, _fault) -> web.Response:
        return json_response({"accountType": "SPOT", "canTrade": True, "permissions": ["SPOT"],
                      "updateTime": self._now(), "balances": [
                          {"asset": a, "free": text(v), "locked": "0.00000000"}
                          for a, v in self.spot_balances.items()]})

    def _futures_account(self, _params, _fault) -> web.Response:
        upnl = sum((self._upnl(s, p) for s, p in self.positions.items()), Decimal(0))
        margin = self.futures_wallet + upnl
        return json_response({"totalWalletBalance": text(self.futures_wallet),
                      "totalMarginBalance": text(margin), "availableBalance": text(margin),
                      "assets": [{"asset": "USDT", "walletBalance": text(self.futures_wallet),
                                  "unrealizedProfit": text(upnl), "marginBalance": text(margin),
                                  "initialMargin": "0", "maintMargin": "0",
                                  "availableBalance": text(margin),
                                  "maxWithdrawAmount": text(margin), "crossWalletBalance":
                                  text(self.futures_wallet), "crossUnPnl": text(upnl),
                                  "updateTime": self._now()}],
                      "positions": []})

    def _funding_assets(self, _params, _fault) -> web.Response:
        return json_response([{"asset": a, "free": text(v), "locked": "0", "freeze": "0",
                       "withdrawing": "0", "btcValuation": "0"}
                      for a, v in self.funding_balances.items()])

    def _upnl(self, symbol: str, position: dict) -> Decimal:
        return (self.prices[symbol] - position["entry"]) * position["amt"]

    def _position_risk(self, _params, _fault) -> web.Response:
        rows = []
        for symbol, p in self.positions.items():
            if not p["amt"]:
                continue
            mark = self.prices[symbol]
            notional = p["amt"] * mark
            rows.append({"symbol": symbol, "positionSide": "BOTH", "positionAmt": text(p["amt"]),
                         "entryPrice": text(p["entry"]), "markPrice": text(mark),
                         "unRealizedProfit": text(self._upnl(symbol, p)),
                         "liquidationPrice": "0", "isolatedMargin": "0",
                         "notional": text(notional), "marginAsset": "USDT",
                         "isolatedWallet": "0",
                         "maintMargin": text(abs(notional) * Decimal("0.004")),
                         "updateTime": self._now()})
        return json_response(rows)

    def _income(self, params: dict[str, str], _fault) -> web.Response:
        start = int(params.get("startTime", 0))
        end = int(params.get("endTime", 2**62))
        limit = int(params.get("limit", 100))
        rows = [r for r in self.income
                if r["incomeType"] == params.get("incomeType", r["incomeType"])
                and start <= int(r["time"]) <= end]
        return json_response(sorted(rows, key=lambda r: int(r["time"]))[:limit])

    def _transfer(self, params: dict[str, str], _fault) -> web.Response:
        amount, asset = Decimal(params["amount"]), params["asset"]
        if params["type"] == "MAIN_UMFUTURE":
            if self.spot_balances.get(asset, Decimal(0)) < amount:
                return error_response(400, -5002, "You have insufficient balance.")
            self.spot_balances[asset] -= amount
            self.futures_wallet += amount
        elif params["type"] == "UMFUTURE_MAIN":
            self.futures_wallet -= amount
            self.spot_balances[asset] = self.spot_balances.get(asset, Decimal(0)) + amount
        else:
            return error_response(400, -1002, f"fake binance: transfer type {params['type']}")
        return json_response({"tranId": 13526853623})

    def _set_leverage(self, params: dict[str, str], _fault) -> web.Response:
        self.leverage[params["symbol"]] = int(params["leverage"])
        return json_response({"leverage": int(params["leverage"]), "maxNotionalValue": "1000000",
                      "symbol": params["symbol"]})

    def _set_margin_type(self, params: dict[str, str], _fault) -> web.Response:
        wanted = params["marginType"]
        if self.margin_type.get(params["symbol"], "CROSSED") == wanted:
            return error_response(400, -4046, "No need to change margin type.")
        self.margin_type[params["symbol"]] = wanted
        return json_response({"code": 200, "msg": "success"})

    def _set_dual(self, params: dict[str, str], _fault) -> web.Response:
        dual = params["dualSidePosition"] == "true"
        if dual == self.position_side_dual:
            return error_response(400, -4059, "No need to change position side.")
        self.position_side_dual = dual
        return json_response({"code": 200, "msg": "success"})

    def _time(self, _params, _fault) -> web.Response:
        return json_response({"serverTime": self._now()})


def _exchange_info(path: Path):
    info = json.loads(path.read_text())
    info["symbols"] = [s for s in info["symbols"] if s["symbol"] in SYMBOLS]
    body = json.dumps(info)
    return lambda _self, _params, _fault: web.Response(text=body,
                                                       content_type="application/json")


def _kind(method, kind):
    return lambda self, params, fault: method(self, kind, params, fault)


ROUTES = {
    "GET /api/v3/exchangeInfo": _exchange_info(SPOT_INFO),
    "GET /fapi/v1/exchangeInfo": _exchange_info(FAPI_INFO),
    "GET /api/v3/time": FakeBinance._time,
    "GET /fapi/v1/time": FakeBinance._time,
    "POST /api/v3/order": _kind(FakeBinance._place, SPOT),
    "POST /fapi/v1/order": _kind(FakeBinance._place, FAPI),
    "GET /api/v3/order": _kind(FakeBinance._get, SPOT),
    "GET /fapi/v1/order": _kind(FakeBinance._get, FAPI),
    "DELETE /api/v3/order": _kind(FakeBinance._cancel, SPOT),
    "DELETE /fapi/v1/order": _kind(FakeBinance._cancel, FAPI),
    "GET /api/v3/openOrders": _kind(FakeBinance._open, SPOT),
    "GET /fapi/v1/openOrders": _kind(FakeBinance._open, FAPI),
    "GET /api/v3/allOrders": _kind(FakeBinance._all, SPOT),
    "GET /fapi/v1/allOrders": _kind(FakeBinance._all, FAPI),
    "GET /api/v3/myTrades": _kind(FakeBinance._trades, SPOT),
    "GET /fapi/v1/userTrades": _kind(FakeBinance._trades, FAPI),
    "GET /api/v3/account": FakeBinance._spot_account,
    "GET /fapi/v3/account": FakeBinance._futures_account,
    "GET /fapi/v2/account": FakeBinance._futures_account,
    "POST /sapi/v1/asset/get-funding-asset": FakeBinance._funding_assets,
    "GET /fapi/v3/positionRisk": FakeBinance._position_risk,
    "GET /fapi/v1/income": FakeBinance._income,
    "POST /sapi/v1/asset/transfer": FakeBinance._transfer,
    "POST /fapi/v1/leverage": FakeBinance._set_leverage,
    "POST /fapi/v1/marginType": FakeBinance._set_margin_type,
    "POST /fapi/v1/positionSide/dual": FakeBinance._set_dual,
}
