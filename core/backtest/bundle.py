"""Rebuild the bundled funding history from the real datasets (see data/PROVENANCE.md).

    python -m perpcarry.backtest.bundle ../shared/data

Run by hand when the selection changes; the package only ever reads the result.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from perpcarry.backtest.history import BUNDLED_FILE, combine, load_path

# (dataset folder, file or sub-path, filter) in priority order: where two sources cover the
# same settlement the first wins (SOURCES.md found them equal wherever they overlap).
SELECTION = (
    ("dorian-binance", "dorian-binance", None),
    # aha's Binance BTC/ETH duplicates dorian's 2023-2024 settlements: only Bybit and OKX.
    ("aha-3exch", "aha-3exch/all_exchanges.csv", pl.col("venue") != "binance"),
    ("zushen-funding", "zushen-funding/venue=binance/data.parquet", None),
    ("zushen-funding", "zushen-funding/venue=bybit/data.parquet", None),
)


def build_bundle(shared_data: Path, out: Path) -> pl.DataFrame:
    frames = []
    for dataset, sub_path, keep in SELECTION:
        frame = load_path(shared_data / sub_path).with_columns(source=pl.lit(dataset))
        frames.append(frame.filter(keep) if keep is not None else frame)
    history = combine(frames)
    history.write_parquet(out, compression="zstd", compression_level=22, statistics=False)
    return history


if __name__ == "__main__":
    target = Path(__file__).parent / "data" / BUNDLED_FILE
    built = build_bundle(Path(sys.argv[1]), target)
    print(built.group_by("source", "venue").agg(
        pl.len().alias("rows"), pl.col("symbol").n_unique().alias("symbols"),
        pl.col("time").min().alias("first"), pl.col("time").max().alias("last"),
    ).sort("source", "venue"))
    print(f"{target}: {target.stat().st_size:,} bytes")
