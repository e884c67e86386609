"""Funding history for the backtest: loaders for real dataset formats, one long table out.

Every loader returns the same columns (``HISTORY_SCHEMA``):

- ``venue`` (``binance``), ``symbol`` (ccxt unified perp, ``BTC/USDT:USDT``), ``base``;
- ``time``: the settlement, UTC, rounded to the minute (Binance stamps settlements with a
  few milliseconds of jitter, 16:00:00.003, which would split one grid time into many);
- ``rate``: per-interval fraction, ``interval_hours``: the interval that rate covers;
- ``mark_price``: perp price at the settlement (mark price, else the perp candle open of the
  bar containing it), null where the dataset has none;
- ``spot_price``: spot price at the settlement, null where unknown;
- ``source``: which dataset the row came from.

Formats are recognised from their columns, not their file names (see ``load_path``); the
formats are described in ``../shared/data/SOURCES.md``. The funding-history cache the venue
plugins keep (``<cache_dir>/funding_history.sqlite``) is read too, by its file suffix.
"""

from __future__ import annotations

import json
import re
import sqlite3
import tarfile
from importlib import resources
from pathlib import Path

import polars as pl

from perpcarry.domain.errors import PerpcarryError

HISTORY_SCHEMA = {
    "venue": pl.String, "symbol": pl.String, "base": pl.String,
    "time": pl.Datetime("us", "UTC"), "rate": pl.Float64, "interval_hours": pl.Float64,
    "mark_price": pl.Float64, "spot_price": pl.Float64, "source": pl.String,
}
BUNDLED_FILE = "funding_history.parquet"
STANDARD_INTERVALS = (1.0, 2.0, 4.0, 8.0)
QUOTES = ("USDT", "USDC", "USD", "BUSD", "FDUSD")
# ruleaker snapshots store rate x 3 x 365 x 100 (their 8h assumption), see SOURCES.md.
RULEAKER_SCALE = 3 * 365 * 100
# supervik stamps settlements in local time UTC+3 (03:00/11:00/19:00), see SOURCES.md.
SUPERVIK_UTC_OFFSET_HOURS = 3

KNOWN_FORMATS = (
    "perpcarry/zushen/knx parquet, Binance fundingRate JSON, Binance funding CSV, "
    "supervik CSV, aha CSV, ruleaker OKX tar.gz, funding-history cache SQLite"
)
# The venue plugins' funding-history cache: <cache_dir>/funding_history.sqlite.
STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


class DataFormatError(PerpcarryError):
    """A file the backtest cannot read; the message names the file."""

    exit_code = 2


def unified_symbol(venue_symbol: str) -> tuple[str, str]:
    """(ccxt unified linear perp symbol, base) from ``BTCUSDT``, ``BTC-USDT-PERP``,
    ``BTCPERP`` (Bybit's USDC perp) or ``BTC-USDT-SWAP``."""
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


def _finish(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """Fill missing columns, round times, derive missing intervals, order columns."""
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


def _attach_prices(funding: pl.DataFrame, prices: pl.DataFrame, column: str) -> pl.DataFrame:
    """As-of join a price (``venue, base, time, price``) onto settlements: the latest price
    at or before each settlement, filling ``column`` where it is null."""
    prices = prices.with_columns(pl.col("time").dt.cast_time_unit("us")) \
        .sort("venue", "base", "time")
    joined = funding.sort("venue", "base", "time").join_asof(
        prices.rename({"price": "_px"}), on="time", by=["venue", "base"],
        strategy="backward", check_sortedness=False)
    return joined.with_columns(pl.coalesce(column, "_px").alias(column)).drop("_px") \
        .sort("venue", "symbol", "time")


# -- formats --------------------------------------------------------------------------------


def _zushen(frame: pl.DataFrame) -> pl.DataFrame:
    names = frame.select("venue_symbol", "canonical_symbol").unique()
    mapping = {row[0]: unified_symbol(row[1]) for row in names.iter_rows()}
    return _finish(frame.select(
        "venue",
        pl.col("venue_symbol").replace_strict({k: v[0] for k, v in mapping.items()})
        .alias("symbol"),
        pl.col("venue_symbol").replace_strict({k: v[1] for k, v in mapping.items()})
        .alias("base"),
        pl.col("settlement_ts").alias("time"), pl.col("rate_raw").alias("rate"),
        "interval_hours", pl.col("mark_price").cast(pl.Float64),
    ), "zushen")


def _knx(frame: pl.DataFrame, candles: pl.DataFrame | None) -> pl.DataFrame:
    history = _finish(frame.select(
        pl.col("venue"), (pl.col("coin") + "/USDT:USDT").alias("symbol"),
        pl.col("coin").alias("base"), pl.col("timestamp").alias("time"),
        pl.col("funding_rate").alias("rate"),
    ), "knx")
    if candles is not None:
        # Perp candles (1h): the open of the bar starting at a settlement is its price.
        prices = candles.select("venue", pl.col("coin").alias("base"),
                                pl.col("timestamp").alias("time"), pl.col("o").alias("price"))
        history = _attach_prices(history, prices, "mark_price")
    return history


def _binance_json(records: list[dict]) -> pl.DataFrame:
    rows = []
    for record in records:
        symbol, base = unified_symbol(record["symbol"])
        mark = float(record["markPrice"]) if record.get("markPrice") not in (None, "") else None
        rows.append(("binance", symbol, base, int(record["fundingTime"]),
                     float(record["fundingRate"]), mark or None))
    frame = pl.DataFrame(rows, orient="row", schema=["venue", "symbol", "base", "ms", "rate",
                                                     "mark_price"])
    frame = frame.with_columns(time=pl.from_epoch("ms", time_unit="ms").dt.replace_time_zone(
        "UTC")).drop("ms")
    return _finish(frame, "binance-fundingRate-json")


def _klines(path: Path) -> pl.DataFrame:
    frame = pl.read_csv(path)
    return frame.select(pl.col("open_time").str.to_datetime(time_zone="UTC").alias("time"),
                        pl.col("open").cast(pl.Float64).alias("price"))


def _binance_csv(frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    if "funding_date" in frame.columns:  # adee: date and time in two columns
        time = (pl.col("funding_date") + " " + pl.col("funding_time")).str.to_datetime(
            time_zone="UTC")
        frame = frame.select(pl.col("symbol"), time.alias("time"),
                             pl.col("fundingRate").alias("rate"),
                             pl.col("markPrice").alias("mark_price"))
    else:  # dorian
        frame = frame.select(pl.col("symbol"),
                             pl.col("funding_time").str.to_datetime(time_zone="UTC")
                             .alias("time"),
                             pl.col("funding_rate").alias("rate"), "mark_price")
    symbols = {s: unified_symbol(s) for s in frame["symbol"].unique()}
    history = _finish(frame.with_columns(
        # Binance reported markPrice 0.0 before it populated the field.
        pl.when(pl.col("mark_price").cast(pl.Float64) > 0).then(pl.col("mark_price")),
        venue=pl.lit("binance"),
        base=pl.col("symbol").replace_strict({k: v[1] for k, v in symbols.items()}),
        symbol=pl.col("symbol").replace_strict({k: v[0] for k, v in symbols.items()}),
    ), "binance-funding-csv")
    # dorian ships daily klines beside the funding file. A daily open is stale by up to 16h
    # at the 08:00 and 16:00 settlements, so it only fills marks Binance did not record; the
    # spot price is the mark scaled by that day's spot/perp ratio, so the basis is the real
    # daily basis instead of 16h of price drift between a fresh mark and a stale spot open.
    for raw, (_, base) in symbols.items():
        opens = {}
        for kind in ("perp", "spot"):
            kline = next(iter(sorted(path.parent.glob(f"{kind}_{raw}_1d_*.csv"))), None)
            if kline is not None:
                opens[kind] = _klines(kline).with_columns(venue=pl.lit("binance"),
                                                          base=pl.lit(base))
        if "perp" not in opens:
            continue
        history = _attach_prices(history, opens["perp"], "mark_price")
        if "spot" in opens:
            ratio = opens["spot"].join(opens["perp"], on=["venue", "base", "time"],
                                       suffix="_perp")
            ratio = ratio.select("venue", "base", "time",
                                 (pl.col("price") / pl.col("price_perp")).alias("price"))
            history = _attach_prices(history.with_columns(_ratio=pl.lit(None, pl.Float64)),
                                     ratio, "_ratio")
            history = history.with_columns(
                spot_price=pl.coalesce("spot_price", pl.col("mark_price") * pl.col("_ratio")),
            ).drop("_ratio")
    return history


def _supervik(frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    venue = next((v for v in ("binance", "bybit", "okx") if f"_{v}_" in path.name), None)
    if venue is None:
        raise DataFormatError(f"{path}: supervik CSV, but the venue is not in the file name")
    time = pl.col("Date").str.to_datetime(time_zone="UTC") \
        - pl.duration(hours=SUPERVIK_UTC_OFFSET_HOURS)
    symbols = {s: unified_symbol(s) for s in frame["Symbol"].unique()}
    return _finish(frame.select(
        pl.lit(venue).alias("venue"),
        pl.col("Symbol").replace_strict({k: v[0] for k, v in symbols.items()}).alias("symbol"),
        pl.col("Symbol").replace_strict({k: v[1] for k, v in symbols.items()}).alias("base"),
        time.alias("time"), pl.col("Funding Rate").alias("rate"),
    ), "supervik")


def _aha(frame: pl.DataFrame) -> pl.DataFrame:
    # ``time`` is UK local time, not UTC as SOURCES.md says: bars sit at 00/08/16 in winter
    # and at 01/09/17 in summer (BST). Read as Europe/London, every settlement lands on the
    # 00/08/16 UTC grid and all 1,642 Binance BTC rates equal dorian's (not only the 715
    # winter ones). At the autumn change 01:00 is ambiguous: it is the 00:00 UTC bar (BST).
    frame = frame.with_columns(
        pl.col("time").str.to_datetime().dt.replace_time_zone(
            "Europe/London", ambiguous="earliest").dt.convert_time_zone("UTC"),
        base=pl.col("pair").str.slice(0, 3))
    # USDCM rows are coin-margined (inverse) perps: a different trade, left out.
    perps = frame.filter((pl.col("contract") == "perpetual")
                         & pl.col("pair").str.ends_with("USDT"))
    spot = frame.filter(pl.col("contract") == "spot").select(
        pl.col("exchange").alias("venue"), "base", "time", pl.col("open").alias("spot_price"))
    # Bars start at ``time`` and funding settles at ``time``: the bar's open is the price.
    history = perps.select(
        pl.col("exchange").alias("venue"), (pl.col("base") + "/USDT:USDT").alias("symbol"),
        "base", "time", pl.col("funding rate").alias("rate"),
        pl.col("open").alias("mark_price"),
    ).join(spot, on=["venue", "base", "time"], how="left")
    return _finish(history, "aha")


def _ruleaker(path: Path) -> pl.DataFrame:
    """OKX current-period snapshots. Not settlements: each value is the live rate when the
    snapshot was taken, stored annualised with an 8h assumption; we undo that and keep 8h."""
    rows = []
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            if not member.isfile() or not member.name.endswith(".json"):
                continue
            snapshot = json.load(archive.extractfile(member))
            for base, pct in snapshot["venues"].get("okx", {}).items():
                rows.append((snapshot["captured_utc"].removesuffix(" UTC"), base,
                             float(pct) / RULEAKER_SCALE))
    if not rows:
        raise DataFormatError(f"{path}: no OKX snapshots in the archive")
    frame = pl.DataFrame(rows, orient="row", schema=["captured", "base", "rate"])
    return _finish(frame.select(
        pl.lit("okx").alias("venue"), (pl.col("base") + "/USDT:USDT").alias("symbol"), "base",
        pl.col("captured").str.to_datetime(time_zone="UTC").alias("time"), "rate",
        pl.lit(8.0).alias("interval_hours"),
    ), "ruleaker-okx-snapshot")


def _history_store(path: Path) -> pl.DataFrame:
    """The venue plugins' funding-history cache (``<cache_dir>/funding_history.sqlite``,
    see perpcarry.ccxt.history_store): table ``funding(venue, symbol, funding_time_ms, rate,
    mark_price)`` with decimal text. It records no interval: ``_finish`` infers each from
    the spacing of the symbol's settlements."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT venue, symbol, funding_time_ms, rate, mark_price FROM funding "
                          "ORDER BY venue, symbol, funding_time_ms").fetchall()
    finally:
        db.close()
    if not rows:
        raise DataFormatError(f"{path}: the funding-history cache holds no settlements")
    frame = pl.DataFrame(rows, orient="row", schema={
        "venue": pl.String, "symbol": pl.String, "ms": pl.Int64, "rate": pl.String,
        "mark_price": pl.String})
    names = {s: unified_symbol(s) for s in frame["symbol"].unique()}
    return _finish(frame.select(
        "venue",
        pl.col("symbol").replace_strict({k: v[0] for k, v in names.items()}),
        pl.col("symbol").replace_strict({k: v[1] for k, v in names.items()}).alias("base"),
        pl.from_epoch("ms", time_unit="ms").dt.replace_time_zone("UTC").alias("time"),
        pl.col("rate").cast(pl.Float64), pl.col("mark_price").cast(pl.Float64),
    ), "funding-history-cache")


# -- dispatch -------------------------------------------------------------------------------


def _load_file(path: Path, siblings: dict[str, Path]) -> pl.DataFrame | None:
    """One file as a history table; None for a price-only file another loader reads."""
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            columns = set(pl.read_parquet_schema(path))
            if set(HISTORY_SCHEMA) - {"source"} <= columns:
                return _finish(pl.read_parquet(path), "perpcarry")
            if {"settlement_ts", "rate_raw", "interval_hours", "venue_symbol"} <= columns:
                return _zushen(pl.read_parquet(path))
            if {"timestamp", "venue", "coin", "funding_rate"} <= columns:
                candles = siblings.get("candles.parquet")
                return _knx(pl.read_parquet(path),
                            pl.read_parquet(candles) if candles else None)
            if {"timestamp", "venue", "coin", "o"} <= columns:
                return None
        elif name.endswith(".json"):
            records = json.loads(path.read_text())
            if isinstance(records, list) and records and {"fundingTime", "fundingRate"} \
                    <= set(records[0]):
                return _binance_json(records)
        elif name.endswith(".csv"):
            header = path.open().readline().strip().split(",")
            frame = pl.read_csv(path, infer_schema_length=10000)
            if header[:2] == ["open_time", "open"]:
                return None
            if {"fundingRate", "funding_date"} <= set(header) \
                    or {"funding_rate", "funding_time"} <= set(header):
                return _binance_csv(frame, path)
            if header == ["Symbol", "Date", "Funding Rate"]:
                return _supervik(frame, path)
            if {"exchange", "pair", "contract", "funding rate"} <= set(header):
                return _aha(frame)
        elif name.endswith((".tar.gz", ".tgz")):
            return _ruleaker(path)
        elif name.endswith(STORE_SUFFIXES):
            return _history_store(path)
    except DataFormatError:
        raise
    except (OSError, ValueError, KeyError, pl.exceptions.PolarsError, tarfile.TarError,
            sqlite3.Error) as err:
        raise DataFormatError(f"{path}: could not read ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from err
    raise DataFormatError(f"{path}: unknown funding data format (known: {KNOWN_FORMATS})")


def load_path(path: Path) -> pl.DataFrame:
    """Load a file, or every recognised file under a folder, as one history table."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and p.name.lower().endswith((".parquet", ".json", ".csv", ".tar.gz",
                                                    *STORE_SUFFIXES)))
    else:
        files = [path]
    frames = []
    for file in files:
        siblings = {p.name: p for p in file.parent.iterdir()}
        try:
            frame = _load_file(file, siblings)
        except DataFormatError:
            if path.is_dir() and not file.name.lower().endswith((".parquet", ".csv")):
                continue  # folders hold unrelated JSON (exchange info) beside the data
            raise
        if frame is not None:
            frames.append(frame)
    if not frames:
        raise DataFormatError(f"{path}: no funding history found (known: {KNOWN_FORMATS})")
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
