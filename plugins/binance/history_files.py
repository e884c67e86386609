"""Binance's own funding-history files, for ``perpcarry backtest --data``.

Two shapes of what ``GET /fapi/v1/fundingRate`` returns, saved by public datasets (see
``../shared/data/SOURCES.md``): the JSON list itself, and CSV exports of it (dorian, adee),
with dorian's daily klines beside them. Recognised by their columns; the rows carry no venue,
which is why these formats belong to this plugin.

polars is imported when a file is read, not with the module (the registry is built on every
command).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from perpcarry.backtest.sources import csv_header, has_suffix

if TYPE_CHECKING:
    import polars as pl

VENUE_ID = "binance"


class FundingRateJson:
    """A saved ``/fapi/v1/fundingRate`` response: ``[{symbol, fundingTime, fundingRate,
    markPrice}, ...]``."""

    name = "Binance fundingRate JSON"

    def recognises(self, path: Path) -> bool:
        if not has_suffix(path, ".json"):
            return False
        records = json.loads(path.read_text())
        return isinstance(records, list) and bool(records) and isinstance(records[0], dict) \
            and {"fundingTime", "fundingRate", "symbol"} <= set(records[0])

    def load(self, path: Path) -> pl.DataFrame:
        import polars as pl

        from perpcarry.backtest.history import normalise, unified_symbol

        rows = []
        for record in json.loads(path.read_text()):
            symbol, base = unified_symbol(record["symbol"])
            mark = record.get("markPrice")
            mark = float(mark) if mark not in (None, "") else None
            rows.append((VENUE_ID, symbol, base, int(record["fundingTime"]),
                         float(record["fundingRate"]), mark or None))
        frame = pl.DataFrame(rows, orient="row", schema=["venue", "symbol", "base", "ms",
                                                         "rate", "mark_price"])
        frame = frame.with_columns(time=pl.from_epoch("ms", time_unit="ms")
                                   .dt.replace_time_zone("UTC")).drop("ms")
        return normalise(frame, "binance-fundingRate-json")


class FundingCsv:
    """CSV exports of the funding history: adee (``funding_date``, ``funding_time``,
    ``fundingRate``, ``markPrice``) and dorian (``funding_time``, ``funding_rate``,
    ``mark_price``, with ``perp_``/``spot_<SYMBOL>_1d_*.csv`` daily klines beside it)."""

    name = "Binance funding CSV"

    def recognises(self, path: Path) -> bool:
        if not has_suffix(path, ".csv"):
            return False
        header = set(csv_header(path))
        return {"symbol", "fundingRate", "funding_date"} <= header \
            or {"symbol", "funding_rate", "funding_time"} <= header

    def load(self, path: Path) -> pl.DataFrame:
        import polars as pl

        from perpcarry.backtest.history import attach_prices, normalise, unified_symbol

        frame = pl.read_csv(path, infer_schema_length=10000)
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
        history = normalise(frame.with_columns(
            # Binance reported markPrice 0.0 before it populated the field.
            pl.when(pl.col("mark_price").cast(pl.Float64) > 0).then(pl.col("mark_price")),
            venue=pl.lit(VENUE_ID),
            base=pl.col("symbol").replace_strict({k: v[1] for k, v in symbols.items()}),
            symbol=pl.col("symbol").replace_strict({k: v[0] for k, v in symbols.items()}),
        ), "binance-funding-csv")
        # dorian ships daily klines beside the funding file. A daily open is stale by up to
        # 16h at the 08:00 and 16:00 settlements, so it only fills marks Binance did not
        # record; the spot price is the mark scaled by that day's spot/perp ratio, so the
        # basis is the real daily basis instead of 16h of price drift between a fresh mark
        # and a stale spot open.
        for raw, (_, base) in symbols.items():
            opens = {}
            for kind in ("perp", "spot"):
                kline = next(iter(sorted(path.parent.glob(f"{kind}_{raw}_1d_*.csv"))), None)
                if kline is not None:
                    opens[kind] = _kline_opens(kline).with_columns(venue=pl.lit(VENUE_ID),
                                                                   base=pl.lit(base))
            if "perp" not in opens:
                continue
            history = attach_prices(history, opens["perp"], "mark_price")
            if "spot" in opens:
                ratio = opens["spot"].join(opens["perp"], on=["venue", "base", "time"],
                                           suffix="_perp")
                ratio = ratio.select("venue", "base", "time",
                                     (pl.col("price") / pl.col("price_perp")).alias("price"))
                history = attach_prices(history.with_columns(_ratio=pl.lit(None, pl.Float64)),
                                        ratio, "_ratio")
                history = history.with_columns(
                    spot_price=pl.coalesce("spot_price", pl.col("mark_price") * pl.col("_ratio")),
                ).drop("_ratio")
        return history


class DailyKlinesCsv:
    """dorian's daily klines (``open_time, open, ...``): prices only, read by
    :class:`FundingCsv` beside its funding file."""

    name = "Binance daily klines CSV (prices beside a funding CSV)"

    def recognises(self, path: Path) -> bool:
        return has_suffix(path, ".csv") and csv_header(path)[:2] == ["open_time", "open"]

    def load(self, path: Path) -> None:
        return None


def _kline_opens(path: Path) -> pl.DataFrame:
    import polars as pl

    frame = pl.read_csv(path)
    return frame.select(pl.col("open_time").str.to_datetime(time_zone="UTC").alias("time"),
                        pl.col("open").cast(pl.Float64).alias("price"))
