"""OKX funding files for ``perpcarry backtest --data``.

ruleaker's perp-funding-screener archive (``data_history.tar.gz``, see
``../shared/data/SOURCES.md``): JSON snapshots ``{"captured_utc": ..., "venues": {<venue>:
{BASE: annualised %}}}`` of which only OKX's entries hold data. They are OKX
``/public/funding-rate`` current-period rates, so this plugin reads them.

polars is imported when a file is read, not with the module (the registry is built on every
command).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from perpcarry.backtest.sources import has_suffix

if TYPE_CHECKING:
    import polars as pl

VENUE_ID = "okx"
# The screener stores rate x 3 x 365 x 100 (its 8h assumption), see SOURCES.md.
SCREENER_SCALE = 3 * 365 * 100


def _snapshots(path: Path):
    """Each JSON snapshot in the archive, in archive order."""
    with tarfile.open(path) as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".json"):
                yield json.load(archive.extractfile(member))


class ScreenerArchive:
    """OKX current-period snapshots. Not settlements: each value is the live rate when the
    snapshot was taken, stored annualised with an 8h assumption; that is undone and 8h kept."""

    name = "ruleaker screener tar.gz (OKX rates)"

    def recognises(self, path: Path) -> bool:
        if not has_suffix(path, ".tar.gz", ".tgz"):
            return False
        first = next(_snapshots(path), None)
        return isinstance(first, dict) and "captured_utc" in first \
            and VENUE_ID in (first.get("venues") or {})

    def load(self, path: Path) -> pl.DataFrame:
        import polars as pl

        from perpcarry.backtest.history import DataFormatError, normalise

        rows = [(snapshot["captured_utc"].removesuffix(" UTC"), base, float(pct) / SCREENER_SCALE)
                for snapshot in _snapshots(path)
                for base, pct in snapshot["venues"].get(VENUE_ID, {}).items()]
        if not rows:
            raise DataFormatError(f"{path}: no OKX snapshots in the archive")
        frame = pl.DataFrame(rows, orient="row", schema=["captured", "base", "rate"])
        return normalise(frame.select(
            pl.lit(VENUE_ID).alias("venue"), (pl.col("base") + "/USDT:USDT").alias("symbol"),
            "base", pl.col("captured").str.to_datetime(time_zone="UTC").alias("time"), "rate",
            pl.lit(8.0).alias("interval_hours"),
        ), "ruleaker-okx-snapshot")
