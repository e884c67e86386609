"""What the fake Binance says on the wire: the faults it injects, Binance's error bodies and
codes (developers.binance.com "Error Codes", read 2026-12) and its response shapes."""

from __future__ import annotations

import json
from decimal import Decimal
from enum import Enum

from aiohttp import web

SPOT, FAPI = "spot", "fapi"


class Fault(Enum):
    TIMEOUT_AFTER_ACCEPT = "accept, then answer later than the client waits"
    ERROR_5XX_AFTER_ACCEPT = "accept, then answer 502"
    UNKNOWN_STATUS_1007 = "accept, then answer -1007 (execution status unknown)"
    RATE_LIMIT_RETRY_AFTER = "429 with Retry-After, not executed"
    RATE_LIMIT = "429 without Retry-After, not executed"
    INSUFFICIENT_MARGIN = "-2019, not executed"
    TIMESTAMP_OUTSIDE_RECV_WINDOW = "-1021, not executed"
    PRECISION = "-1111, not executed"
    MIN_NOTIONAL = "-1013 spot / -4164 futures, not executed"
    PARTIAL_FILL = "fill half the quantity (a crossing order now, a resting one by a taker)"
    NO_FUTURES_PERMISSION = "-2015, the key may not use this endpoint"
    LOST_BEFORE_ACCEPT = "answer later than the client waits, never executed"
    MAINTENANCE_503 = "503 from the gateway during maintenance, not executed"


def text(value: Decimal | int) -> str:
    """A number as Binance writes it: a plain decimal string."""
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def json_response(payload) -> web.Response:
    """HTTP 200 with a JSON body."""
    return web.Response(text=json.dumps(payload), content_type="application/json")


def error_response(status: int, code: int, message: str,
                   headers: dict | None = None) -> web.Response:
    """Binance's error body ``{"code": ..., "msg": ...}`` with an HTTP status."""
    return web.Response(status=status, text=json.dumps({"code": code, "msg": message}),
                        content_type="application/json", headers=headers)


def refusal(fault: Fault, path: str) -> web.Response:
    """The answer to a request refused by ``fault``: nothing executed."""
    futures = path.startswith("/fapi")
    if fault is Fault.RATE_LIMIT_RETRY_AFTER:
        return error_response(429, -1003, "Too many requests; current limit is 2400 requests per "
                      "minute.", {"Retry-After": "7"})
    if fault is Fault.RATE_LIMIT:
        return error_response(429, -1003, "Too many requests; current limit is 2400 requests per "
                      "minute.")
    if fault is Fault.INSUFFICIENT_MARGIN:
        return error_response(400, -2019, "Margin is insufficient.")
    if fault is Fault.TIMESTAMP_OUTSIDE_RECV_WINDOW:
        return error_response(400, -1021, "Timestamp for this request is outside of the "
                              "recvWindow.")
    if fault is Fault.MAINTENANCE_503:
        return web.Response(status=503, text="<html>503 Service Temporarily Unavailable</html>",
                            content_type="text/html")
    if fault is Fault.NO_FUTURES_PERMISSION:
        return error_response(401, -2015, "Invalid API-key, IP, or permissions for action.")
    if fault is Fault.PRECISION:
        return error_response(400, -1111, "Precision is over the maximum defined for this asset.")
    if fault is Fault.MIN_NOTIONAL:
        if futures:
            return error_response(400, -4164, "Order's notional must be no smaller than 20 (unless "
                          "you choose reduce only).")
        return error_response(400, -1013, "Filter failure: NOTIONAL")
    raise AssertionError(fault)


def average_price(order: dict) -> Decimal:
    """The volume-weighted fill price, 0 before any fill (Binance's avgPrice)."""
    return order["quote"] / order["executedQty"] if order["executedQty"] else Decimal(0)


def spot_order(order: dict, fills: list[dict]) -> dict:
    """An order as /api/v3/order answers it (FULL, with ``fills``)."""
    return {"symbol": order["symbol"], "orderId": order["orderId"], "orderListId": -1,
            "clientOrderId": order["clientOrderId"], "transactTime": order["updateTime"],
            "time": order["time"], "updateTime": order["updateTime"],
            "price": text(order["price"]), "origQty": text(order["origQty"]),
            "executedQty": text(order["executedQty"]),
            "cummulativeQuoteQty": text(order["quote"]), "status": order["status"],
            "timeInForce": order["timeInForce"], "type": order["type"], "side": order["side"],
            "workingTime": order["time"], "selfTradePreventionMode": "EXPIRE_MAKER",
            "fills": [{"price": text(f["price"]), "qty": text(f["qty"]),
                       "commission": text(f["commission"]),
                       "commissionAsset": f["commissionAsset"], "tradeId": f["id"]}
                      for f in fills]}


def fapi_order(order: dict) -> dict:
    """An order as /fapi/v1/order answers it (RESULT)."""
    return {"orderId": order["orderId"], "symbol": order["symbol"], "status": order["status"],
            "clientOrderId": order["clientOrderId"], "price": text(order["price"]),
            "avgPrice": text(average_price(order)), "origQty": text(order["origQty"]),
            "executedQty": text(order["executedQty"]), "cumQuote": text(order["quote"]),
            "timeInForce": order["timeInForce"], "type": order["type"],
            "reduceOnly": order["reduceOnly"], "closePosition": False, "side": order["side"],
            "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE",
            "priceProtect": False, "origType": order["type"], "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0,
            "time": order["time"], "updateTime": order["updateTime"]}


def trade_row(trade: dict, kind: str) -> dict:
    """A fill as /api/v3/myTrades or /fapi/v1/userTrades lists it."""
    row = {"symbol": trade["symbol"], "id": trade["id"], "orderId": trade["orderId"],
           "price": text(trade["price"]), "qty": text(trade["qty"]),
           "quoteQty": text(trade["quoteQty"]), "commission": text(trade["commission"]),
           "commissionAsset": trade["commissionAsset"], "time": trade["time"]}
    if kind == SPOT:
        row |= {"orderListId": -1, "isBuyer": trade["side"] == "BUY", "isMaker": False,
                "isBestMatch": True}
    else:
        row |= {"side": trade["side"], "realizedPnl": "0", "marginAsset": "USDT",
                "positionSide": "BOTH", "maker": False, "buyer": trade["side"] == "BUY"}
    return row
