"""The paper venues of a replay: each venue in the history, traded on paper over its
recorded market data, on a simulated clock, in a data dir of its own.

``perpcarry run --paper --replay START..END`` trades through the same ``PaperVenue`` as
``--paper`` does; only its market data (:class:`HistoryMarketData`), its clock
(:class:`ReplayClock`) and where its state lives differ. A replay's state lives in
``<data_dir>/replay/<START>_<END>/``, wiped when a replay of that range starts (it says so
first), so a replay never reads or changes the user's paper accounts or journal.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
from loguru import logger

from perpcarry.config.loader import Config
from perpcarry.config.settings import VenueConfig
from perpcarry.domain.errors import LocalStateError, UsageError
from perpcarry.domain.types import Market
from perpcarry.execution.service import VenueHandle
from perpcarry.paper import PaperVenue, paper_wallets
from perpcarry.paper.prices import MarketView
from perpcarry.paper.store import PaperStore, state_path
from perpcarry.replay.clock import ReplayClock
from perpcarry.replay.market_data import HistoryMarketData
from perpcarry.venues.protocol import VenueSpec, offline_context


def _stamp(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d}" if moment.time() == datetime.min.time() \
        else f"{moment:%Y-%m-%dT%H%M}"


def replay_dir(data_dir: Path, start: datetime, end: datetime) -> Path:
    """Where the replay of [start, end] keeps its paper accounts (and the loop its journal)."""
    return data_dir / "replay" / f"{_stamp(start)}_{_stamp(end)}"


def fresh_replay_dir(data_dir: Path, start: datetime, end: datetime) -> Path:
    """The replay dir of [start, end], emptied of what an earlier replay of the range left."""
    directory = replay_dir(data_dir, start, end)
    try:
        if directory.exists():
            logger.warning("replay: wiping {} (what the last replay of this range left)",
                           directory)
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
    except OSError as err:
        raise LocalStateError(f"replay dir {directory}: {err.strerror or err}") from None
    return directory


async def snapshot_markets(spec: VenueSpec, venue_config: VenueConfig) -> list[Market]:
    """``spec``'s market definitions from its bundled offline snapshot, read as
    ``--offline`` reads them (no cache touched)."""
    from perpcarry.ccxt.replay import replaying

    with tempfile.TemporaryDirectory(prefix="perpcarry-replay-") as scratch, \
            replaying(spec.offline_snapshot):
        client = spec.factory(venue_config, offline_context(spec, Path(scratch)))
        try:
            return await client.load_markets()
        finally:
            await client.close()


def _replayable(config: Config, venue_id: str) -> VenueSpec | None:
    spec = config.registry.venues.get(venue_id)
    reason = ("no loaded plugin provides it (see [plugins])" if spec is None
              else "its plugin bundles no market snapshot to take its markets from"
              if spec.offline_snapshot is None else None)
    if reason:
        logger.warning("replay: {} is in the history but left out: {}", venue_id, reason)
        return None
    return spec


def _open_paper(config: Config, market_data: HistoryMarketData, directory: Path,
                clock: ReplayClock) -> PaperVenue:
    """A fresh paper account of the venue in ``directory`` over ``market_data``, with the
    configured starting balances, spread, margin rate and fee model."""
    venue_id = market_data.venue_id
    model = paper_wallets(config, venue_id)
    paper = config.settings.paper
    store = PaperStore(state_path(directory, venue_id), venue_id, model.spot,
                       paper.starting_balances(venue_id), clock.now(), durable=False)
    view = MarketView(market_data, paper.half_spread_bps,
                      timedelta(seconds=paper.quote_max_age_seconds), clock.now)
    fee_model, venue_config = config.registry.fee_model(venue_id), config.venues[venue_id]
    return PaperVenue(venue_id, view, lambda: fee_model.fee_schedule(venue_config, market_data),
                      store, model, paper.maintenance_margin_rate, clock.now)


async def replay_venues(config: Config, history: pl.DataFrame, start: datetime,
                        end: datetime, data_dir: Path
                        ) -> tuple[ReplayClock, dict[str, VenueHandle]]:
    """A simulated clock over the settlements of ``history`` in [start, end] (UTC), standing
    at the first of them, and for each venue in that range a fresh paper account trading on
    the history, in :func:`replay_dir` (wiped first: open the loop's journal there only
    after this returns). The caller closes each handle's ``orders`` (which closes its
    market data).

    Symbols the venue's snapshot does not list are left out (``market_data.skipped`` and
    every funding snapshot say why); so is a venue whose plugin is not loaded or bundles no
    snapshot (logged).
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("replay_venues takes timezone-aware (UTC) start and end")
    window = history.filter(pl.col("time").is_between(start, end))
    if window.is_empty():
        covered = (f"{history['time'].min():%Y-%m-%d} to {history['time'].max():%Y-%m-%d}"
                   if not history.is_empty() else "nothing")
        raise UsageError(f"--replay {_stamp(start)}..{_stamp(end)}: no settlement in the "
                         f"history in that range (it covers {covered})")
    # Only the series that settle in the range: a perp listed later has nothing to replay.
    history = history.join(window.select("venue", "symbol").unique(), on=["venue", "symbol"],
                           how="semi")
    data: list[HistoryMarketData] = []
    steps: set[datetime] = set()
    for venue_id in sorted(window["venue"].unique()):
        spec = _replayable(config, venue_id)
        if spec is None:
            continue
        # The clock's steps come from the series the market data keeps, so it is made
        # after them; they read it through this function.
        markets = await snapshot_markets(spec, config.venues[venue_id])
        market_data = HistoryMarketData(venue_id, history, markets, lambda: clock.now())
        for skip in market_data.skipped:
            logger.warning("replay: {} {}: {}", venue_id, skip.symbol, skip.reason)
        times = market_data.settlement_times(start, end)
        if not times:
            logger.warning("replay: {} is left out: none of its symbols in the history can "
                           "be replayed", venue_id)
            continue
        data.append(market_data)
        steps.update(times)
    if not steps:
        raise UsageError(f"--replay {_stamp(start)}..{_stamp(end)}: none of the history's "
                         "symbols in that range can be replayed (see the warnings above)")
    clock = ReplayClock(sorted(steps))
    directory = fresh_replay_dir(data_dir, start, end)
    handles: dict[str, VenueHandle] = {}
    try:
        for market_data in data:
            venue = _open_paper(config, market_data, directory, clock)
            handles[market_data.venue_id] = VenueHandle(orders=venue, market_data=market_data)
    except BaseException:
        for handle in handles.values():
            await handle.orders.close()
        raise
    return clock, handles
