"""Cross-exchange yield comparison: which carry trades pay, where, after costs.

Gathering (I/O) is per venue and concurrent; evaluation is pure and uses the money math of
``perpcarry.money.yields`` and ``perpcarry.money.estimators``. ``offline`` replays every
venue's bundled snapshot through the very same plugin code.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from statistics import median

from loguru import logger

from perpcarry.ccxt.errors import redact
from perpcarry.config.loader import Config
from perpcarry.config.settings import MAX_DAYS
from perpcarry.domain.errors import InvalidValue, PerpcarryError, UsageError, VenueError
from perpcarry.domain.types import (
    BookSnapshot,
    BookTop,
    CarryPair,
    FeeSchedule,
    FundingQuote,
    FundingRecord,
    FundingSnapshot,
    MarketKind,
    Skipped,
)
from perpcarry.money import yields
from perpcarry.money.estimators import ESTIMATORS, expected_hourly
from perpcarry.venues.protocol import MarketDataVenue, VenueContext, carry_pairs, fixed_clock

# History is always fetched over the same span, so the cache (and the offline snapshot)
# serves every window up to this length.
HISTORY_LOOKBACK_DAYS = 30

Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class ScanOptions:
    venues: tuple[str, ...] | None = None
    symbols: tuple[str, ...] | None = None
    estimator: str = "mean"
    window_days: float = 7.0
    ewma_halflife_days: float = 2.0
    horizon_days: float = 30.0
    min_net_apr: float | None = None
    min_volume: float | None = None
    top: int | None = None
    offline: bool = False

    def validate(self) -> None:
        """Refuse values no scan can use; :class:`InvalidValue` names the field, and the
        CLI the flag or config key that set it."""
        if self.estimator not in ESTIMATORS:
            raise InvalidValue("estimator", self.estimator,
                               rule=f"choose one of {', '.join(ESTIMATORS)}")
        for name in ("horizon_days", "window_days", "ewma_halflife_days"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= MAX_DAYS):
                raise InvalidValue(name, value, low=0, high=MAX_DAYS, low_open=True,
                                   kind="a number of days")
        if self.horizon_days < 1 / 24:
            # Net APR annualises over the horizon: below an hour no funding is earned.
            raise InvalidValue("horizon_days", self.horizon_days,
                               rule="must be at least one hour (1/24 day)")
        if self.top is not None and self.top < 1:
            raise InvalidValue("top", self.top, low=1)
        if self.min_net_apr is not None and not math.isfinite(self.min_net_apr):
            raise InvalidValue("min_net_apr", self.min_net_apr, rule="must be a finite number")
        if self.min_volume is not None and not (math.isfinite(self.min_volume)
                                                and self.min_volume >= 0):
            raise InvalidValue("min_volume", self.min_volume, low=0)


@dataclass(frozen=True)
class CarryYield:
    """One cash-and-carry candidate (long spot, short perp) on one venue, evaluated."""

    venue: str
    pair: CarryPair
    quote: FundingQuote
    fees: FeeSchedule
    estimator: str
    current_apr: float
    expected_hourly: float | None
    expected_apr: float | None
    basis: float | None
    spread_cost: float | None
    fee_cost: float
    round_trip_cost: float
    break_even_hours: float | None
    net_apr: float | None
    horizon_days: float
    spot_book: BookTop | None
    perp_book: BookTop | None
    thin_volume_24h: float | None

    @property
    def reference_price(self) -> Decimal | None:
        """Price per base unit for sizing: the spot ask, else the perp's mark price."""
        return self.spot_book.ask if self.spot_book else self.quote.mark_price

    @property
    def entry_premium(self) -> float | None:
        """Basis from the books, else the venue's own premium of mark over index."""
        if self.basis is not None:
            return self.basis
        q = self.quote
        if q.mark_price is not None and q.index_price:
            return float((q.mark_price - q.index_price) / q.index_price)
        return None


@dataclass(frozen=True)
class ScanResult:
    # The carry rows to show: best net APR first, after the filters, at most --top of them.
    rows: list[CarryYield]
    # Expected funding below zero: the reverse trade, never ranked as carry.
    reverse_rows: list[CarryYield]
    failures: dict[str, str]
    skipped: list[Skipped]
    notes: list[str]
    snapshot_times: dict[str, datetime] = field(default_factory=dict)
    # Every carry pair with a funding quote that was evaluated, ranked or not.
    scanned_pairs: list[CarryPair] = field(default_factory=list)
    # Every carry row that passed the filters, before --top: what venues are compared on.
    candidates: list[CarryYield] = field(default_factory=list)
    # The fee schedule of each venue that answered.
    fees: dict[str, FeeSchedule] = field(default_factory=dict)


@dataclass
class VenueData:
    """What one venue returned for one scan."""

    venue: str
    pairs: list[CarryPair]
    funding: FundingSnapshot
    books: dict[MarketKind, BookSnapshot]
    fees: FeeSchedule
    history: dict[str, list[FundingRecord]]
    snapshot_time: datetime
    skipped: list[Skipped]
    notes: list[str]


# -- gathering ---------------------------------------------------------------------------


async def _gather_venue(
    config: Config, venue_id: str, client: MarketDataVenue, options: ScanOptions, progress: Progress
) -> VenueData:
    skipped: list[Skipped] = []
    notes: list[str] = []
    # Declared, not probed: a method a venue declares it lacks is never called.
    declared = config.registry.venues[venue_id].capabilities
    if not declared.bulk_funding:
        raise VenueError(venue_id, "declares no bulk funding (bulk_funding=False): the scan "
                                   "reads every perp's funding in one request per venue")
    if not declared.bulk_books:
        notes.append(f"{venue_id}: no books declared: basis and spread n/a, cost is fees only")
    progress(venue_id, "loading markets")
    # Every request that needs nothing from another leaves at once: the funding, book and
    # fee requests fly while the markets load, and each waits for the markets only to read
    # its answer. Only the history waits, for the symbols and their last settlements.
    wants_history = options.estimator != "current"
    if wants_history and not declared.funding_history:
        notes.append(f"{venue_id}: no funding history declared: its pairs are ranked only "
                     "with --estimator current")
        wants_history = False

    async def pairs_of_markets() -> list[CarryPair]:
        pairs = carry_pairs(await client.load_markets())
        if options.symbols:
            wanted = {s.upper() for s in options.symbols}
            pairs = [p for p in pairs if p.base in wanted]
        if wants_history and pairs:
            # Read what the cache holds while the funding and book answers are read.
            client.prefetch_funding_history([p.perp.symbol for p in pairs],
                                            _history_lookback(options))
        progress(venue_id, "loading funding and books")
        return pairs

    async def funding_then_history():
        """The funding snapshot, then at once the history of the pairs it quotes: the
        history requests go out while the books (the largest responses) are still parsed."""
        pairs, funding = await _all(pairs_of_markets(), client.fetch_funding_snapshot())
        skipped.extend(funding.skipped)
        # A symbol the venue's parser already skipped (by unified or venue symbol) counts once.
        already = {s.symbol for s in funding.skipped}
        quoted = [p for p in pairs if p.perp.symbol in funding.quotes]
        for p in pairs:
            if p.perp.symbol not in funding.quotes and \
                    not {p.perp.symbol, p.perp.venue_symbol} & already:
                skipped.append(Skipped(venue_id, p.perp.symbol, "no funding quote in the snapshot"))
        snapshot_time = max((q.timestamp for q in funding.quotes.values()), default=None)
        if snapshot_time is None:
            raise VenueError(venue_id, "the funding snapshot holds no usable quote")

        history: dict[str, list[FundingRecord]] = {}
        if wants_history and quoted:
            history = await _histories(
                client, venue_id, quoted, funding.quotes, options, skipped, progress
            )
            # A pair without history was skipped, with its reason, once.
            quoted = [p for p in quoted if p.perp.symbol in history]
        return funding, quoted, history, snapshot_time

    (funding, quoted, history, snapshot_time), spot_books, perp_books, fees = await _all(
        funding_then_history(),
        _books(client, MarketKind.SPOT, notes, declared.bulk_books),
        _books(client, MarketKind.PERP, notes, declared.bulk_books),
        _fees(config, venue_id, client, notes),
    )
    books = {
        k: b
        for k, b in ((MarketKind.SPOT, spot_books), (MarketKind.PERP, perp_books))
        if b is not None
    }
    progress(venue_id, "done")
    return VenueData(venue_id, quoted, funding, books, fees, history, snapshot_time, skipped, notes)


async def _all(*steps):
    """Run ``steps`` concurrently; the first failure cancels the others and is raised as
    it is, so a venue that fails stops at once and leaves nothing running on its client."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(step) for step in steps]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def _fees(config: Config, venue_id: str, client: MarketDataVenue,
                notes: list[str]) -> FeeSchedule:
    """The venue's fee schedule. When its account-fee endpoint fails, the published
    schedule (with any config overrides) stands in, and a note says why."""
    model = config.registry.fee_model(venue_id)
    venue_config = config.venues[venue_id]
    try:
        return await model.fee_schedule(venue_config, client)
    except VenueError as err:
        schedule = await model.fee_schedule(venue_config, None)
        notes.append(f"{venue_id}: account fee rates unavailable "
                     f"({_reason(venue_id, err)}); using {schedule.describe()}")
        return schedule


async def _books(
    client: MarketDataVenue, kind: MarketKind, notes: list[str], declared: bool
) -> BookSnapshot | None:
    """Books are optional: without them a row shows no basis and no spread cost. Asked only
    of a venue that declares ``bulk_books``."""
    if not declared:
        return None
    try:
        return await client.fetch_book_tops(kind)
    except VenueError as err:
        notes.append(
            f"{err.venue}: {kind.value} books unavailable, basis and spread not "
            f"counted ({_reason(err.venue, err)})"
        )
        return None


def _history_lookback(options: ScanOptions) -> timedelta:
    return timedelta(days=max(HISTORY_LOOKBACK_DAYS, options.window_days))


async def _histories(client, venue_id, pairs, quotes, options, skipped, progress):
    lookback = _history_lookback(options)
    done = 0
    first_error = None
    progress(venue_id, f"history 0/{len(pairs)}")

    async def one(pair: CarryPair):
        nonlocal done, first_error
        # Settled history up to the symbol's last settlement: until the next one, a warm
        # cache answers without a request.
        until = quotes[pair.perp.symbol].last_settlement
        records = None
        # All at once: the venue paces its requests by its published weight budget.
        try:
            records = await client.fetch_funding_history(
                pair.perp.symbol, until - lookback, until)
        except VenueError as err:
            first_error = first_error or _reason(venue_id, err)
            skipped.append(Skipped(venue_id, pair.perp.symbol,
                                   f"no funding history: {_reason(venue_id, err)}"))
        done += 1
        progress(venue_id, f"history {done}/{len(pairs)}")
        return pair.perp.symbol, records

    results = await asyncio.gather(*(one(p) for p in pairs))
    found = {symbol: records for symbol, records in results if records is not None}
    if not found:
        # Not one symbol's history came back: the venue is failing, not its symbols.
        raise VenueError(venue_id, f"no funding history for any symbol: {first_error}")
    return found


def _client(config: Config, venue_id: str, context: VenueContext,
            offline: bool) -> MarketDataVenue:
    spec = config.registry.venues[venue_id]
    if offline:
        # Replaying its snapshot, the venue's clock reads the instant the session stands for,
        # so what the plugin derives from the clock is what was recorded, on any day.
        context = replace(context, clock=fixed_clock(spec.offline_instant))
    return spec.factory(config.venues[venue_id], context)


async def gather(
    config: Config, options: ScanOptions, progress: Progress, context: VenueContext | None = None
) -> tuple[list[VenueData], dict[str, str]]:
    """Fetch every selected venue concurrently; one failing venue never stops the others.

    ``context`` overrides the venues' side effects (cache dir, clock, base URL); by default
    the config's cache dir, or a scratch dir that is thrown away when offline."""
    venue_ids = select_venues(config, options)
    with tempfile.TemporaryDirectory(prefix="perpcarry-offline-") as scratch:
        if context is None:
            cache_dir = Path(scratch) if options.offline else config.cache_dir
            context = VenueContext(cache_dir=cache_dir, offline=options.offline)
        clients = {v: _client(config, v, context, options.offline) for v in venue_ids}
        if options.offline:
            from perpcarry.ccxt.replay import replaying

            transport = replaying(
                *(config.registry.venues[v].offline_snapshot for v in venue_ids))
        else:
            transport = nullcontext()
        with transport:
            return await gather_from(config, clients, options, progress, close=True)


async def gather_from(
    config: Config, clients: dict[str, MarketDataVenue], options: ScanOptions,
    progress: Progress, *, close: bool = False,
) -> tuple[list[VenueData], dict[str, str]]:
    """:func:`gather` over clients the caller opened (the run loop keeps its own between
    cycles): each venue within ``[scan] deadline_seconds``, a failure named and never
    fatal to the others. Once every venue is done, each client writes what it fetched to
    its cache, and with ``close`` is closed (which writes it too)."""
    venue_ids = list(clients)
    deadline = config.settings.scan.deadline_seconds
    stages: dict[str, str] = {}

    def tracked(venue_id: str, stage: str) -> None:
        stages[venue_id] = stage
        progress(venue_id, stage)

    async def guarded(venue_id: str) -> VenueData | str:
        """The venue's data, or why it failed: its failure never stops another venue."""
        scope = asyncio.timeout(deadline)
        try:
            async with scope:
                return await _gather_venue(config, venue_id, clients[venue_id], options,
                                           tracked)
        except PerpcarryError as err:  # a venue error, or its cache file
            reason = _reason(venue_id, err)
        except Exception as err:  # the deadline, or a bug in the plugin or ours
            if isinstance(err, TimeoutError) and scope.expired():
                reason = (f"no answer within {deadline:g} s (while "
                          f"{stages.get(venue_id, 'starting')})")
            else:
                # The traceback only on request (--log-level DEBUG): it is not the
                # user's to act on, and a one-line cause is.
                logger.opt(exception=err).debug("{} failed unexpectedly", venue_id)
                reason = _unexpected(err)
        progress(venue_id, "failed")
        return reason

    try:
        outcomes = await asyncio.gather(*(guarded(v) for v in venue_ids))
    finally:
        # Not before: a cache write's CPU, partly holding the GIL, would delay the event
        # loop's handling of the responses other venues are still receiving.
        await asyncio.gather(*(client.close() if close else client.flush_funding_history()
                               for client in clients.values()))
    data = [o for o in outcomes if isinstance(o, VenueData)]
    failures = {v: o for v, o in zip(venue_ids, outcomes, strict=True) if isinstance(o, str)}
    return data, failures


def _unexpected(err: Exception) -> str:
    """A one-line failure reason for an exception none of perpcarry's types describes."""
    lines = str(err).strip().splitlines()
    detail = f": {redact(lines[0])}" if lines else ""
    return f"unexpected error ({type(err).__name__}{detail})"


def _reason(venue_id: str, err: Exception) -> str:
    """An error's message without the venue's name in front."""
    return str(err).removeprefix(f"{venue_id}: ")


def select_venues(config: Config, options: ScanOptions) -> list[str]:
    installed = config.registry.venues
    if not installed:
        raise UsageError("no venue to scan: no loaded plugin provides one (see [plugins] "
                         "allow and deny; `perpcarry plugins` lists what loaded)")
    if options.venues:
        unknown = [v for v in options.venues if v not in installed]
        if unknown:
            raise UsageError(
                f"--venues: unknown venue {', '.join(unknown)} "
                f"(installed: {', '.join(sorted(installed)) or 'none'})"
            )
        chosen = list(dict.fromkeys(options.venues))
    elif options.offline:
        chosen = sorted(installed)
    else:
        chosen = config.enabled_venues()
        if not chosen:
            raise UsageError(
                "no venues enabled: set enabled = true under [venues.<id>] in "
                "perpcarry.toml, or pass --venues, or try --offline"
            )
    if options.offline:
        missing = [v for v in chosen if installed[v].offline_snapshot is None]
        if missing:
            raise UsageError(f"--offline: no bundled snapshot for {', '.join(missing)}")
    return chosen


# -- evaluation (pure) ---------------------------------------------------------------------


def latest_estimates(data: VenueData, options: ScanOptions) -> dict[str, tuple[float, float]]:
    """(mean, ewma) hourly funding at each symbol's latest settlement; NaN: not available."""
    from perpcarry.money.estimators import latest_estimates

    # Settlement instants recur across symbols: each is converted once.
    moments = {r.funding_time for records in data.history.values() for r in records}
    micros = {moment: round(moment.timestamp() * 1_000_000) for moment in moments}
    histories = {
        symbol: [(micros[r.funding_time], float(r.rate)) for r in records]
        for symbol, records in data.history.items()
    }
    return latest_estimates(histories, window_hours=options.window_days * 24,
                            halflife_hours=options.ewma_halflife_days * 24)


def evaluate(data: VenueData, options: ScanOptions) -> tuple[list[CarryYield], list[Skipped]]:
    estimates = latest_estimates(data, options) if options.estimator != "current" else {}
    rows, skipped = [], []
    spot_books = data.books.get(MarketKind.SPOT)
    perp_books = data.books.get(MarketKind.PERP)
    for pair in data.pairs:
        quote = data.funding.quotes[pair.perp.symbol]
        rate, interval = float(quote.rate), quote.interval_hours
        current_hourly = yields.hourly_rate(rate, interval)
        mean, ewma = estimates.get(pair.perp.symbol, (math.nan, math.nan))
        expected = float(expected_hourly(current_hourly, mean, ewma, options.estimator))
        if math.isnan(expected):
            skipped.append(
                Skipped(
                    data.venue,
                    pair.perp.symbol,
                    f"not enough funding history for the {options.estimator} "
                    f"estimator ({options.window_days:g}-day window)",
                )
            )
            continue
        spot_book = spot_books.books.get(pair.spot.symbol) if spot_books else None
        perp_book = perp_books.books.get(pair.perp.symbol) if perp_books else None
        basis = spread = None
        if spot_book and perp_book:
            basis = yields.basis(float(perp_book.bid), float(spot_book.ask))
            spread = yields.half_spread(
                float(spot_book.bid), float(spot_book.ask)
            ) + yields.half_spread(float(perp_book.bid), float(perp_book.ask))
        fee_cost = yields.round_trip_cost(float(data.fees.spot_taker), float(data.fees.perp_taker))
        cost = fee_cost + (spread or 0.0)
        volumes = [b.quote_volume_24h for b in (spot_book, perp_book) if b is not None]
        thin = float(min(volumes)) if len(volumes) == 2 and None not in volumes else None
        expected_apr = yields.apr_from_hourly(expected)
        rows.append(
            CarryYield(
                venue=data.venue,
                pair=pair,
                quote=quote,
                fees=data.fees,
                estimator=options.estimator,
                current_apr=yields.funding_apr(rate, interval),
                expected_hourly=expected,
                expected_apr=expected_apr,
                basis=basis,
                spread_cost=spread,
                fee_cost=fee_cost,
                round_trip_cost=cost,
                break_even_hours=yields.break_even_hours(expected, basis or 0.0, cost),
                net_apr=yields.net_apr(expected_apr, basis or 0.0, cost, options.horizon_days),
                horizon_days=options.horizon_days,
                spot_book=spot_book,
                perp_book=perp_book,
                thin_volume_24h=thin,
            )
        )
    return rows, skipped


def rank(rows: list[CarryYield], options: ScanOptions) -> tuple[list[CarryYield], list[CarryYield]]:
    """Carry rows best first after the filters (not cut to --top); reverse-funding rows
    apart, never as carry."""
    carry = [r for r in rows if r.expected_hourly >= 0]
    reverse = sorted((r for r in rows if r.expected_hourly < 0), key=lambda r: r.net_apr)
    if options.min_net_apr is not None:
        carry = [r for r in carry if r.net_apr >= options.min_net_apr]
    if options.min_volume is not None:
        carry = [
            r
            for r in carry
            if r.thin_volume_24h is not None and r.thin_volume_24h >= options.min_volume
        ]
    carry.sort(key=lambda r: r.net_apr, reverse=True)
    return carry, reverse


def _option_notes(data: list[VenueData], rows: list[CarryYield], options: ScanOptions) -> list[str]:
    """Why a filter may have left the table short."""
    notes = []
    if options.symbols:
        listed = {p.base for d in data for p in d.pairs}
        unmatched = [s for s in options.symbols if s.upper() not in listed]
        if unmatched and data:
            notes.append(f"--symbols: no quoted carry pair for {', '.join(unmatched)} on "
                         f"{', '.join(d.venue for d in data)}")
    if options.min_volume is not None:
        unknown = sum(r.thin_volume_24h is None and r.expected_hourly >= 0 for r in rows)
        if unknown:
            notes.append(f"--min-volume: {unknown} pair(s) left out because their 24h volume "
                         "is unknown (no book data)")
    return notes


async def run_scan(
    config: Config,
    options: ScanOptions,
    progress: Progress = lambda venue, stage: None,
    context: VenueContext | None = None,
) -> ScanResult:
    """Scan the selected venues and rank their carry pairs; see :func:`gather`."""
    options.validate()
    data, failures = await gather(config, options, progress, context)
    return scan_result(data, failures, options)


def scan_result(data: list[VenueData], failures: dict[str, str],
                options: ScanOptions) -> ScanResult:
    """Evaluate and rank what :func:`gather` brought back (pure)."""
    rows, skipped, notes = [], [], []
    for venue_data in data:
        venue_rows, venue_skipped = evaluate(venue_data, options)
        rows.extend(venue_rows)
        skipped.extend(venue_data.skipped + venue_skipped)
        notes.extend(venue_data.notes)
    carry, reverse = rank(rows, options)
    return ScanResult(
        carry[: options.top] if options.top else carry, reverse, failures, skipped,
        notes + _option_notes(data, rows, options), {d.venue: d.snapshot_time for d in data},
        [p for d in data for p in d.pairs], carry, {d.venue: d.fees for d in data},
    )


@dataclass(frozen=True)
class VenueSummary:
    venue: str
    candidates: int
    median_net_apr: float | None
    best_net_apr: float | None
    best_pair: str | None


def compare_venues(result: ScanResult) -> tuple[list[VenueSummary], dict[str, CarryYield]]:
    """Per venue: candidates, median and best net APR; per multi-venue asset: the best venue.
    Over every candidate that passed the filters, however few rows --top shows."""
    summaries = []
    venues = sorted({r.venue for r in result.candidates} | set(result.snapshot_times))
    for venue in venues:
        venue_rows = [r for r in result.candidates if r.venue == venue]
        best = max(venue_rows, key=lambda r: r.net_apr, default=None)
        summaries.append(
            VenueSummary(
                venue,
                len(venue_rows),
                median(r.net_apr for r in venue_rows) if venue_rows else None,
                best.net_apr if best else None,
                best.pair.label if best else None,
            )
        )
    by_asset: dict[str, list[CarryYield]] = {}
    for row in result.candidates:
        by_asset.setdefault(row.pair.base, []).append(row)
    best_venue = {
        asset: max(rows, key=lambda r: r.net_apr)
        for asset, rows in by_asset.items()
        if len({r.venue for r in rows}) > 1
    }
    return summaries, dict(sorted(best_venue.items()))
