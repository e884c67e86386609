"""Build the order-half cassettes (``cassettes/<venue>/orders_*.json``) from ccxt's static
test captures in ../shared/fixtures/ccxt-static (real responses from real, testnet and demo
accounts; see that folder's README).

Not run by CI; it documents provenance (each venue's PROVENANCE.md, "Order half"). The
venue client runs each call while ccxt's ``fetch`` is answered from the capture and every
request it makes is recorded, so each recorded request is exactly what perpcarry sends; the
tests then replay the cassette (a request that differs is not found) and assert the
recorded fields (client id parameter, reduce-only, ``tdMode``, quantity in contracts)
against ccxt's own static request fixtures.

    python cassettes/build_orders_cassettes.py      # from the repo root
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

from perpcarry.ccxt.replay import VOLATILE_QUERY, replaying
from perpcarry.venues.orders import OrderRequest, OrderType, Side, TimeInForce, Wallet
from perpcarry.venues.protocol import VenueContext

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "ccxt-static"
# Unsigned parameters that differ on every request (ccxt's static tests skip them too).
VOLATILE = VOLATILE_QUERY | {"sign"}


def captured(venue: str, method: str, description: str) -> Any:
    """The real ``httpResponse`` of one ccxt static response entry."""
    entries = json.loads((FIXTURES / f"{venue}.json").read_text())["response"]["methods"]
    for entry in entries[method]:
        if entry["description"] == description:
            return entry["httpResponse"]
    raise KeyError(f"{venue} {method} {description!r}")


def _clean(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in VOLATILE]
    return urlunsplit(parts._replace(query=urlencode(query)))


class Recorder:
    """Answers ccxt's ``fetch`` from a list of responses, in order, and records requests."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = list(answers)
        self.interactions: list[dict[str, Any]] = []

    async def fetch(self, url, method="GET", headers=None, body=None):
        answer = self.answers.pop(0)
        self.interactions.append({
            "request": {"method": method, "uri": _clean(url), "body": body, "headers": {}},
            "response": {"status": {"code": 200, "message": "OK"},
                         "headers": {"Content-Type": ["application/json"]},
                         "body": {"string": json.dumps(answer, separators=(",", ":"))}}})
        return answer


async def record(client, markets: Path, out: Path, answers: list[Any],
                 call: Callable[[Any], Awaitable[Any]]) -> None:
    with replaying(markets):
        await client.load_markets()
    recorder = Recorder(answers)
    client.exchange.fetch = recorder.fetch
    await call(client)
    assert not recorder.answers, f"{out.name}: unused answers"
    out.write_text(json.dumps({"version": 1, "interactions": recorder.interactions},
                              indent=1) + "\n")
    print(f"{out.relative_to(REPO)}: {len(recorder.interactions)} requests")


def _context() -> VenueContext:
    return VenueContext(cache_dir=Path(tempfile.mkdtemp()), offline=True)


def _empty_bybit(category: str) -> dict:
    """Bybit's documented envelope of an empty list (v5 "Get Open & Closed Orders")."""
    return {"retCode": 0, "retMsg": "OK", "result": {"nextPageCursor": "", "category":
                                                     category, "list": []},
            "retExtInfo": {}, "time": 1706653482500}


async def bybit() -> None:
    from perpcarry_bybit import BybitConfig
    from perpcarry_bybit.venue import BybitVenue

    out = REPO / "cassettes" / "bybit"
    markets = out / "markets_full.json"
    config = BybitConfig(enabled=True, api_key=SecretStr("k"), secret=SecretStr("s"))

    def client():
        return BybitVenue(config, _context())

    async def place(c):
        spot = await c.market("LTC/USDT")
        await c.place_order(OrderRequest(spot, Side.BUY, Decimal("0.1"), "1609920528444036608",
                                         OrderType.LIMIT, Decimal("60"),
                                         TimeInForce.POST_ONLY))

    created = captured("bybit", "createOrder", "create spot order")
    # Placed, then not yet visible (open nor closed): the follow-up query's empty answers.
    await record(client(), markets, out / "orders_place_spot_ccxt_static.json",
                 [created, _empty_bybit("spot"), _empty_bybit("spot")],
                 lambda c: _ignore_unknown(place(c)))

    # A reduce-only market sell on a perp; the acknowledgement is the real spot one above,
    # its orderLinkId replaced by this order's, and the order is not visible yet.
    reduce_ack = json.loads(json.dumps(created))
    reduce_ack["result"]["orderLinkId"] = "pcreduce1p00000"

    async def place_reduce_only(c):
        swap = await c.market("ADA/USDT:USDT")
        await c.place_order(OrderRequest(swap, Side.SELL, Decimal("81"), "pcreduce1p00000",
                                         reduce_only=True))

    await record(client(), markets, out / "orders_place_reduce_only_ccxt_static.json",
                 [reduce_ack, _empty_bybit("linear"), _empty_bybit("linear")],
                 lambda c: _ignore_unknown(place_reduce_only(c)))

    async def fetch_spot(c):
        await c.fetch_order(await c.market("BTC/USDT"), "1609602210852247041")

    await record(client(), markets, out / "orders_fetch_spot_ccxt_static.json",
                 [captured("bybit", "fetchOrder", "fetch spot buy closed order")], fetch_spot)

    closed = captured("bybit", "fetchClosedOrder",
                      "Fetch swap closed order by its ID and symbol")
    # The capture's orderLinkId is empty (placed without one); ours is filled in.
    closed["result"]["list"][0]["orderLinkId"] = "pcbybitfill1p00000"

    async def fetch_linear(c):
        await c.fetch_order(await c.market("BTC/USDT:USDT"), "pcbybitfill1p00000")

    await record(client(), markets, out / "orders_fetch_linear_closed_ccxt_static.json",
                 [_empty_bybit("linear"), closed], fetch_linear)

    # Cancel of an order that filled first: Bybit answers retCode 110001 "Order does not
    # exist" (documented error code, v5 "Error Codes", in the documented error envelope);
    # the query then finds the real filled order in the history.
    not_found = {"retCode": 110001, "retMsg": "Order does not exist", "result": {},
                 "retExtInfo": {}, "time": 1757837581000}

    async def cancel_filled(c):
        await c.cancel_order(await c.market("BTC/USDT:USDT"), "pcbybitfill1p00000")

    await record(client(), markets, out / "orders_cancel_filled_docs-example.json",
                 [not_found, _empty_bybit("linear"), closed], cancel_filled)

    # Account setup when everything is already in place: 110025 "Position mode is not
    # modified" and 110043 "Set leverage not modified" (documented error codes, v5 "Error
    # Codes"), the account-wide margin mode accepted (documented success envelope).
    def answer(code: int, message: str) -> dict:
        return {"retCode": code, "retMsg": message, "result": {}, "retExtInfo": {},
                "time": 1699440965441}

    async def setup(c):
        await c.setup_account(await c.market("LTC/USDT:USDT"), Decimal(6))

    await record(client(), markets, out / "orders_setup_docs-example.json",
                 [answer(110025, "Position mode is not modified"), answer(0, "OK"),
                  answer(110043, "Set leverage not modified")], setup)

    positions = captured("bybit", "fetchPositions", "Fetch linear position")
    await record(client(), markets, out / "orders_positions_ccxt_static.json",
                 [positions, _empty_bybit("linear")], lambda c: c.fetch_positions())

    # The unified wallet is real; the funding wallet is Bybit's documented example of
    # GET /v5/asset/transfer/query-account-coins-balance (bybit-exchange.github.io/docs/v5/
    # asset/balance/all-balance, read through rosssaunders/coincise @ 030c215a, 2026-12).
    fund = {"retCode": 0, "retMsg": "success", "result": {
        "memberId": "XXXX", "accountType": "FUND", "balance": [
            {"coin": "USDC", "transferBalance": "0", "walletBalance": "0", "bonus": ""}]},
        "retExtInfo": {}, "time": 1675866354913}
    await record(client(), markets, out / "orders_balances_ccxt_static.json",
                 [captured("bybit", "fetchBalance", "balance after availableToWithdraw update"),
                  fund], lambda c: c.fetch_balances())

    funding = captured("bybit", "fetchFundingHistory", "linear funding history")
    await record(client(), markets, out / "orders_funding_ccxt_static.json", [funding],
                 lambda c: c.fetch_funding_payments(datetime(2024, 3, 14, tzinfo=UTC),
                                                    datetime(2024, 3, 20, 12, tzinfo=UTC)))


async def _ignore_unknown(call: Awaitable[Any]) -> None:
    from perpcarry.domain.errors import OutcomeUnknown

    with suppress(OutcomeUnknown):  # the capture's order is never seen again
        await call


async def okx() -> None:
    from perpcarry_okx import OkxConfig
    from perpcarry_okx.venue import OkxVenue

    out = REPO / "cassettes" / "okx"
    markets = REPO / "plugins" / "okx" / "snapshot" / "snapshot.json"
    config = OkxConfig(enabled=True, api_key=SecretStr("k"), secret=SecretStr("s"),
                       passphrase=SecretStr("p"))

    def client():
        return OkxVenue(config, _context())

    open_orders = captured("okx", "fetchOpenOrders",
                           "fetch swap limit open order with take profit and stop loss")
    resting = open_orders["data"][0]
    created = captured("okx", "createOrder", "type2 & type3 together")
    # The acknowledgement of another real order, its ids replaced by those of the resting
    # ADA order it stands for.
    created["data"][0] |= {"clOrdId": resting["clOrdId"], "ordId": resting["ordId"],
                           "tag": ""}

    async def place(c):
        swap = await c.market("ADA/USDT:USDT")
        await c.place_order(OrderRequest(swap, Side.BUY, Decimal("5000"), resting["clOrdId"],
                                         OrderType.LIMIT, Decimal("0.2"),
                                         TimeInForce.POST_ONLY))

    await record(client(), markets, out / "orders_place_swap_ccxt_static.json",
                 [created, open_orders], place)

    # A reduce-only market sell of 0.1 ETH = 1 contract (ctVal 0.1); acknowledged (the real
    # acknowledgement above with this order's clOrdId) and not yet found: OKX's documented
    # error 51603 "Order does not exist" (docs-v5 error codes).
    reduce_ack = json.loads(json.dumps(created))
    reduce_ack["data"][0]["clOrdId"] = "pcreduce1p00000"
    not_found = {"code": "51603", "msg": "Order does not exist", "data": []}

    async def place_reduce_only(c):
        swap = await c.market("ETH/USDT:USDT")
        await c.place_order(OrderRequest(swap, Side.SELL, Decimal("0.1"), "pcreduce1p00000",
                                         reduce_only=True))

    await record(client(), markets, out / "orders_place_reduce_only_ccxt_static.json",
                 [reduce_ack, not_found], lambda c: _ignore_unknown(place_reduce_only(c)))

    # Open orders of every market: one request per instrument type; SPOT answered with
    # OKX's documented empty list envelope ({"code":"0","data":[],"msg":""}), SWAP with the
    # real open ADA order.
    empty = {"code": "0", "data": [], "msg": ""}
    await record(client(), markets, out / "orders_open_all_ccxt_static.json",
                 [empty, open_orders], lambda c: c.fetch_open_orders())

    # Recent orders of one swap: pending and canceled (documented empty envelopes) and
    # filled (the real "Swap closed orders" capture).
    closed = captured("okx", "fetchClosedOrders", "Swap closed orders")

    async def recent(c):
        await c.fetch_recent_orders(await c.market("LTC/USDT:USDT"))

    await record(client(), markets, out / "orders_recent_swap_ccxt_static.json",
                 [empty, closed, empty], recent)

    async def fetch_spot(c):
        await c.fetch_order(await c.market("LTC/USDT"), "e847386590ce4dBC6f7ae74854f6a617")

    await record(client(), markets, out / "orders_fetch_spot_ccxt_static.json",
                 [captured("okx", "fetchOrder", "fetch spot order")], fetch_spot)

    # OKX's documented cancel-order answer (docs-v5 "POST / Cancel order" response example)
    # with the ids of the real spot order it cancels; OKX notes that sCode 0 does not mean
    # canceled, and the query finds the order filled.
    spot_order = captured("okx", "fetchOrder", "fetch spot order")
    acknowledged = {"code": "0", "msg": "", "data": [
        {"clOrdId": spot_order["data"][0]["clOrdId"], "ordId": spot_order["data"][0]["ordId"],
         "sCode": "0", "sMsg": ""}], "inTime": "1695190491421339",
        "outTime": "1695190491423240"}

    async def cancel_spot(c):
        await c.cancel_order(await c.market("LTC/USDT"), "e847386590ce4dBC6f7ae74854f6a617")

    await record(client(), markets, out / "orders_cancel_filled_docs-example.json",
                 [acknowledged, spot_order], cancel_spot)

    await record(client(), markets, out / "orders_positions_ccxt_static.json",
                 [captured("okx", "fetchPositions", "linear swap position")],
                 lambda c: c.fetch_positions())

    # Trading account: OKX's documented example of GET /api/v5/account/balance (docs-v5
    # "Get balance", read through arakinyemi/exchange-api-docs @ 30aa4f33
    # OKX/Trading_Account/Rest_API/Get_Balance.md, 2026-12; its trailing comma after "upl"
    # removed so that it parses). Funding account: the real capture.
    balance_example = {"code": "0", "msg": "", "data": [{
        "adjEq": "55415.624719833286", "availEq": "624719833286", "borrowFroz": "0",
        "details": [{
            "autoLendStatus": "off", "autoLendMtAmt": "0", "availBal": "4834.317093622894",
            "availEq": "4834.3170936228935", "borrowFroz": "0",
            "cashBal": "4850.435693622894", "ccy": "USDT", "crossLiab": "0",
            "collateralEnabled": False, "collateralRestrict": False,
            "colBorrAutoConversion": "0", "disEq": "4991.542013297616",
            "eq": "4992.890093622894", "eqUsd": "4991.542013297616", "smtSyncEq": "0",
            "spotCopyTradingEq": "0", "fixedBal": "0", "frozenBal": "158.573", "imr": "",
            "interest": "0", "isoEq": "0", "isoLiab": "0", "isoUpl": "0", "liab": "0",
            "maxLoan": "0", "mgnRatio": "", "mmr": "", "notionalLever": "", "ordFrozen": "0",
            "rewardBal": "0", "spotInUseAmt": "", "clSpotInUseAmt": "", "maxSpotInUse": "",
            "spotIsoBal": "0", "stgyEq": "150", "twap": "0", "uTime": "1705449605015",
            "upl": "-7.545600000000006", "uplLiab": "0", "spotBal": "", "openAvgPx": "",
            "accAvgPx": "", "spotUpl": "", "spotUplRatio": "", "totalPnl": "",
            "totalPnlRatio": ""}],
        "imr": "0", "isoEq": "0", "mgnRatio": "", "mmr": "0", "notionalUsd": "0",
        "notionalUsdForBorrow": "0", "notionalUsdForFutures": "0",
        "notionalUsdForOption": "0", "notionalUsdForSwap": "0", "ordFroz": "",
        "totalEq": "55837.43556134779", "uTime": "1705474164160", "upl": "0"}]}
    await record(client(), markets, out / "orders_balances_docs-example.json",
                 [balance_example, captured("okx", "fetchBalance", "funding balance")],
                 lambda c: c.fetch_balances())

    await record(client(), markets, out / "orders_transfer_ccxt_static.json",
                 [captured("okx", "transfer", "transfer from spot to funding")],
                 lambda c: c.transfer("USDC", Decimal("1"), Wallet.UNIFIED, Wallet.FUNDING))


async def binance() -> None:
    from perpcarry_binance import BinanceConfig
    from perpcarry_binance.venue import BinanceVenue

    out = REPO / "cassettes" / "binance"
    markets = out / "markets_full.json"
    config = BinanceConfig(enabled=True, api_key=SecretStr("k"), secret=SecretStr("s"))

    def client():
        return BinanceVenue(config, _context())

    async def fetch_open(c):
        await c.fetch_order(await c.market("LTC/USDT:USDT"), "x-xcKtGhcu68f8383451844295b3e8b9")

    await record(client(), markets, out / "orders_fetch_open_swap_ccxt_static.json",
                 [captured("binance", "fetchOpenOrder", "swap open order")], fetch_open)

    await record(client(), markets, out / "orders_positions_ccxt_static.json",
                 [captured("binance", "fetchPositions",
                           "Fetch linear positions without symbols")],
                 lambda c: c.fetch_positions())

    # The one real income record is a portfolio-margin account's (/papi/v1/um/income);
    # /fapi/v1/income answers the same record shape.
    income = captured("binance", "fetchFundingHistory",
                      "fetch portfolio margin funding history")
    await record(client(), markets, out / "orders_funding_ccxt_static.json", [income],
                 lambda c: c.fetch_funding_payments(datetime(2024, 2, 9, tzinfo=UTC),
                                                    datetime(2024, 2, 10, tzinfo=UTC)))


async def main() -> None:
    await bybit()
    await okx()
    await binance()


if __name__ == "__main__":
    asyncio.run(main())
