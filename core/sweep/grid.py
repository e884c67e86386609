"""The grid file: which backtest parameters take which values, and how to rank the runs.

A grid file is TOML with two tables::

    [sweep]                       # how to run and rank (all optional)
    rank_by = "sharpe"            # a metric of METRICS
    constraint = "max_drawdown < 0.02"
    scheduler = "tcp://host:8786" # an existing Dask cluster (default: local workers)
    workers = 2                   # local worker processes (default: one per core)
    test_share = 0.3              # --walk-forward: the last 30 % of each span is held out

    [grid]                        # every option of `perpcarry backtest`, by field name
    venue = ["bybit,okx", "binance"]         # a list sweeps; "a,b" is one selection of both
    enter_apr = { from = 0.05, to = 0.2, step = 0.05 }   # a range, both ends included
    exit_apr = 0.02                           # a single value is fixed

Every combination becomes one :class:`Job` (two with ``--walk-forward``: the earlier part
and the held-out part), validated exactly as ``perpcarry backtest`` validates its options,
with the command line that reproduces it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import shlex
import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from perpcarry.domain.errors import ConfigError, UsageError

# grid field -> (its `perpcarry backtest` option, the type of one value). The order is the
# order of the options in the reproducing command.
PARAMETERS: dict[str, tuple[str, type]] = {
    "venue": ("--venue", str), "symbol": ("--symbol", str),
    "start": ("--start", str), "end": ("--end", str),
    "capital": ("--capital", float), "cadence_hours": ("--cadence-hours", float),
    "enter_apr": ("--enter-apr", float), "exit_apr": ("--exit-apr", float),
    "min_hold_hours": ("--min-hold-hours", float), "cooldown_hours": ("--cooldown-hours", float),
    "spread_cost": ("--spread-cost", float), "estimator": ("--estimator", str),
    "window_days": ("--window-days", float), "ewma_halflife_days": ("--ewma-halflife-days", float),
    "horizon_days": ("--horizon-days", float), "leverage": ("--leverage", float),
    "max_venue_share": ("--max-venue-share", float),
    "max_asset_share": ("--max-asset-share", float),
    "max_pair_share": ("--max-pair-share", float), "max_positions": ("--max-positions", int),
    "exit_funding_below": ("--exit-funding-below", float),
    "entry_blackout_minutes": ("--entry-blackout-minutes", float),
    "spike_exit": ("--spike-exit", float), "enter_premium": ("--enter-premium", float),
    "exit_premium": ("--exit-premium", float), "margin_floor": ("--margin-floor", float),
}
# Parameters that choose the data rather than set the strategy.
SELECTION = ("venue", "symbol", "start", "end")
# A fixed input, not a parameter: one data set is loaded and scattered per sweep.
DATA_FIELD = "data"
# Metrics a sweep records (from the backtest's summary) and whether higher is better.
METRICS: dict[str, bool] = {
    "apr": True, "sharpe": True, "total_return": True, "cagr": True, "final_equity": True,
    "max_drawdown": False, "annual_volatility": False, "funding_income": True,
    "fees_paid": False, "spread_paid": False, "basis_pnl": True, "turnover": False,
    "time_in_market": True, "entries": True, "exits": True, "allocator_runs": True,
}
SWEEP_FIELDS = ("rank_by", "constraint", "scheduler", "workers", "test_share", "batch_size",
                "connect_timeout")
CONSTRAINT = re.compile(r"^\s*(\w+)\s*(<=|>=|<|>)\s*(-?[0-9.]+(?:e-?\d+)?)\s*(%?)\s*$")
# Range steps are rounded to this many significant digits, so 0.1 + 2 x 0.05 is 0.2 and the
# reproducing command shows the value the run used.
RANGE_DIGITS = 12
MAX_RANGE_VALUES = 10_000


@dataclass(frozen=True)
class Constraint:
    """``metric op bound``: rows that meet it rank above rows that do not."""

    metric: str
    op: str
    bound: float

    def met(self, value: float | None) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return {"<": value < self.bound, "<=": value <= self.bound,
                ">": value > self.bound, ">=": value >= self.bound}[self.op]

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


@dataclass(frozen=True)
class Grid:
    path: Path
    values: dict[str, tuple]     # parameter -> its values, in the order given
    data: Path | None
    rank_by: str = "sharpe"
    constraint: Constraint | None = None
    scheduler: str | None = None
    workers: int | None = None
    test_share: float = 0.3
    batch_size: int | None = None
    connect_timeout: float = 10.0

    @property
    def swept(self) -> tuple[str, ...]:
        """Parameters with more than one value."""
        return tuple(name for name, values in self.values.items() if len(values) > 1)

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.rank_by]


@dataclass(frozen=True)
class Job:
    """One backtest of a sweep: validated settings, its span and the command reproducing it."""

    key: str                     # what --resume matches: the command and every setting
    combination: str             # the same for a combination's train and test parts
    part: str                    # "all", or "train" / "test" with --walk-forward
    params: dict[str, Any]       # the grid's values for this combination
    venues: tuple[str, ...] | None
    symbols: tuple[str, ...] | None
    start: datetime | None
    end: datetime | None
    settings: Any                # BacktestConfig
    allocator: Any               # AllocatorConfig
    command: str


def _fail(grid_path: Path, field: str, message: str) -> ConfigError:
    return ConfigError(f"{grid_path}: {field}: {message}")


def load_grid(path: Path) -> Grid:
    """Read and check a grid file; ConfigError naming the file and the field otherwise."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read grid file: {exc.strerror}") from None
    unknown = sorted(set(raw) - {"sweep", "grid"})
    if unknown:
        raise _fail(path, unknown[0],
                    "unknown top-level key (a grid file has a [sweep] and a [grid] table)")
    section = raw.get("sweep", {})
    table = raw.get("grid", {})
    for name, value in (("sweep", section), ("grid", table)):
        if not isinstance(value, dict):
            raise _fail(path, name, "must be a table")
    if not table:
        raise _fail(path, "grid", "no parameter given (any option of perpcarry backtest, "
                                  f"e.g. {', '.join(list(PARAMETERS)[4:8])})")
    values: dict[str, tuple] = {}
    data = None
    for name, given in table.items():
        if name == DATA_FIELD:
            if not isinstance(given, str) or not given:
                raise _fail(path, f"grid.{name}", "one path to funding history (not swept)")
            # Absolute, so the reproducing command works from any folder.
            data = (path.parent / given).resolve()
            continue
        if name not in PARAMETERS:
            raise _fail(path, f"grid.{name}", "unknown parameter (known: "
                        f"{', '.join([*PARAMETERS, DATA_FIELD])})")
        values[name] = _values(path, name, given)
    return Grid(path=path, values=values, data=data, **_sweep_options(path, section))


def _sweep_options(path: Path, section: dict) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, given in section.items():
        field = f"sweep.{name}"
        if name not in SWEEP_FIELDS:
            raise _fail(path, field, f"unknown key (known: {', '.join(SWEEP_FIELDS)})")
        if name == "rank_by":
            if given not in METRICS:
                raise _fail(path, field, f"{given!r} is not a metric (choose from "
                                         f"{', '.join(METRICS)})")
            options[name] = given
        elif name == "constraint":
            options[name] = _constraint(path, given)
        elif name == "scheduler":
            if not isinstance(given, str) or not given.strip():
                raise _fail(path, field, "a scheduler address such as tcp://10.0.0.5:8786")
            options[name] = given.strip()
        elif name in ("workers", "batch_size"):
            if isinstance(given, bool) or not isinstance(given, int) or given < 1:
                raise _fail(path, field, f"{given!r}: a whole number, 1 or more")
            options[name] = given
        elif name == "test_share":
            if not _is_number(given) or not 0 < given < 1:
                raise _fail(path, field, f"{given!r}: a share above 0 and below 1 (0.3 = 30 %)")
            options[name] = float(given)
        else:   # connect_timeout
            if not _is_number(given) or given <= 0:
                raise _fail(path, field, f"{given!r}: seconds, above 0")
            options[name] = float(given)
    return options


def _constraint(path: Path, text: Any) -> Constraint:
    match = CONSTRAINT.match(text) if isinstance(text, str) else None
    if match is None:
        raise _fail(path, "sweep.constraint", f"{text!r}: expected 'METRIC < NUMBER', "
                                              "e.g. 'max_drawdown < 0.02' or 'max_drawdown < 2%'")
    metric, op, number, percent = match.groups()
    if metric not in METRICS:
        raise _fail(path, "sweep.constraint", f"{metric!r} is not a metric (choose from "
                                              f"{', '.join(METRICS)})")
    try:
        bound = float(number) / (100.0 if percent else 1.0)
    except ValueError:
        raise _fail(path, "sweep.constraint", f"{number!r} is not a number") from None
    return Constraint(metric, op, bound)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def _values(path: Path, name: str, given: Any) -> tuple:
    """The values of one parameter: a scalar, a list, or a {from, to, step} range."""
    field = f"grid.{name}"
    kind = PARAMETERS[name][1]
    if isinstance(given, dict):
        if kind is str:
            raise _fail(path, field, "a range ({from, to, step}) needs a numeric parameter")
        items = _range(path, field, given, kind)
    elif isinstance(given, list):
        if not given:
            raise _fail(path, field, "empty list: give at least one value")
        items = given
    else:
        items = [given]
    out = []
    for item in items:
        value = _value(path, field, name, item, kind)
        if value in out:
            raise _fail(path, field, f"{value!r} is listed twice")
        out.append(value)
    return tuple(out)


def _range(path: Path, field: str, given: dict, kind: type) -> list:
    keys = set(given)
    if keys != {"from", "to", "step"}:
        raise _fail(path, field, "a range is { from = A, to = B, step = S } (both ends included)")
    low, high, step = given["from"], given["to"], given["step"]
    if not all(_is_number(v) for v in (low, high, step)):
        raise _fail(path, field, "from, to and step must be numbers")
    if step <= 0 or high < low:
        raise _fail(path, field, f"from {low} to {high} by {step}: needs step > 0 and to >= from")
    count = math.floor((high - low) / step + 1e-9) + 1
    if count > MAX_RANGE_VALUES:
        raise _fail(path, field, f"{count:,} values: at most {MAX_RANGE_VALUES:,} per range")
    if kind is int:
        if not all(isinstance(v, int) for v in (low, high, step)):
            raise _fail(path, field, "from, to and step must be whole numbers")
        return [low + i * step for i in range(count)]
    return [float(f"{low + i * step:.{RANGE_DIGITS}g}") for i in range(count)]


def _value(path: Path, field: str, name: str, item: Any, kind: type) -> Any:
    if name in ("start", "end"):
        if isinstance(item, datetime | date):
            item = item.isoformat()
        if not isinstance(item, str):
            raise _fail(path, field, f"{item!r}: expected a date such as \"2024-01-31\"")
        return item
    if name in ("venue", "symbol"):
        if isinstance(item, list) and item and all(isinstance(v, str) for v in item):
            item = ",".join(item)   # [["BTC", "ETH"], "SOL"]: BTC and ETH together, then SOL
        if not isinstance(item, str) or not [p for p in item.split(",") if p.strip()]:
            raise _fail(path, field, f"{item!r}: expected a name or a comma-separated list")
        return ",".join(p.strip() for p in item.split(",") if p.strip())
    if kind is str:
        if not isinstance(item, str):
            raise _fail(path, field, f"{item!r}: expected a string")
        return item
    if kind is int:
        if isinstance(item, bool) or not isinstance(item, int):
            raise _fail(path, field, f"{item!r}: expected a whole number")
        return item
    if not _is_number(item):
        raise _fail(path, field, f"{item!r}: expected a number")
    return float(item)


def split_list(text: str | None) -> tuple[str, ...] | None:
    """A comma-separated selection as ``perpcarry backtest`` splits it."""
    from perpcarry.cli.common import split_option

    return split_option([text], "--venue") if text else None


def plan_jobs(grid: Grid, config, history, fees: dict, *, walk_forward: bool,
              config_path: Path | None) -> tuple[list[Job], list[str]]:
    """Every valid combination as jobs (two each with ``walk_forward``), and notes on the
    combinations left out. ConfigError naming the conflicting values if none is valid."""
    from perpcarry.backtest.panel import default_span, select
    from perpcarry.cli.backtest import parse_date, validated_settings

    for name in ("start", "end"):
        for text in grid.values.get(name, ()):
            try:
                parse_date(text, f"--{name}")
            except UsageError as exc:
                raise _fail(grid.path, f"grid.{name}", str(exc)) from None
    _check_selection(grid, history)
    for name, values in grid.values.items():
        if name in SELECTION:
            continue
        for value in values:   # a value no combination can use is a mistake in the file
            # Alone, a hysteresis bound is checked against an equal partner: whether the
            # pair is inverted is a question of the combination, answered below.
            alone = {"enter_apr": value, "exit_apr": value} \
                if name in ("enter_apr", "exit_apr") else {name: value}
            try:
                validated_settings(config, alone)
            except UsageError as exc:
                raise _fail(grid.path, f"grid.{name}",
                            _name_option(str(exc), {name: value}, with_name=False)) from None
    names = list(grid.values)
    conflicts: dict[str, int] = {}
    jobs: list[Job] = []
    spans: dict[tuple, tuple[datetime, datetime]] = {}
    # Venues without a fee model are left out of every run (as replay leaves them out).
    priced = history.filter(history["venue"].is_in(list(fees)))
    selections: dict[tuple, Any] = {}
    for combo in itertools.product(*(grid.values[n] for n in names)):
        params = dict(zip(names, combo, strict=True))
        overrides = {k: v for k, v in params.items() if k not in SELECTION}
        enter = overrides.get("enter_apr", config.settings.strategy.enter_apr)
        exit_ = overrides.get("exit_apr", config.settings.strategy.exit_apr)
        if exit_ > enter:
            reason = f"exit_apr {exit_:g} is above enter_apr {enter:g}"
            conflicts[reason] = conflicts.get(reason, 0) + 1
            continue
        try:
            settings, allocator = validated_settings(config, overrides)
        except UsageError as exc:
            reason = _name_option(str(exc), params)
            conflicts[reason] = conflicts.get(reason, 0) + 1
            continue
        venues, symbols = split_list(params.get("venue")), split_list(params.get("symbol"))
        start = parse_date(params.get("start"), "--start")
        end = parse_date(params.get("end"), "--end")
        if (venues, symbols) not in selections:
            try:
                selections[venues, symbols] = select(priced, venues, symbols)
            except UsageError:
                selections[venues, symbols] = None
        selected = selections[venues, symbols]
        if selected is None:
            reason = (f"venue {params.get('venue', 'all')} has no symbol "
                      f"{params.get('symbol', 'any')}")
            conflicts[reason] = conflicts.get(reason, 0) + 1
            continue
        if start is not None and end is not None and end < start:
            reason = f"end {params['end']} is before start {params['start']}"
            conflicts[reason] = conflicts.get(reason, 0) + 1
            continue
        parts = [("all", start, end)]
        if walk_forward:
            selection = (venues, symbols, start, end)
            if selection not in spans:
                spans[selection] = _span(selected, start, end, default_span)
            parts = _split(*spans[selection], grid.test_share)
        combination = _digest({"params": params, "data": str(grid.data)})
        for part, part_start, part_end in parts:
            command = reproduce_command(params, part_start, part_end, grid.data, config_path,
                                        walk_forward)
            key = _digest({"command": command, "settings": settings.model_dump(mode="json"),
                           "allocator": allocator.model_dump(mode="json"),
                           "fees": {v: fees[v] for v in sorted(fees)}})
            jobs.append(Job(key=key, combination=combination, part=part, params=params,
                            venues=venues, symbols=symbols, start=part_start, end=part_end,
                            settings=settings, allocator=allocator, command=command))
    notes = [f"left out {count} combination{'s' if count > 1 else ''}: {reason}"
             for reason, count in conflicts.items()]
    if not jobs:
        raise ConfigError(f"{grid.path}: no valid combination in the grid: "
                          + "; ".join(reason for reason in list(conflicts)[:3]))
    return jobs, notes


def _name_option(message: str, params: dict, *, with_name: bool = True) -> str:
    """A backtest option error (``--leverage: ...``) as the grid field's value and why."""
    match = re.match(r"--([\w-]+)[: ]", message)
    name = match.group(1).replace("-", "_") if match else None
    if name not in params:
        return message
    value = f"{params[name]!r}"
    why = message[match.end():].strip().removeprefix(f"{value}:").strip()
    return f"{name} {value}: {why}" if with_name else f"{value}: {why}"


def _check_selection(grid: Grid, history) -> None:
    """Each venue and symbol named in the grid has funding history."""
    known = {"venue": set(history["venue"].unique()),
             "symbol": set(history["base"].unique()) | set(history["symbol"].unique())}
    for name in ("venue", "symbol"):
        for value in grid.values.get(name, ()):
            missing = [p for p in split_list(value)
                       if (p.upper() if name == "symbol" else p) not in known[name]]
            if missing:
                raise _fail(grid.path, f"grid.{name}", f"{missing[0]!r}: no funding history "
                            f"for it in the data (e.g. {', '.join(sorted(known[name])[:6])})")


def _span(selected, start, end, default_span) -> tuple[datetime, datetime]:
    """The span a run of this selection covers, as ``perpcarry backtest`` chooses it."""
    if start is None and end is None:
        span = default_span(selected)
        return span.start, span.end
    times = selected["time"]
    return start or times.min(), end or times.max()


def _split(start: datetime, end: datetime, test_share: float) -> list[tuple]:
    """(part, start, end) of the earlier part and the held-out last ``test_share`` of the
    span, split at a UTC midnight; both ends are included, as --start/--end include them."""
    cut = start + (end - start) * (1.0 - test_share)
    cut = datetime(cut.year, cut.month, cut.day, tzinfo=UTC)
    if cut <= start:
        cut += timedelta(days=1)
    return [("train", start, cut - timedelta(seconds=1)), ("test", cut, end)]


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value.astimezone(UTC)
        if moment == datetime(moment.year, moment.month, moment.day, tzinfo=UTC):
            return moment.date().isoformat()
        return moment.isoformat()
    if isinstance(value, float):
        return repr(value)   # shortest text that parses back to the same float
    return str(value)


def reproduce_command(params: dict, start: datetime | None, end: datetime | None,
                      data: Path | None, config_path: Path | None,
                      exact_span: bool = False) -> str:
    """The ``perpcarry backtest`` command line that runs exactly this combination."""
    words = ["perpcarry"]
    if config_path is not None:
        words += ["--config", str(config_path)]
    words.append("backtest")
    if data is not None:
        words += ["--data", str(data)]
    for name, (option, _) in PARAMETERS.items():
        if name in ("start", "end"):
            moment = start if name == "start" else end
            given = params.get(name)
            if exact_span and moment is not None:
                words += [option, _text(moment)]
            elif given is not None:
                words += [option, given]
        elif name in params:
            words += [option, _text(params[name])]
    return shlex.join(words)


def _digest(payload: dict) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
