"""The base every ccxt-backed venue plugin builds on.

ccxt does transport, signing and market metadata. This class adds what every venue needs
the same way: translating ccxt errors (here and nowhere else), backing off on rate limits,
staying under the venue's weight budget, caching markets on disk, and paging and caching
funding history. A plugin subclass supplies its endpoints and parsing.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from loguru import logger

from perpcarry.ccxt.cache_warnings import NOT_CACHING, report_unusable_cache
from perpcarry.ccxt.errors import endpoint_path, translate_ccxt_error
from perpcarry.ccxt.history_store import (
    CachedTail,
    Fetched,
    FundingHistoryStore,
    UnusableCache,
    read_tails,
)
from perpcarry.ccxt.markets import market_from_ccxt
from perpcarry.ccxt.ratelimit import WeightBudget, backoff_delay
from perpcarry.ccxt.response_cache import ResponseCache
from perpcarry.ccxt.transport import rebase, tls_context, venue_url
from perpcarry.config.settings import VenueConfig
from perpcarry.domain.errors import (
    BadSymbol,
    ClockSkew,
    InvalidResponse,
    NetworkError,
    NotRecorded,
    RateLimitError,
    RequestTimedOut,
    VenueError,
)
from perpcarry.domain.parsing import MalformedField, to_ms
from perpcarry.domain.types import FeeSchedule, FundingRecord, Market, MarketKind
from perpcarry.money.fees import account_fee_schedule
from perpcarry.venues.protocol import VenueContext

# Retries of an idempotent request after a rate limit or a network error; a state-changing
# request is never retried (see ``request``).
MAX_RETRIES = 3
# How long one request may take. A venue that let one time out is retried once, not three
# times: a hung endpoint would otherwise hold the scan for four timeouts.
REQUEST_TIMEOUT_SECONDS = 10
TIMEOUT_RETRIES = 1
# A settlement reaches the venue's history endpoint a moment after it happens; the cache
# never records the latest minutes as fetched, so a late record is picked up next time.
SETTLEMENT_PUBLISH_LAG = timedelta(minutes=5)
# Set while ccxt loads markets: each request it sends then is charged by its URL path (see
# ``CcxtVenue.market_requests``), since one fetch_markets call sends several.
_LOADING_MARKETS: ContextVar[bool] = ContextVar("perpcarry_loading_markets", default=False)


class CcxtVenue(ABC):
    """A market-data venue over ``ccxt.async_support``. Subclasses set the class attributes
    and implement the three venue-specific methods."""

    venue_id: ClassVar[str]
    ccxt_id: ClassVar[str]
    # ccxt ``fetchMarkets`` types restricted to spot and linear perps.
    market_types: ClassVar[tuple[str, ...]]
    ccxt_options: ClassVar[dict[str, Any]] = {}
    # Published request-weight budgets per minute, by API group; see each plugin's source.
    weight_budgets: ClassVar[dict[str, int]]
    # What each request ccxt's ``fetch_markets`` sends costs: URL path -> (weight, budget).
    # Charged per request actually sent; a request whose path is not declared fails the load
    # (restrict what ccxt sends with ``market_types`` and ``ccxt_options`` instead).
    market_requests: ClassVar[dict[str, tuple[int, str]]]
    history_page_limit: ClassVar[int]
    history_paging: ClassVar[Literal["forward", "backward"]]
    # Names of the config fields holding credentials, mapped to ccxt's constructor keys.
    credential_keys: ClassVar[dict[str, str]] = {"api_key": "apiKey", "secret": "secret"}
    # The account's fee rates are read for these two markets (spot, perp) and used for every
    # pair: two requests instead of one per market.
    fee_symbols: ClassVar[tuple[str, str]] = ("BTC/USDT", "BTC/USDT:USDT")
    # (weight, budget) of ccxt's fetch_trading_fee for the spot and the perp market, and the
    # endpoints it calls (named in the schedule's source); None: no account rates.
    fee_requests: ClassVar[tuple[tuple[int, str], tuple[int, str]] | None] = None
    fee_endpoints: ClassVar[str] = ""

    def __init__(self, config: VenueConfig, context: VenueContext) -> None:
        import ccxt.async_support as ccxt_async

        self.config = config
        self.context = context
        options = {"fetchMarkets": {"types": list(self.market_types)}, **self.ccxt_options}
        params: dict[str, Any] = {"enableRateLimit": False, "options": options}
        if config.has_credentials:
            for field_name, ccxt_key in self.credential_keys.items():
                params[ccxt_key] = getattr(config, field_name).get_secret_value()
        self.exchange = getattr(ccxt_async, self.ccxt_id)(params)
        self.exchange.timeout = REQUEST_TIMEOUT_SECONDS * 1000
        if context.offline:
            # A replay never opens a connection: no CA bundle to read (tens of milliseconds),
            # a context that trusts nothing, and no 250 ms wait in close() for TLS
            # connections to shut down.
            self.exchange.ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.exchange.timeout_on_exit = 0
        else:
            # ccxt builds a TLS context per exchange instance (reading the CA bundle each
            # time); one per process serves every venue.
            self.exchange.ssl_context = tls_context(self.exchange.cafile)
        # An HTTP 429 is a rate limit on every venue; some ccxt classes (okx) map a bare 429
        # to ExchangeNotAvailable, which would not be retried after Retry-After.
        self.exchange.httpExceptions = {
            **self.exchange.httpExceptions,
            "429": ccxt_async.RateLimitExceeded,
        }
        if config.sandbox:
            self.exchange.set_sandbox_mode(True)
        base_url = self._base_url = config.base_url or context.base_url
        if base_url:
            self.exchange.urls["api"] = rebase(self.exchange.urls["api"], base_url)
            # ccxt reads an error body by the venue's URL (Binance: one code table for spot,
            # another for USDⓈ-M): it sees the URL the request would have had.
            handle_errors = self.exchange.handle_errors
            self.exchange.handle_errors = lambda code, reason, url, *rest: handle_errors(
                code, reason, venue_url(url, base_url), *rest)
        self.budgets = {
            group: WeightBudget(
                per_minute, config.weight_budget_share, time.monotonic, context.sleep
            )
            for group, per_minute in self.weight_budgets.items()
        }
        # HTTP requests sent (retries included), counted where ccxt sends them.
        self.request_count = 0
        self._ccxt_fetch = self.exchange.fetch
        self.exchange.fetch = self._send
        self._response_cache = ResponseCache(
            context.cache_dir / "responses" / self.venue_id, context.clock, context.offline)
        self._markets: dict[str, Market] | None = None
        self._raw_markets: dict[str, dict[str, Any]] = {}
        # perpcarry keeps ccxt's unified markets (fetch_markets) itself and does not hand
        # them to ccxt: its set_markets costs tens of milliseconds per venue, and only ccxt's
        # own unified methods (fetch_trading_fee, ...) need it. Those call load_markets
        # first, which this instance attribute answers from perpcarry's markets.
        self.exchange.load_markets = self._ccxt_load_markets
        # Concurrent callers (the scan, a venue method, the fee model) share one load.
        self._markets_lock = asyncio.Lock()
        self._history: FundingHistoryStore | None = None
        self._history_thread: ThreadPoolExecutor | None = None
        # Set when the history cache turns out unusable: the rest of the run fetches all.
        self._history_uncached = False
        self._prefetched: asyncio.Future[dict[str, CachedTail]] | None = None
        self._prefetched_symbols: frozenset[str] = frozenset()
        # Histories fetched and not yet written to the cache (appended by the event loop,
        # taken by the store's thread: a deque's append and popleft are thread-safe).
        self._unwritten: deque[Fetched] = deque()

    # -- transport --------------------------------------------------------------------

    async def _send(self, url: str, method: str = "GET", headers: Any = None,
                    body: Any = None) -> Any:
        """Every HTTP request ccxt sends goes through here (it replaces the exchange's
        ``fetch``, implicit and unified calls alike): counted, and while markets load,
        charged to the budget its path is declared against (other requests are charged by
        :meth:`_with_retries`, one weight per call, each call sending exactly one request).
        A body that is not a JSON object or array is refused: ccxt hands such a body back as
        text, and its unified parsers would read an HTML page or an empty body as "no
        markets"."""
        import ccxt

        if _LOADING_MARKETS.get():
            path = urlsplit(url).path
            cost = next((c for p, c in self.market_requests.items() if path.endswith(p)), None)
            if cost is None:
                raise VenueError(self.venue_id, f"load_markets sent {method} {path}, which the "
                                 "plugin declares no weight for (market_requests)")
            weight, budget = cost
            await self.budgets[budget].acquire(weight)
        self.request_count += 1
        answer = await self._ccxt_fetch(url, method, headers, body)
        if isinstance(answer, dict | list):
            return answer
        path = endpoint_path(venue_url(url, self._base_url or ""))
        # A ccxt error, so the one translator decides what it is (for an order sent once,
        # OutcomeUnknown: the venue may have acted before the broken answer).
        raise ccxt.BadResponse(f"{_body_kind(answer)} from {path}")

    @asynccontextmanager
    async def _translated(self, what: str, idempotent: bool = True) -> AsyncIterator[None]:
        import ccxt

        try:
            yield
        except VenueError:
            raise
        # Besides ccxt's own errors, what ccxt's parsing of a malformed body raises.
        except (ccxt.BaseError, ValueError, LookupError, TypeError, AttributeError,
                ArithmeticError) as exc:
            raise translate_ccxt_error(
                self.venue_id, exc, self.exchange.last_response_headers, idempotent=idempotent
            ) from None
        except Exception as exc:
            if type(exc).__name__ == "CannotOverwriteExistingCassetteException":
                raise NotRecorded(self.venue_id, f"{what} is not in the recorded session") from None
            raise

    @contextmanager
    def parsing(self, what: str) -> Iterator[None]:
        """Around a plugin's parsing of a response: a ``MalformedField`` its parser raises
        becomes this venue's ``InvalidResponse`` naming ``what``. The one way every plugin
        reports a response it cannot read."""
        try:
            yield
        except MalformedField as err:
            raise InvalidResponse(self.venue_id, f"invalid {what}: {err}") from None

    async def _with_retries(self, what: str, weight: int, budget: str, call, *,
                            idempotent: bool = True) -> Any:
        """``call()`` under the weight budget, translated; an idempotent call is retried
        after a rate limit or a network error, a state-changing one never: a retry could
        place an order twice."""
        retries = MAX_RETRIES if idempotent else 0
        for attempt in range(retries + 1):
            await self.budgets[budget].acquire(weight)
            try:
                async with self._translated(what, idempotent):
                    return await call()
            except (RateLimitError, NetworkError) as err:
                allowed = min(retries, TIMEOUT_RETRIES) if isinstance(err, RequestTimedOut) \
                    else retries
                # A refused timestamp is not retried as it is: the caller resyncs the clock.
                if attempt >= allowed or isinstance(err, NotRecorded | ClockSkew):
                    raise
                delay = backoff_delay(attempt, getattr(err, "retry_after", None))
                # Not a warning: the caller reports the failure once if the retries fail.
                logger.info("{}: {}; retrying {} in {:.1f}s", self.venue_id, err, what, delay)
                await self.context.sleep(delay)
        raise AssertionError("unreachable")

    async def request(
        self,
        endpoint: str,
        params: dict[str, Any] | None = None,
        *,
        weight: int = 1,
        budget: str = "default",
        idempotent: bool = True,
    ) -> Any:
        """Call one of ccxt's implicit API methods (e.g. ``fapiPublicGetPremiumIndex``); its
        decoded JSON object or array, anything else (an HTML page, an empty or truncated
        body) an ``InvalidResponse`` naming the endpoint (see ``_json_fetch``).

        ``idempotent`` says whether the request may be sent again after a failure. Reads
        are, whatever their HTTP method (some venues read market data with POST). Order
        placement, cancels, transfers and leverage changes must pass ``idempotent=False``:
        they are sent once, and a failure after which the venue may have acted is
        ``OutcomeUnknown``."""
        method = getattr(self.exchange, endpoint)
        return await self._with_retries(endpoint, weight, budget, lambda: method(params or {}),
                                        idempotent=idempotent)

    # -- markets ----------------------------------------------------------------------

    async def request_cached(
        self,
        endpoint: str,
        params: dict[str, Any] | None = None,
        *,
        max_age_seconds: float,
        weight: int = 1,
        budget: str = "default",
    ) -> Any:
        """:meth:`request` for slow-moving data (instrument terms, 24h volumes): answered
        from the on-disk cache while it is younger than ``max_age_seconds``."""
        name = endpoint + "".join(f"-{k}={v}" for k, v in sorted((params or {}).items()))
        cached = self._response_cache.read(name, max_age_seconds)
        if cached is None:
            cached = await self.request(endpoint, params, weight=weight, budget=budget)
            self._response_cache.write(name, cached)
        return cached

    async def load_markets(self) -> list[Market]:
        return list((await self._loaded_markets()).values())

    async def _loaded_markets(self) -> dict[str, Market]:
        """The markets by unified symbol, loaded once however many callers ask at once."""
        async with self._markets_lock:
            if self._markets is None:
                await self._load_markets()
        return self._markets

    @property
    def raw_markets(self) -> dict[str, dict[str, Any]]:
        """ccxt's unified market dicts by unified symbol (``info`` holds the venue's raw
        instrument); empty until :meth:`load_markets`."""
        return self._raw_markets

    async def _load_markets(self) -> None:
        cached = self._response_cache.read("markets", self.config.market_cache_hours * 3600,
                                           valid=_is_markets)
        if cached is None:
            loading = _LOADING_MARKETS.set(True)
            try:
                # Weight 0 here: _send charges each request fetch_markets sends.
                fetched = await self._with_retries(
                    "load_markets", 0, next(iter(self.budgets)), self.exchange.fetch_markets)
            finally:
                _LOADING_MARKETS.reset(loading)
            cached = {m["symbol"]: m for m in fetched}
            self._response_cache.write("markets", cached)
        self._raw_markets = cached
        parsed = (market_from_ccxt(self.venue_id, m) for m in cached.values())
        self._markets = {m.symbol: m for m in parsed if m is not None}

    async def _ccxt_load_markets(self, *_: Any, **__: Any) -> Any:
        """ccxt's ``load_markets`` as its unified methods call it: answered from
        :meth:`load_markets`, so ccxt never loads markets on its own."""
        await self._loaded_markets()
        if not self.exchange.markets:
            self.exchange.set_markets(self._raw_markets)
        return self.exchange.markets

    async def markets_by_venue_symbol(self, kind: MarketKind) -> dict[str, Market]:
        markets = await self._loaded_markets()
        return {m.venue_symbol: m for m in markets.values() if m.kind is kind}

    async def market(self, symbol: str) -> Market:
        markets = await self._loaded_markets()
        if symbol not in markets:
            raise BadSymbol(self.venue_id, f"unknown symbol {symbol}")
        return markets[symbol]

    # -- funding history --------------------------------------------------------------

    @property
    def _history_path(self) -> Path:
        return self.context.cache_dir / "funding_history.sqlite"

    @property
    def history_store(self) -> FundingHistoryStore:
        """The on-disk cache of settled funding. Not used offline, where each symbol's
        history is replayed once per run and a cache would only be written and read back.
        Raises ``UnusableCache`` when the file cannot be opened or set up."""
        if self._history is None:
            self._history = FundingHistoryStore(self._history_path)
        return self._history

    def prefetch_funding_history(self, symbols: Collection[str], span: timedelta) -> None:
        """Read the newest ``span`` of the cached history of ``symbols`` in a worker thread,
        while the caller waits on the network: ``fetch_funding_history`` then answers a
        window inside what was read without going to the cache, and a symbol of which
        nothing was cached by asking the venue straight away. Offline: no cache."""
        if self.context.offline:
            return
        self._prefetched_symbols = frozenset(symbols)
        self._prefetched = asyncio.get_running_loop().run_in_executor(
            None, read_tails, self._history_path, self.venue_id, self._prefetched_symbols,
            int(span.total_seconds() * 1000))

    async def fetch_funding_history(
        self, symbol: str, start: datetime, end: datetime
    ) -> list[FundingRecord]:
        market = await self.market(symbol)
        if market.kind is not MarketKind.PERP:
            raise BadSymbol(self.venue_id, f"{symbol} is not a perpetual")
        end = min(end, self.context.clock() - SETTLEMENT_PUBLISH_LAG)
        start_ms, end_ms = to_ms(start), to_ms(end)
        if self.context.offline or self._history_uncached:
            return await self._page_history(market, start_ms, end_ms)
        try:
            return await self._cached_history(market, start_ms, end_ms)
        except UnusableCache as err:
            self._stop_caching_history(err)
            return await self._page_history(market, start_ms, end_ms)

    def _stop_caching_history(self, err: UnusableCache) -> None:
        """A cache never stops a scan: say once which file is unusable, then fetch every
        symbol's history from the venue for the rest of the run."""
        self._history_uncached = True
        report_unusable_cache(err.path, err.problem, NOT_CACHING)

    async def _cached_history(
        self, market: Market, start_ms: int, end_ms: int
    ) -> list[FundingRecord]:
        """What the cache (or the prefetched part of it) holds of [start_ms, end_ms], after
        fetching the parts it lacks."""
        venue, symbol = self.venue_id, market.symbol
        read_ahead = self._prefetched is not None and symbol in self._prefetched_symbols
        tail = (await self._prefetched).get(symbol) if read_ahead else None
        window = tail.window(start_ms, end_ms) if tail else None
        if window is not None:
            return window
        if read_ahead and tail is None:
            # Nothing cached when read ahead (a cold cache): no need to ask the store.
            missing = [(start_ms, end_ms)]
        else:
            missing = await self._in_history_thread(
                lambda store: store.missing_spans(venue, symbol, start_ms, end_ms))
        if missing == [(start_ms, end_ms)]:
            records = await self._page_history(market, start_ms, end_ms)
            # Held until the scan has every venue's data (``flush_funding_history``) or the
            # client closes: a write now, its CPU partly holding the GIL, would delay the
            # event loop's handling of the responses still arriving.
            self._unwritten.append((symbol, records, start_ms, end_ms))
            return records
        for span_start, span_end in missing:
            fetched = await self._page_history(market, span_start, span_end)
            await self._in_history_thread(
                lambda store, span=(span_start, span_end), fetched=fetched:
                store.add(venue, symbol, fetched, *span))
        return await self._in_history_thread(
            lambda store: store.records(venue, symbol, start_ms, end_ms))

    async def flush_funding_history(self) -> None:
        """Write every history fetched since the last flush to the cache, in one
        transaction in the store's thread. An unusable cache stops the caching for the rest
        of the run, as when a read finds it so: what was not written is fetched again next
        time."""
        if not self._unwritten or self._history_uncached:
            self._unwritten.clear()
            return
        try:
            await self._in_history_thread(self._write_unwritten)
        except UnusableCache as err:
            self._stop_caching_history(err)

    def _write_unwritten(self, store: FundingHistoryStore) -> None:
        """In the store's thread: write every history queued so far in one transaction.
        Only this thread takes from the queue."""
        fetched = []
        while self._unwritten:
            fetched.append(self._unwritten.popleft())
        if fetched:
            store.add_all(self.venue_id, fetched)

    def _in_history_thread(self, operation: Callable[[FundingHistoryStore], Any]) -> Any:
        """``operation`` on the history store, awaitable, run in the store's own thread
        once the histories queued so far are written: SQLite's commits wait on the disk,
        and the event loop meanwhile handles the other responses. One thread, so its
        connection serves one call at a time."""
        if self._history_thread is None:
            self._history_thread = ThreadPoolExecutor(
                1, thread_name_prefix=f"perpcarry-{self.venue_id}-history")

        def on_written_store() -> Any:
            # What the store answers includes every history fetched so far (a symbol asked
            # again before the flush is not fetched again).
            self._write_unwritten(self.history_store)
            return operation(self.history_store)

        return asyncio.get_running_loop().run_in_executor(self._history_thread,
                                                          on_written_store)

    async def _page_history(
        self, market: Market, start_ms: int, end_ms: int
    ) -> list[FundingRecord]:
        """Page by the timestamps the venue returns, never by a fixed interval, so 1h, 4h
        and 8h symbols all come back without gaps. A page with records but none inside the
        window asked is an error: the venue (or the plugin's request) ignored the window,
        and treating it as "no history" would silently drop the symbol."""
        found: dict[int, FundingRecord] = {}
        cursor_start, cursor_end = start_ms, end_ms
        while cursor_start <= cursor_end:
            page = await self.fetch_history_page(market, cursor_start, cursor_end)
            times = [to_ms(r.funding_time) for r in page]
            inside = {t: r for t, r in zip(times, page, strict=True)
                      if cursor_start <= t <= cursor_end}
            if page and not inside:
                raise InvalidResponse(
                    self.venue_id, f"funding history of {market.symbol}: asked for "
                    f"{_iso(cursor_start)} to {_iso(cursor_end)}, got {len(page)} record(s) "
                    f"from {_iso(min(times))} to {_iso(max(times))}, none inside")
            found.update(inside)
            if len(page) < self.history_page_limit:
                break
            # The cursor always moves: a page repeated (the window ignored) has nothing
            # inside the narrowed window and is refused above.
            if self.history_paging == "forward":
                cursor_start = max(inside) + 1
            else:
                cursor_end = min(inside) - 1
        return [found[t] for t in sorted(found)]

    # -- venue-specific ---------------------------------------------------------------

    @abstractmethod
    async def fetch_history_page(
        self, market: Market, start_ms: int, end_ms: int
    ) -> list[FundingRecord]:
        """One request of settled funding within [start_ms, end_ms], at most
        ``history_page_limit`` records (the oldest ones for forward paging, the newest for
        backward paging)."""

    async def fetch_fee_schedule(self) -> FeeSchedule | None:
        """The account's own maker/taker rates for ``fee_symbols``; None without keys or
        when the venue declares no ``fee_requests``."""
        if not self.config.has_credentials or self.fee_requests is None:
            return None
        fees = []
        for leg, symbol, (weight, budget) in zip(("spot", "perp"), self.fee_symbols,
                                                 self.fee_requests, strict=True):
            fees.append(await self._with_retries(
                f"fetch_trading_fee {leg}", weight, budget,
                functools.partial(self.trading_fee, symbol)))
        spot_symbol, perp_symbol = self.fee_symbols
        return account_fee_schedule(
            self.venue_id, *fees,
            f"account rates ({self.fee_endpoints}) for {spot_symbol} and {perp_symbol}")

    async def trading_fee(self, symbol: str) -> dict[str, Any]:
        """ccxt's trading-fee structure (``maker``/``taker`` fractions) of one market; a venue
        overrides it where ccxt's reading does not fit perpcarry's markets."""
        return await self.exchange.fetch_trading_fee(symbol)

    async def close(self) -> None:
        """Write what the cache lacks (on every path, an error's too) while ccxt's sessions
        close (a graceful close waits 250 ms), then release the cache's connections."""
        outcomes = await asyncio.gather(self._close_history(), self.exchange.close(),
                                        return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _close_history(self) -> None:
        try:
            if self._prefetched is not None:
                # Let the reading thread finish with its connection. Had the read failed, a
                # fetch that used it would have reported it; unused, its outcome does not
                # matter.
                await asyncio.gather(self._prefetched, return_exceptions=True)
            await self.flush_funding_history()
        finally:
            if self._history_thread is not None:
                # Whatever the store's thread still has to do finishes before its
                # connection closes; the wait itself is off the event loop.
                await asyncio.get_running_loop().run_in_executor(
                    None, self._history_thread.shutdown)
            if self._history is not None:
                self._history.close()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _is_markets(payload: Any) -> bool:
    """Whether a cached payload is ccxt's markets by symbol, as ``_load_markets`` writes."""
    return isinstance(payload, dict) and all(isinstance(m, dict) and "symbol" in m
                                             for m in payload.values())


def _body_kind(body: Any) -> str:
    """What came back instead of a JSON object or array (ccxt hands back the raw text)."""
    if body is None or (isinstance(body, str) and not body.strip()):
        return "empty body instead of JSON"
    if not isinstance(body, str):  # a body without a text content type
        return "non-JSON body instead of JSON"
    text = body.strip()
    if text.startswith("<"):
        return "HTML instead of JSON"
    if text.startswith(("{", "[")):
        # Cut off, or whole but not JSON ccxt reads (NaN, a number beyond float, ...).
        broken = "malformed" if text.endswith(("}", "]")) else "truncated"
        return f"{broken} JSON ({len(text)} characters)"
    return f"non-JSON body {text[:40]!r} instead of JSON"
