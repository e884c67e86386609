"""One backtest from configuration to result: data, fee schedules, allocator limits, engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from perpcarry.backtest.engine import Simulation, lp_allocator, simulate
from perpcarry.backtest.history import load_bundled, load_path
from perpcarry.backtest.margin import MarginModel
from perpcarry.backtest.panel import Panel, build_panel, default_span, select
from perpcarry.backtest.report import summarise
from perpcarry.config.settings import (
    PAPER_DEFAULT_MAINTENANCE_MARGIN_RATE,
    BacktestConfig,
    StrategyConfig,
    StrictModel,
)
from perpcarry.domain.errors import InvalidValue, UsageError
from perpcarry.strategy.rules import Rules

if TYPE_CHECKING:
    from perpcarry.config.loader import Config
    from perpcarry.config.settings import AllocatorConfig


class BacktestSettings(StrictModel):
    """What one backtest runs: the ``[strategy]`` rules and the ``[backtest]`` settings,
    each with the run's overrides applied (``cli.backtest.validated_settings``)."""

    backtest: BacktestConfig = BacktestConfig()
    strategy: StrategyConfig = StrategyConfig()

    @classmethod
    def of(cls, **fields) -> BacktestSettings:
        """Defaults with ``fields`` (names of either section) set, validated."""
        own = {k: v for k, v in fields.items() if k in BacktestConfig.model_fields}
        return cls(backtest=BacktestConfig(**own),
                   strategy=StrategyConfig(**{k: v for k, v in fields.items() if k not in own}))


@dataclass(frozen=True)
class BacktestRun:
    history: pl.DataFrame        # the rows simulated (after venue/symbol/date selection)
    simulation: Simulation
    summary: dict
    fee_sources: dict[str, str]  # venue -> where its taker fees come from


def margin_model(allocator: AllocatorConfig, strategy: StrategyConfig) -> MarginModel:
    """The backtest's margin model: the allocator's leverage and buffer (what each short was
    sized with), ``[strategy] margin_floor``, and the paper venue's default maintenance
    margin rate, so a backtest and a paper run liquidate at the same margin."""
    if strategy.margin_floor > 1.0 + allocator.margin_buffer:
        raise InvalidValue("margin_floor", strategy.margin_floor,
                           rule=f"must not exceed 1 + [allocator] margin_buffer "
                                f"({1.0 + allocator.margin_buffer:g}): a top-up restores "
                                "1 + margin_buffer")
    return MarginModel(leverage=allocator.leverage, margin_buffer=allocator.margin_buffer,
                       floor=strategy.margin_floor,
                       maintenance_rate=float(PAPER_DEFAULT_MAINTENANCE_MARGIN_RATE))


def taker_fees(config: Config, venues) -> tuple[dict[str, tuple[float, float]], dict[str, str]]:
    """Spot and perp taker fee per venue, from the venue's fee model as ``plan`` resolves it
    without an account (default table, config overrides), and where each came from."""
    import asyncio

    async def schedules():
        chosen = [v for v in sorted(set(venues))
                  if v in config.registry.fee_models and v in config.venues]
        resolved = await asyncio.gather(*(
            config.registry.fee_model(v).fee_schedule(config.venues[v], None) for v in chosen))
        return dict(zip(chosen, resolved, strict=True))

    resolved = asyncio.run(schedules())
    fees = {v: (float(s.spot_taker), float(s.perp_taker)) for v, s in resolved.items()}
    return fees, {v: s.describe() for v, s in resolved.items()}


def run_backtest(config: Config, settings: BacktestSettings, *, data: Path | None = None,
                 venues=None, symbols=None, start: datetime | None = None,
                 end: datetime | None = None, allocate=None,
                 allocator: AllocatorConfig | None = None,
                 progress: Callable[[int, int], None] | None = None) -> BacktestRun:
    """Replay ``settings`` on the bundled history (or ``data``) with ``config``'s fee models
    and allocator limits (``allocator`` replaces ``[allocator]``). ``allocate`` replaces the
    LP (tests only)."""
    # The command checks the limits before any data is read (cli.backtest.validated_settings);
    # replay() builds them once more, to run.
    allocator = allocator or config.settings.allocator
    sources = [source for source, _ in config.registry.history_sources.values()]
    history = load_path(data, sources) if data is not None else load_bundled()
    history = select(history, venues, symbols)
    fees, sources = taker_fees(config, history["venue"].unique())
    return replay(history, settings, allocator, fees, sources,
                  start=start, end=end, allocate=allocate, progress=progress)


def replay(history: pl.DataFrame, settings: BacktestSettings, allocator: AllocatorConfig,
           fees: dict[str, tuple[float, float]], fee_sources: dict[str, str], *,
           start: datetime | None = None, end: datetime | None = None, allocate=None,
           progress: Callable[[int, int], None] | None = None) -> BacktestRun:
    """:func:`run_backtest` on an already loaded and selected history, with the taker fees
    resolved (``taker_fees``): what a sweep runs many times on data it loaded once."""
    ready = prepare(history, fees, fee_sources, start=start, end=end,
                    **panel_settings(settings))
    return replay_prepared(ready, settings, allocator, fees, allocate=allocate,
                           progress=progress)


@dataclass(frozen=True)
class Prepared:
    """What a replay needs besides the strategy: runs that differ only in their strategy
    (thresholds, holding rules, horizon, costs, caps) can share one (a sweep does)."""

    history: pl.DataFrame        # the rows simulated (after venue/date selection)
    panel: Panel
    notes: tuple[str, ...]
    fee_sources: dict[str, str]  # of the venues in the history


def panel_settings(settings: BacktestSettings) -> dict:
    """The settings that shape the panel: with the history and the span, all it depends on."""
    rules = settings.strategy
    return {"estimator": rules.estimator, "window_days": rules.window_days,
            "ewma_halflife_days": rules.ewma_halflife_days,
            "cadence_hours": settings.backtest.cadence_hours}


def prepare(history: pl.DataFrame, fees: dict[str, tuple[float, float]],
            fee_sources: dict[str, str], *, start: datetime | None, end: datetime | None,
            estimator: str, window_days: float, ewma_halflife_days: float,
            cadence_hours: float | None) -> Prepared:
    """The history (venues with a fee model, the span) as the panel a replay simulates."""
    present = set(history["venue"].unique())
    sources = {v: s for v, s in fee_sources.items() if v in present}
    notes = []
    unknown = sorted(present - set(fees))
    if not fees:
        raise UsageError(f"no fee model for {', '.join(unknown)}: no loaded plugin provides "
                         "one (see [plugins] allow and deny; `perpcarry plugins` lists what "
                         "loaded)")
    if unknown:
        notes.append(f"left out {', '.join(unknown)}: no fee model installed for it")
        history = select(history, list(fees))
    if start is None and end is None:
        span = default_span(history)
        start, end = span.start, span.end
        notes.insert(0, span.note)
    else:
        notes.insert(0, f"span {start or 'the first settlement'} → {end or 'the last one'} "
                        "(as given)")
    panel = build_panel(history, estimator=estimator, window_hours=window_days * 24,
                        halflife_hours=ewma_halflife_days * 24,
                        start=start, end=end, cadence_hours=cadence_hours)
    if start is not None:
        history = history.filter(pl.col("time") >= start)
    if end is not None:
        history = history.filter(pl.col("time") <= end)
    return Prepared(history, panel, (*notes, *panel.notes), sources)


def replay_prepared(ready: Prepared, settings: BacktestSettings, allocator: AllocatorConfig,
                    fees: dict[str, tuple[float, float]], *, allocate=None,
                    progress: Callable[[int, int], None] | None = None) -> BacktestRun:
    """The strategy of ``settings`` simulated on a prepared panel, and its summary."""
    from perpcarry.allocation.allocator import Limits

    panel, rules = ready.panel, settings.strategy
    spot_taker = np.array([fees[v][0] for v in panel.venues])
    perp_taker = np.array([fees[v][1] for v in panel.venues])
    if allocate is None:
        limits = Limits.from_config(allocator, capital=settings.backtest.capital)
        allocate = lp_allocator(limits, panel.venues, panel.bases)
    simulation = simulate(panel, Rules.from_config(rules), settings.backtest.capital,
                          spot_taker, perp_taker, allocate, progress,
                          margin=margin_model(allocator, rules))
    summary = summarise(simulation, settings, notes=list(ready.notes),
                        fee_sources=ready.fee_sources)
    return BacktestRun(ready.history, simulation, summary, ready.fee_sources)
