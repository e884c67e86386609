"""PNG heatmaps of the ranking metric over every two swept parameters."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from perpcarry.sweep.grid import Grid
from perpcarry.sweep.results import as_number

# Cells are annotated with their value while the grid is small enough to read them.
ANNOTATE_MAX_CELLS = 150


def write_heatmaps(rows: list[dict], grid: Grid, out_dir: Path, prefix: str = "") -> list[Path]:
    """One PNG per pair of swept parameters. Where other parameters vary too, a cell shows
    the best value over them (what choosing those two values allows at best)."""
    from perpcarry.backtest.plots import _pyplot, _save

    metric = prefix + grid.rank_by
    paths = []
    for x_name, y_name in itertools.combinations(grid.swept, 2):
        xs, ys = list(grid.values[x_name]), list(grid.values[y_name])
        cells = np.full((len(ys), len(xs)), np.nan)
        for row in rows:
            value = as_number(row.get(metric))
            if value is None or np.isnan(value):
                continue
            i, j = ys.index(row[y_name]), xs.index(row[x_name])
            old = cells[i, j]
            better = value > old if grid.higher_is_better else value < old
            if np.isnan(old) or better:
                cells[i, j] = value
        plt = _pyplot()
        fig, axis = plt.subplots(figsize=(max(5.0, 0.9 * len(xs) + 3), max(4.0, 0.5 * len(ys) + 2)))
        colours = "RdYlGn" if grid.higher_is_better else "RdYlGn_r"
        image = axis.imshow(np.ma.masked_invalid(cells), aspect="auto", cmap=colours,
                            origin="lower", interpolation="nearest")
        axis.set_xticks(range(len(xs)), [_label(v) for v in xs], rotation=45, fontsize=8)
        axis.set_yticks(range(len(ys)), [_label(v) for v in ys], fontsize=8)
        axis.set_xlabel(x_name)
        axis.set_ylabel(y_name)
        others = [n for n in grid.swept if n not in (x_name, y_name)]
        best = f", best over {', '.join(others)}" if others else ""
        part = {"train_": " (earlier part)", "test_": " (held-out part)"}.get(prefix, "")
        axis.set_title(f"{grid.rank_by}{part}{best}", fontsize=10)
        if cells.size <= ANNOTATE_MAX_CELLS:
            for i, j in zip(*np.nonzero(np.isfinite(cells)), strict=True):
                axis.text(j, i, f"{cells[i, j]:.3g}", ha="center", va="center", fontsize=7)
        fig.colorbar(image, ax=axis, label=metric)
        name = f"heatmap_{prefix}{grid.rank_by}__{x_name}__{y_name}.png"
        paths.append(_save(plt, fig, out_dir / name))
    return paths


def _label(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
