"""The dashboard's web app: four pages, their JSON documents under ``/api/``, and three
actions (kill, resume, close one position). Starlette, served by uvicorn; see
docs/dashboard.md.

Every request opens the journal read-only (:meth:`Journal.open` with ``trading=False``,
never the trading lock), so the dashboard works beside a running ``perpcarry run`` and
after it. Only ``close`` opens a trading session, for that one request, through the same
:meth:`TradingSession.close` as ``perpcarry close``; while ``run`` holds the journal's
trading lock the close is refused with the reason (409), and the loop keeps trading.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from perpcarry.dashboard import documents
from perpcarry.dashboard.charts import line_chart
from perpcarry.dashboard.documents import Book
from perpcarry.dashboard.security import TOKEN_HEADER, token_matches
from perpcarry.domain.errors import PerpcarryError, UsageError, VenueError

HERE = Path(__file__).parent
REFRESH_SECONDS = 10
MAX_BODY = 4096  # an action's JSON body is a few fields
DEFAULT_REASON = "perpcarry dashboard"


def create_app(config, book: Book, token: str | None, *, offline: bool = False,
               allowed_hosts: list[str] | None = None) -> Starlette:
    """The app over ``book``'s journal. ``token`` None: read-only (every action refused).
    ``offline``: a close trades the paper account over the bundled snapshots."""
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["money"] = _money
    templates.env.filters["pct"] = _pct
    templates.env.filters["when"] = _when

    def journal():
        from perpcarry.execution.journal import Journal

        return Journal.open(book.path, trading=False)

    def page(name: str, build: Callable[[Any], dict[str, Any]],
             extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        async def endpoint(request: Request) -> Response:
            with journal() as j:
                document = build(j)
            context = {"doc": document, "book": book, "page": name,
                       "refresh": REFRESH_SECONDS, "actions": token is not None,
                       **(extra(document) if extra else {})}
            template = "fragment.html" if request.query_params.get("fragment") else "page.html"
            return templates.TemplateResponse(request, template, context)

        return endpoint

    def api(build: Callable[[Any], dict[str, Any] | None]):
        async def endpoint(request: Request) -> Response:
            with journal() as j:
                document = build(j)
            if document is None:
                return _error(404, "no scan recorded yet: the run loop writes one each cycle")
            return JSONResponse(json.loads(json.dumps(document, default=str)))

        return endpoint

    def overview(j):
        return documents.overview_document(j, book, config)

    def positions(j):
        return documents.positions_page(j, book, config)

    def opportunities(_j):
        return {"book": book.label, "scan": documents.scan_document(book)}

    def operations(j):
        return documents.operations_document(j, book)

    async def kill(request: Request) -> Response:
        """``perpcarry kill [--flatten] [--reason ...]``."""
        from perpcarry.risk.state import engage_kill

        body = await _authorised_body(request, token)
        if isinstance(body, Response):
            return body
        reason, flatten = body.get("reason", DEFAULT_REASON), body.get("flatten", False)
        if not isinstance(reason, str) or not reason.split() or len(reason) > 200:
            return _error(400, "reason: some text, at most 200 characters")
        if not isinstance(flatten, bool):
            return _error(400, "flatten: true or false")
        with journal() as j:
            state = engage_kill(j, " ".join(reason.split()), flatten=flatten)
        return JSONResponse({"kill": {"reason": state.reason, "at": state.at.isoformat(),
                                      "flatten": state.flatten}})

    async def resume(request: Request) -> Response:
        """``perpcarry resume``: the kill switch and a tripped breaker cleared."""
        from perpcarry.risk.state import resume as clear

        body = await _authorised_body(request, token)
        if isinstance(body, Response):
            return body
        with journal() as j:
            return JSONResponse({"cleared": clear(j)})

    async def close(request: Request) -> Response:
        body = await _authorised_body(request, token)
        if isinstance(body, Response):
            return body
        position_id = body.get("position_id")
        if not isinstance(position_id, str) or not position_id:
            return _error(400, "position_id: the id of the position to close (a string)")
        with journal() as j:
            position = j.position(position_id)
        if position is None:
            return _error(404, f"no position {position_id!r} in the journal {book.path}")
        if not book.tradable:
            return _error(409, f"the {book.label} journal is a record, not an account: "
                               "nothing can be traded on it")
        try:
            result = await _close(config, book, position, offline)
        except UsageError as err:  # already closed, the journal in use by `run`, ...
            return _error(409, str(err))
        except VenueError as err:
            return _error(502, str(err))
        except PerpcarryError as err:
            return _error(409, str(err))
        return JSONResponse({"action": "close", "position_id": result.position_id,
                             "state": result.state.value, "note": result.note,
                             "spot_change": str(result.spot_change),
                             "perp_change": str(result.perp_change)})

    routes = [
        Route("/", page("overview", overview, _overview_charts)),
        Route("/positions", page("positions", positions)),
        Route("/opportunities", page("opportunities", opportunities)),
        Route("/operations", page("operations", operations)),
        Route("/api/overview", api(overview)),
        Route("/api/positions", api(lambda j: documents.positions_document(j, book))),
        Route("/api/pnl", api(lambda j: documents.pnl_document(j, book, config))),
        Route("/api/margins", api(lambda j: documents.margins_document(j, book, config))),
        Route("/api/opportunities", api(lambda _j: documents.scan_document(book))),
        Route("/api/operations", api(operations)),
        Route("/api/kill", kill, methods=["POST"]),
        Route("/api/resume", resume, methods=["POST"]),
        Route("/api/close", close, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    hosts = allowed_hosts or ["127.0.0.1", "localhost", "[::1]", "testserver"]
    # A Host header naming another site is refused (DNS rebinding onto the loopback port).
    return Starlette(routes=routes, exception_handlers={PerpcarryError: _perpcarry_error},
                     middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)])


async def _close(config, book: Book, position, offline: bool):
    """``perpcarry close POSITION``: the CLI's trading session and :meth:`close`."""
    from perpcarry.cli.trade import _venue_ids, session

    async with session(config, _venue_ids(config, [position.venue], offline),
                       paper=book.paper, offline=offline, trading=True) as trading:
        return await trading.close(position, executor=trading.executor(None),
                                   slices=trading.settings.slices)


async def _authorised_body(request: Request, token: str | None) -> dict | Response:
    """The JSON object of an action request, or the 4xx refusing it: a foreign origin, no
    or a wrong token, a body that is not a JSON object."""
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin is not None and origin != own:
        return _error(403, f"cross-origin request from {origin} refused")
    if token is None:
        return _error(403, "this dashboard is read-only (started with --read-only)")
    given = request.headers.get(TOKEN_HEADER)
    if given is None:
        return _error(401, f"missing {TOKEN_HEADER} header: the token from "
                           "`perpcarry dashboard --token`")
    if not token_matches(given, token):
        return _error(403, "wrong token (see `perpcarry dashboard --token`)")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return _error(413, f"request body over {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError as err:
        return _error(400, f"malformed JSON body: {err}")
    if not isinstance(body, dict):
        return _error(400, "the JSON body must be an object")
    return body


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _perpcarry_error(_request: Request, exc: Exception) -> Response:
    """A journal that cannot be read (a newer schema, not a database): one line, 500."""
    return HTMLResponse(f"error: {exc}\n", status_code=500, media_type="text/plain")


def _overview_charts(doc: dict[str, Any]) -> dict[str, str]:
    equity = {"equity": [(datetime.fromisoformat(p["at"]), p["equity"])
                         for p in doc["equity"]]}
    net = {quote: [(datetime.fromisoformat(p["at"]), float(p["net"])) for p in points]
           for quote, points in doc["realised_net"].items()}
    funding = {key: [(datetime.fromisoformat(p["at"]), float(p["funding"])) for p in points]
               for key, points in doc["funding"].items()}
    return {"equity_chart": line_chart(equity, "Equity"),
            "net_chart": line_chart(net, "Realised net PnL", steps=True),
            "funding_chart": line_chart(funding, "Funding received", steps=True)}


def _money(text: str | float | None) -> str:
    return "n/a" if text is None else f"{Decimal(str(text)):,.2f}"


def _pct(value: str | float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{float(value) * 100:.{digits}f}%"


def _when(text: str | None) -> str:
    if not text:
        return "-"
    return datetime.fromisoformat(text).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
