"""Funding history for the backtest: loaders for real dataset formats, one long table out.

Every loader returns the same columns (``HISTORY_SCHEMA``):

- ``venue`` (the venue id), ``symbol`` (ccxt unified perp, ``BTC/USDT:USDT``), ``base``;
- ``time``: the settlement, UTC, rounded to the minute (some venues stamp settlements with a
  few milliseconds of jitter, 16:00:00.003, which would split one grid time into many);
- ``rate``: per-interval fraction, ``interval_hours``: the interval that rate covers;
- ``mark_price``: perp price at the settlement (mark price, else the perp candle open of the
  bar containing it), null where the dataset has none;
- ``spot_price``: spot price at the settlement, null where unknown;
- ``source``: which dataset the row came from.

Formats are recognised from their content, not their file names (see ``load_path``); the
formats are described in ``../shared/data/SOURCES.md``. Core reads the formats that are not
one venue's: its own parquet (the bundled history), datasets whose rows name their venue,
and the funding-history cache the venue plugins keep (``<cache_dir>/funding_history.sqlite``).
A format only one venue writes is that venue plugin's ``HistorySource``, registered through
the ``register_history_sources`` hook.
"""

from __future__ import annotations

import re
import sqlite3
import tarfile
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import polars as pl

from perpcarry.domain.errors import PerpcarryError
from perpcarry.venues.protocol import HistorySource

HISTORY_SCHEMA = {
    "venue": pl.String, "symbol": pl.String, "base": pl.String,
    "time": pl.Datetime("us", "UTC"), "rate": pl.Float64, "interval_hours": pl.Float64,
    "mark_price": pl.Float64, "spot_price": pl.Float64, "source": pl.String,
}
BUNDLED_FILE = "funding_history.parquet"
STANDARD_INTERVALS = (1.0, 2.0, 4.0, 8.0)
QUOTES = ("USDT", "USDC", "USD", "BUSD", "FDUSD")


class DataFormatError(PerpcarryError):
    """A file the backtest cannot read; the message names the file."""

    exit_code = 2


def unified_symbol(venue_symbol: str) -> tuple[str, str]:
    """(ccxt unified linear perp symbol, base) from ``BTCUSDT``, ``BTC-USDT-PERP``,
    ``BTCPERP`` (a USDC perp named by its base alone) or ``BTC-USDT-SWAP``."""
    text = venue_symbol.upper()
    parts = [p for p in re.split(r"[-_/:]", text) if p not in ("PERP", "SWAP")]
    if len(parts) >= 2:
        base, quote = parts[0], parts[1]
    elif text.endswith("PERP"):
        base, quote = text[: -len("PERP")], "USDC"
    else:
        quote = next((q for q in QUOTES if text.endswith(q) and len(text) > len(q)), None)
        if quote is None:
            raise DataFormatError(f"{venue_symbol}: cannot tell the quote currency")
        base = text[: -len(quote)]
    return f"{base}/{quote}:{quote}", base


def normalise(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """``frame`` as ``HISTORY_SCHEMA`` rows: missing columns filled with nulls, times rounded
    to the minute, missing intervals derived from the spacing of settlements, one row per
    (venue, symbol, time), ``source`` where the frame has none."""
    for name, dtype in HISTORY_SCHEMA.items():
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(name))
    frame = frame.with_columns(
        pl.col("time").dt.convert_time_zone("UTC").dt.cast_time_unit("us").dt.round("1m"),
        pl.col("source").fill_null(source),
        pl.col("rate").cast(pl.Float64),
        pl.col("mark_price").cast(pl.Float64), pl.col("spot_price").cast(pl.Float64),
        pl.col("interval_hours").cast(pl.Float64),
    ).select(list(HISTORY_SCHEMA)).sort("venue", "symbol", "time")
    frame = frame.unique(["venue", "symbol", "time"], keep="first", maintain_order=True)
    return _derive_intervals(frame)


def _derive_intervals(frame: pl.DataFrame) -> pl.DataFrame:
    """Where a dataset does not say the interval, take the gap to the previous settlement,
    or the series' typical gap where that is not a standard interval (first row, data gaps)."""
    if frame["interval_hours"].null_count() == 0:
        return frame
    gap = (pl.col("time").diff().dt.total_seconds() / 3600.0).round(0).over("venue", "symbol")
    frame = frame.with_columns(_gap=gap)
    frame = frame.with_columns(
        _gap=pl.when(pl.col("_gap").is_in(STANDARD_INTERVALS)).then(pl.col("_gap")))
    frame = frame.with_columns(
        _typical=pl.col("_gap").median().over("venue", "symbol").fill_null(8.0))
    return frame.with_columns(
        interval_hours=pl.coalesce("interval_hours", "_gap", "_typical"),
    ).drop("_gap", "_typical")


def attach_prices(funding: pl.DataFrame, prices: pl.DataFrame, column: str) -> pl.DataFrame:
    """As-of join a price (``venue, base, time, price``) onto settlements: the latest price
    at or before each settlement, filling ``column`` where it is null."""
    prices = prices.with_columns(pl.col("time").dt.cast_time_unit("us")) \
        .sort("venue", "base", "time")
    joined = funding.sort("venue", "base", "time").join_asof(
        prices.rename({"price": "_px"}), on="time", by=["venue", "base"],
        strategy="backward", check_sortedness=False)
    return joined.with_columns(pl.coalesce(column, "_px").alias(column)).drop("_px") \
        .sort("venue", "symbol", "time")


# -- dispatch -------------------------------------------------------------------------------


def _sources(registered: Iterable[HistorySource] | None) -> list[HistorySource]:
    """Core's formats, then the ones the installed plugins register."""
    from perpcarry.backtest.sources import CORE_SOURCES

    if registered is None:
        from perpcarry.plugins.manager import load_registry

        registered = (source for source, _ in load_registry().history_sources.values())
    return [*CORE_SOURCES, *registered]


def _known(sources: list[HistorySource]) -> str:
    return ", ".join(source.name for source in sources)


def _read_error(path: Path, err: Exception) -> DataFormatError:
    first_line = str(err).splitlines()[0] if str(err) else ""
    return DataFormatError(f"{path}: could not read ({type(err).__name__}: {first_line})")


# What a malformed file raises from polars, sqlite3, tarfile or a plugin's parsing.
READ_ERRORS = (OSError, ValueError, KeyError, pl.exceptions.PolarsError, tarfile.TarError,
               sqlite3.Error)


def _recognising(path: Path, sources: list[HistorySource]
                 ) -> tuple[HistorySource | None, Exception | None]:
    """The one source that reads ``path`` (None if none does), and the error a source met
    reading its header, if any. Two sources is an error: which of them is right cannot be
    told, and picking one silently could import wrong numbers."""
    found, error = [], None
    for source in sources:
        try:
            if source.recognises(path):
                found.append(source)
        except READ_ERRORS as err:  # not readable as this format: not this format
            error = error or err
    if len(found) > 1:
        raise DataFormatError(f"{path}: read by more than one format "
                              f"({_known(found)}); deny one of their plugins in [plugins]")
    return (found[0] if found else None), error


def load_path(path: Path, sources: Iterable[HistorySource] | None = None) -> pl.DataFrame:
    """Load a file, or every recognised file under a folder, as one history table.

    ``sources`` are the plugins' history sources (default: every installed plugin's); in a
    folder, files no format recognises are passed over (datasets keep exchange info and
    notes beside the data), a lone file must be recognised."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file or folder")
    every = _sources(sources)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    frames = []
    for file in files:
        source, error = _recognising(file, every)
        if source is None:
            if path.is_dir():
                continue
            if error is not None:
                raise _read_error(file, error) from error
            raise DataFormatError(f"{file}: unknown funding data format (known: "
                                  f"{_known(every)})")
        try:
            frame = source.load(file)
        except DataFormatError:
            raise
        except READ_ERRORS as err:
            raise _read_error(file, err) from err
        if frame is not None:
            frames.append(frame)
    if not frames:
        raise DataFormatError(f"{path}: no funding history found (known: {_known(every)})")
    return combine(frames)


def combine(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Concatenate histories; where two sources cover the same settlement, the first wins."""
    frame = pl.concat(frames, how="vertical_relaxed")
    return frame.unique(["venue", "symbol", "time"], keep="first", maintain_order=True) \
        .sort("venue", "symbol", "time")


def load_bundled() -> pl.DataFrame:
    """The real funding history shipped with perpcarry (see data/PROVENANCE.md)."""
    ref = resources.files("perpcarry.backtest").joinpath("data", BUNDLED_FILE)
    with resources.as_file(ref) as file:
        return pl.read_parquet(file)
