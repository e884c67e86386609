"""PNG charts of a backtest (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from perpcarry import yields

if TYPE_CHECKING:
    from perpcarry.backtest.run import BacktestRun

HEATMAP_MAX_ASSETS = 40
HEATMAP_CLIP_APR = 0.5


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def monthly_funding_apr(history: pl.DataFrame, by: str) -> pl.DataFrame:
    """Mean funding APR of the settlements in each calendar month, per ``by`` value."""
    return history.with_columns(
        apr=yields.funding_apr(pl.col("rate"), pl.col("interval_hours")),
        month=pl.col("time").dt.truncate("1mo"),
    ).group_by(by, "month").agg(pl.col("apr").mean(), pl.len().alias("settlements")) \
        .sort(by, "month")


def equity_chart(run: BacktestRun, path: Path) -> Path:
    plt = _pyplot()
    sim = run.simulation
    times = sim.panel.times.astype("datetime64[ms]").astype(object)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    top.plot(times, sim.equity, color="tab:blue", lw=1.2)
    top.axhline(sim.strategy.capital, color="grey", lw=0.8, ls=":")
    top.set_ylabel("equity")
    top.set_title("Equity (funding received, fees and spread paid, basis marked)")
    for values, label, color in (
        (sim.funding.sum(axis=1), "funding income", "tab:green"),
        (-(sim.fees.sum(axis=1) + sim.spread.sum(axis=1)), "fees + spread", "tab:red"),
        (sim.marking.sum(axis=1), "basis P&L", "tab:purple"),
    ):
        bottom.plot(times, np.cumsum(values), label=label, color=color, lw=1.2)
    bottom.axhline(0, color="grey", lw=0.8)
    bottom.set_ylabel("cumulative")
    bottom.legend(loc="upper left")
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def venue_chart(run: BacktestRun, path: Path) -> Path:
    plt = _pyplot()
    monthly = monthly_funding_apr(run.history, "venue")
    fig, axis = plt.subplots(figsize=(11, 5))
    months = pl.datetime_range(monthly["month"].min(), monthly["month"].max(), "1mo",
                               eager=True, time_zone="UTC").dt.cast_time_unit("us")
    for venue in monthly["venue"].unique().sort():
        # Months without data stay blank instead of a line drawn across the gap.
        rows = pl.DataFrame({"month": months}).join(
            monthly.filter(pl.col("venue") == venue), on="month", how="left")
        axis.plot(rows["month"].to_list(), (rows["apr"] * 100).fill_null(np.nan).to_numpy(),
                  marker="o", ms=3, lw=1.2, label=venue)
    axis.axhline(0, color="grey", lw=0.8)
    axis.set_ylabel("mean funding APR, %")
    axis.set_title("Funding APR by venue, monthly mean over its settlements")
    axis.grid(alpha=0.3)
    axis.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def heatmap_chart(run: BacktestRun, path: Path) -> Path:
    plt = _pyplot()
    monthly = monthly_funding_apr(run.history, "base")
    top = (run.history.group_by("base").len().sort(["len", "base"], descending=[True, False])
           ["base"].head(HEATMAP_MAX_ASSETS).sort().to_list())
    months = monthly["month"].unique().sort().to_list()
    grid = np.full((len(top), len(months)), np.nan)
    index = {m: j for j, m in enumerate(months)}
    row = {b: i for i, b in enumerate(top)}
    for base, month, apr, _ in monthly.filter(pl.col("base").is_in(top)).iter_rows():
        grid[row[base], index[month]] = apr * 100
    clip = HEATMAP_CLIP_APR * 100
    fig, axis = plt.subplots(figsize=(max(8, 0.28 * len(months) + 3),
                                      max(4, 0.26 * len(top) + 2)))
    image = axis.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="RdYlGn",
                        vmin=-clip, vmax=clip, interpolation="nearest")
    axis.set_yticks(range(len(top)), top, fontsize=8)
    step = max(1, len(months) // 24)
    axis.set_xticks(range(0, len(months), step),
                    [m.strftime("%Y-%m") for m in months[::step]], rotation=60, fontsize=8)
    axis.set_title(f"Funding APR by asset and month, % (all venues; colours clipped at "
                   f"±{clip:g} %; blank: no data)")
    fig.colorbar(image, ax=axis, label="funding APR, %")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_charts(run: BacktestRun, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [equity_chart(run, out_dir / "equity.png"),
            venue_chart(run, out_dir / "venue_yield.png"),
            heatmap_chart(run, out_dir / "funding_heatmap.png")]
