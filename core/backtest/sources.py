"""The funding-history file formats core reads, and the pieces a plugin's own formats use.

Every class here satisfies ``perpcarry.venues.protocol.HistorySource``. None is one venue's:
core's own table, datasets whose rows name their venue, the plugins' SQLite cache, and
supervik's per-venue files (the venue only in the file name: a venue plugin registers one
``SupervikCsv`` for its own id). A format only one venue writes lives in that plugin.

polars is imported when a file is loaded, not with this module: plugins build their sources
when the registry is built, and ``perpcarry plugins`` should not pay for polars.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from perpcarry.venues.protocol import HistorySource

if TYPE_CHECKING:
    import polars as pl

# supervik stamps settlements in local time UTC+3 (03:00/11:00/19:00), see SOURCES.md.
SUPERVIK_UTC_OFFSET_HOURS = 3
# The venue plugins' funding-history cache: <cache_dir>/funding_history.sqlite.
STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def csv_header(path: Path) -> list[str]:
    """The column names of a CSV file (its first line)."""
    with path.open() as file:
        return file.readline().strip().split(",")


def parquet_columns(path: Path) -> set[str]:
    """The column names of a parquet file (its schema, no rows read)."""
    import polars as pl

    return set(pl.read_parquet_schema(path))


def has_suffix(path: Path, *suffixes: str) -> bool:
    """Whether the file name ends with one of ``suffixes`` (case-insensitive)."""
    return path.name.lower().endswith(suffixes)


class PerpcarryParquet:
    """perpcarry's own table (the bundled history, or a backtest's export)."""

    name = "perpcarry parquet"

    def recognises(self, path: Path) -> bool:
        from perpcarry.backtest.history import HISTORY_SCHEMA

        return has_suffix(path, ".parquet") \
            and set(HISTORY_SCHEMA) - {"source"} <= parquet_columns(path)

    def load(self, path: Path) -> pl.DataFrame:
        import polars as pl

        from perpcarry.backtest.history import normalise

        return normalise(pl.read_parquet(path), "perpcarry")


class ZushenParquet:
    """zushen-funding: settlements of several venues, each row naming its venue."""

    name = "zushen parquet"

    def recognises(self, path: Path) -> bool:
        return has_suffix(path, ".parquet") and {
            "settlement_ts", "rate_raw", "interval_hours", "venue_symbol"} <= parquet_columns(path)

    def load(self, path: Path) -> pl.DataFrame:
        import polars as pl

        from perpcarry.backtest.history import normalise, unified_symbol

        frame = pl.read_parquet(path)
        names = frame.select("venue_symbol", "canonical_symbol").unique()
        mapping = {row[0]: unified_symbol(row[1]) for row in names.iter_rows()}
        return normalise(frame.select(
            "venue",
            pl.col("venue_symbol").replace_strict({k: v[0] for k, v in mapping.items()})
            .alias("symbol"),
            pl.col("venue_symbol").replace_strict({k: v[1] for k, v in mapping.items()})
            .alias("base"),
            pl.col("settlement_ts").alias("time"), pl.col("rate_raw").alias("rate"),
            "interval_hours", pl.col("mark_price").cast(pl.Float64),
        ), "zushen")


class KnxParquet:
    """knx-multivenue funding (rows name their venue), with ``candles.parquet`` beside it
    for prices; the candles alone hold no funding."""

    name = "knx parquet"
    CANDLES = "candles.parquet"

    def recognises(self, path: Path) -> bool:
        if not has_suffix(path, ".parquet"):
            return False
        columns = parquet_columns(path)
        return {"timestamp", "venue", "coin"} <= columns and bool({"funding_rate", "o"} & columns)

    def load(self, path: Path) -> pl.DataFrame | None:
        import polars as pl

        from perpcarry.backtest.history import attach_prices, normalise

        frame = pl.read_parquet(path)
        if "funding_rate" not in frame.columns:
            return None  # the candles: read beside the funding file
        history = normalise(frame.select(
            pl.col("venue"), (pl.col("coin") + "/USDT:USDT").alias("symbol"),
            pl.col("coin").alias("base"), pl.col("timestamp").alias("time"),
            pl.col("funding_rate").alias("rate"),
        ), "knx")
        candles = path.parent / self.CANDLES
        if candles.is_file():
            # Perp candles (1h): the open of the bar starting at a settlement is its price.
            prices = pl.read_parquet(candles).select(
                "venue", pl.col("coin").alias("base"), pl.col("timestamp").alias("time"),
                pl.col("o").alias("price"))
            history = attach_prices(history, prices, "mark_price")
        return history


class AhaCsv:
    """aha-3exch: spot and perp bars of several venues with the funding rate, each row
    naming its venue (``exchange``)."""

    name = "aha CSV"

    def recognises(self, path: Path) -> bool:
        return has_suffix(path, ".csv") \
            and {"exchange", "pair", "contract", "funding rate"} <= set(csv_header(path))

    def load(self, path: Path) -> pl.DataFrame:
        import polars as pl

        from perpcarry.backtest.history import normalise

        frame = pl.read_csv(path, infer_schema_length=10000)
        # ``time`` is UK local time, not UTC as SOURCES.md says: bars sit at 00/08/16 in
        # winter and at 01/09/17 in summer (BST). Read as Europe/London, every settlement
        # lands on the 00/08/16 UTC grid and all 1,642 BTC rates of the venue dorian covers
        # equal dorian's (not only the 715 winter ones). At the autumn change 01:00 is ambiguous:
        # it is the 00:00 UTC bar (BST).
        frame = frame.with_columns(
            pl.col("time").str.to_datetime().dt.replace_time_zone(
                "Europe/London", ambiguous="earliest").dt.convert_time_zone("UTC"),
            base=pl.col("pair").str.slice(0, 3))
        # USDCM rows are coin-margined (inverse) perps: a different trade, left out.
        perps = frame.filter((pl.col("contract") == "perpetual")
                             & pl.col("pair").str.ends_with("USDT"))
        spot = frame.filter(pl.col("contract") == "spot").select(
            pl.col("exchange").alias("venue"), "base", "time",
            pl.col("open").alias("spot_price"))
        # Bars start at ``time`` and funding settles at ``time``: the bar's open is the price.
        history = perps.select(
            pl.col("exchange").alias("venue"), (pl.col("base") + "/USDT:USDT").alias("symbol"),
            "base", "time", pl.col("funding rate").alias("rate"),
            pl.col("open").alias("mark_price"),
        ).join(spot, on=["venue", "base", "time"], how="left")
        return normalise(history, "aha")


class HistoryCache:
    """The venue plugins' funding-history cache (``<cache_dir>/funding_history.sqlite``,
    see perpcarry.ccxt.history_store): table ``funding(venue, symbol, funding_time_ms, rate,
    mark_price)`` with decimal text. It records no interval: ``normalise`` infers each from
    the spacing of the symbol's settlements."""

    name = "funding-history cache SQLite"

    def recognises(self, path: Path) -> bool:
        return has_suffix(path, *STORE_SUFFIXES)

    def load(self, path: Path) -> pl.DataFrame:
        import polars as pl

        from perpcarry.backtest.history import DataFormatError, normalise, unified_symbol

        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT venue, symbol, funding_time_ms, rate, mark_price FROM funding "
                "ORDER BY venue, symbol, funding_time_ms").fetchall()
        finally:
            db.close()
        if not rows:
            raise DataFormatError(f"{path}: the funding-history cache holds no settlements")
        frame = pl.DataFrame(rows, orient="row", schema={
            "venue": pl.String, "symbol": pl.String, "ms": pl.Int64, "rate": pl.String,
            "mark_price": pl.String})
        names = {s: unified_symbol(s) for s in frame["symbol"].unique()}
        return normalise(frame.select(
            "venue",
            pl.col("symbol").replace_strict({k: v[0] for k, v in names.items()}),
            pl.col("symbol").replace_strict({k: v[1] for k, v in names.items()}).alias("base"),
            pl.from_epoch("ms", time_unit="ms").dt.replace_time_zone("UTC").alias("time"),
            pl.col("rate").cast(pl.Float64), pl.col("mark_price").cast(pl.Float64),
        ), "funding-history-cache")


@dataclass(frozen=True)
class SupervikCsv:
    """supervik's ``<PAIR>_<venue>_<from>_<to>_funding_history.csv`` of one venue. The rows
    do not say which venue: only the file name does, so a venue plugin registers one for its
    own id and it recognises ``_<venue_id>_`` in the name."""

    venue_id: str

    @property
    def name(self) -> str:
        return f"supervik CSV ({self.venue_id})"

    def recognises(self, path: Path) -> bool:
        return has_suffix(path, ".csv") and f"_{self.venue_id}_" in path.name \
            and csv_header(path) == ["Symbol", "Date", "Funding Rate"]

    def load(self, path: Path) -> pl.DataFrame:
        import polars as pl

        from perpcarry.backtest.history import normalise, unified_symbol

        frame = pl.read_csv(path, infer_schema_length=10000)
        time = pl.col("Date").str.to_datetime(time_zone="UTC") \
            - pl.duration(hours=SUPERVIK_UTC_OFFSET_HOURS)
        symbols = {s: unified_symbol(s) for s in frame["Symbol"].unique()}
        return normalise(frame.select(
            pl.lit(self.venue_id).alias("venue"),
            pl.col("Symbol").replace_strict({k: v[0] for k, v in symbols.items()})
            .alias("symbol"),
            pl.col("Symbol").replace_strict({k: v[1] for k, v in symbols.items()})
            .alias("base"),
            time.alias("time"), pl.col("Funding Rate").alias("rate"),
        ), "supervik")


CORE_SOURCES: tuple[HistorySource, ...] = (
    PerpcarryParquet(), ZushenParquet(), KnxParquet(), AhaCsv(), HistoryCache())
