"""Rebuild the bundled funding history from the real datasets (see data/PROVENANCE.md).

    python -m perpcarry.backtest.bundle ../shared/data

Run by hand when the selection changes; the package only ever reads the result.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from perpcarry.backtest.history import BUNDLED_FILE, combine, load_path

# (dataset folder, file or sub-path, only venues no earlier dataset covers) in priority
# order: where two sources cover the same settlement the first wins (SOURCES.md found them
# equal wherever they overlap). aha's rows of the venue dorian covers duplicate dorian's
# 2023-2024 settlements, so aha contributes only its other venues.
SELECTION = (
    ("dorian-binance", "dorian-binance", False),
    ("aha-3exch", "aha-3exch/all_exchanges.csv", True),
    ("zushen-funding", "zushen-funding", False),
)


def build_bundle(shared_data: Path, out: Path) -> pl.DataFrame:
    """Load the selected datasets (through the installed plugins' history sources), combine
    them and write the bundle to ``out``."""
    frames: list[pl.DataFrame] = []
    for dataset, sub_path, only_new_venues in SELECTION:
        frame = load_path(shared_data / sub_path).with_columns(source=pl.lit(dataset))
        if only_new_venues:
            covered = {venue for earlier in frames for venue in earlier["venue"].unique()}
            frame = frame.filter(~pl.col("venue").is_in(sorted(covered)))
        frames.append(frame)
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
