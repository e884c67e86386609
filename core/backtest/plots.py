"""PNG charts of a backtest (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from perpcarry.money import yields

if TYPE_CHECKING:
    from perpcarry.backtest.run import BacktestRun

HEATMAP_MAX_ASSETS = 40
HEATMAP_CLIP_APR = 0.5


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _replace(path: Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` through a temporary file in its folder, then rename it into place: a
    failed write (a full disk) leaves the previous file or none, never half of one."""
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    try:
        return _replace(path, lambda partial: fig.savefig(partial, dpi=110))
    finally:
        plt.close(fig)


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
    top.axhline(sim.capital, color="grey", lw=0.8, ls=":")
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
    return _save(plt, fig, path)


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
    return _save(plt, fig, path)


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
    # Two short lines: on one, the title outgrew a figure sized for few months and was
    # clipped at both edges.
    axis.set_title(f"Funding APR by asset and month, % (all venues)\n"
                   f"colours clipped at ±{clip:g} %; blank: no data", fontsize=11)
    fig.colorbar(image, ax=axis, label="funding APR, %")
    return _save(plt, fig, path)


_HTML = r"""<!doctype html>
<html><head><meta charset="utf-8"><title>perpcarry backtest: equity</title>
<style>body{font:13px sans-serif;margin:16px}canvas{border:1px solid #ddd}
#tip{position:absolute;background:#fff;border:1px solid #999;padding:4px 6px;display:none;
pointer-events:none;white-space:pre}</style></head><body>
<h3>Equity (funding received, fees and spread paid, basis marked)</h3>
<p id="span"></p><canvas id="c" width="1000" height="560"></canvas><div id="tip"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
const d = JSON.parse(document.getElementById("data").textContent);
const c = document.getElementById("c"), g = c.getContext("2d");
const tip = document.getElementById("tip");
document.getElementById("span").textContent = d.span;
const L = 80, R = 980, panels = [[20, 300, ["equity"]], [330, 540, ["funding", "costs", "basis"]]];
const colors = {equity: "#1f77b4", funding: "#2ca02c", costs: "#d62728", basis: "#9467bd"};
const t0 = d.t[0], t1 = d.t[d.t.length - 1], x = t => L + (R - L) * (t - t0) / Math.max(t1 - t0, 1);
const fmt = v => v.toLocaleString(undefined, {maximumFractionDigits: 2});
function range(keys) {
  let lo = Infinity, hi = -Infinity;
  for (const k of keys) for (const v of d[k]) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (keys.length > 1) { lo = Math.min(lo, 0); hi = Math.max(hi, 0); }
  return hi > lo ? [lo, hi] : [lo - 1, hi + 1];
}
function draw(hover) {
  g.clearRect(0, 0, c.width, c.height);
  for (const [top, bottom, keys] of panels) {
    const [lo, hi] = range(keys), y = v => bottom - (bottom - top) * (v - lo) / (hi - lo);
    g.strokeStyle = "#ccc"; g.fillStyle = "#333";
    for (let i = 0; i <= 4; i++) {
      const v = lo + (hi - lo) * i / 4; g.beginPath(); g.moveTo(L, y(v)); g.lineTo(R, y(v));
      g.stroke(); g.fillText(fmt(v), 4, y(v) + 4);
    }
    keys.forEach((k, n) => {
      g.strokeStyle = colors[k]; g.beginPath();
      d[k].forEach((v, i) => i ? g.lineTo(x(d.t[i]), y(v)) : g.moveTo(x(d.t[i]), y(v)));
      g.stroke(); g.fillStyle = colors[k]; g.fillText(k, L + 8 + 70 * n, top + 12);
    });
  }
  for (let i = 0; i < d.t.length; i += Math.max(1, Math.floor(d.t.length / 8))) {
    g.fillStyle = "#333";
    g.fillText(new Date(d.t[i]).toISOString().slice(0, 10), x(d.t[i]) - 30, 556);
  }
  if (hover !== undefined) { g.strokeStyle = "#888"; g.beginPath(); g.moveTo(x(d.t[hover]), 20);
    g.lineTo(x(d.t[hover]), 540); g.stroke(); }
}
c.addEventListener("mousemove", e => {
  const px = e.offsetX, t = t0 + (px - L) / (R - L) * (t1 - t0);
  let i = 0, lo = 0, hi = d.t.length - 1;
  while (lo <= hi) { const m = (lo + hi) >> 1; if (d.t[m] < t) lo = m + 1; else hi = m - 1; }
  i = Math.min(Math.max(lo, 0), d.t.length - 1); draw(i);
  tip.style.display = "block";
  tip.style.left = (e.pageX + 12) + "px"; tip.style.top = (e.pageY + 12) + "px";
  tip.textContent = new Date(d.t[i]).toISOString().slice(0, 16).replace("T", " ") + " UTC\n" +
    ["equity", "funding", "costs", "basis"].map(k => k + ": " + fmt(d[k][i])).join("\n");
});
c.addEventListener("mouseleave", () => { tip.style.display = "none"; draw(); });
draw();
</script></body></html>
"""


def equity_html(run: BacktestRun, path: Path) -> Path:
    """The equity chart as one self-contained HTML file (inline data and script, no
    network): hover to read equity and the cumulative funding, costs and basis P&L."""
    import json

    sim = run.simulation
    # One point per UTC day (its last grid time) keeps the file small for long runs.
    day = np.floor(sim.panel.hours / yields.HOURS_PER_DAY)
    last = np.flatnonzero(np.append(day[1:] != day[:-1], True))
    flows = {"funding": sim.event_funding, "basis": sim.event_marking}
    cumulative = {k: np.cumsum(np.bincount(sim.panel.event_row, weights=v,
                                           minlength=sim.equity.size))[last]
                  for k, v in flows.items()}
    costs = -np.cumsum(np.bincount(sim.trade_row, weights=sim.trade_fee + sim.trade_spread,
                                   minlength=sim.equity.size))[last]
    data = {"t": (sim.panel.times[last].astype("datetime64[ms]").astype(np.int64)).tolist(),
            "equity": np.round(sim.equity[last], 2).tolist(),
            "funding": np.round(cumulative["funding"], 2).tolist(),
            "costs": np.round(costs, 2).tolist(),
            "basis": np.round(cumulative["basis"], 2).tolist(),
            "span": f"{run.summary['start']} → {run.summary['end']}"}
    page = _HTML.replace("__DATA__", json.dumps(data).replace("</", "<\\/"))
    return _replace(path, lambda partial: partial.write_text(page))


def write_charts(run: BacktestRun, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [equity_chart(run, out_dir / "equity.png"),
            equity_html(run, out_dir / "equity.html"),
            venue_chart(run, out_dir / "venue_yield.png"),
            heatmap_chart(run, out_dir / "funding_heatmap.png")]
