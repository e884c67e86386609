"""``perpcarry sweep``: run a grid of backtests on Dask, rank them, write tables and charts.

Registered in perpcarry.cli.app with ``app.command()(sweep)``. Dask, polars and matplotlib load
only when the command runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from perpcarry.cli.common import percent

DEFAULT_OUT = "sweep-out"
# Rows printed by default; every row is in the parquet and CSV files.
DEFAULT_TOP = 20
# Characters a table printed to a pipe or file may take (a terminal's own width applies).
WIDEST_PIPED_TABLE = 400


def sweep(
    grid_file: Annotated[Path, typer.Argument(
        metavar="GRID.toml", help="Grid file: parameter values and how to rank "
                                  "(see examples/sweep.toml).")],
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Local worker processes (default: [sweep] workers, else "
                                 "one per core).")] = None,
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", help="Address of an existing Dask scheduler, e.g. "
                            "tcp://10.0.0.5:8786 (default: [sweep] scheduler, else a "
                            "local cluster).")] = None,
    walk_forward: Annotated[bool, typer.Option(
        "--walk-forward", help="Rank on the earlier part of each span and report the "
                               "held-out last [sweep] test_share of it beside it.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Skip the runs the output folder's journal has finished.")] = False,
    out: Annotated[str, typer.Option(
        "--out", help="Folder for the results and heatmaps.")] = DEFAULT_OUT,
    top: Annotated[int, typer.Option("--top", min=1, help="Rows to print.")] = DEFAULT_TOP,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """Sweep backtest parameters on Dask (local workers, or a cluster): ranked table,
    parquet/CSV, heatmaps, and the backtest command reproducing each row."""
    from perpcarry.backtest.history import load_bundled, load_path
    from perpcarry.backtest.run import taker_fees
    from perpcarry.cli import common as cli
    from perpcarry.sweep.grid import load_grid, plan_jobs
    from perpcarry.sweep.results import check_out_dir
    from perpcarry.sweep.tasks import SweepData

    config = cli.load()
    grid = load_grid(grid_file)
    out_dir = check_out_dir(out)
    history_sources = [source for source, _ in config.registry.history_sources.values()]
    history = (load_path(grid.data, history_sources) if grid.data is not None
               else load_bundled())
    fees, sources = taker_fees(config, history["venue"].unique())
    jobs, notes = plan_jobs(grid, config, history, fees, walk_forward=walk_forward,
                            config_path=cli.state.config_path)
    data = SweepData(history, fees, sources)
    address = scheduler or grid.scheduler
    n_workers = workers or grid.workers or os.cpu_count() or 1
    summary = _execute(cli, grid, jobs, data, out_dir, address=address, workers=n_workers,
                       resume=resume, walk_forward=walk_forward, as_json=as_json)
    summary["notes"] = [*notes, *summary["notes"]]
    if as_json:
        cli.emit_json(summary)
        return
    _print(cli.console, summary, grid, walk_forward=walk_forward, top=top)


def _execute(cli, grid, jobs, data, out_dir: Path, *, address, workers, resume, walk_forward,
             as_json) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from perpcarry.sweep.cluster import dask_client, run_on_cluster
    from perpcarry.sweep.results import Journal

    with dask_client(address, workers, grid.connect_timeout) as client:
        journal = Journal(out_dir, resume=resume)
        done = journal.done()
        todo = [job for job in jobs if job.key not in done]
        finished = {job.key: done[job.key] for job in jobs if job.key in done}
        resumed = len(finished)
        progress = Progress("{task.description}", BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=cli.err_console, transient=True,
                            disable=as_json or not cli.err_console.is_terminal)

        def on_batch(records: list[dict]) -> None:
            journal.append(records)
            finished.update((r["key"], r) for r in records)
            progress.update(task, advance=len(records))

        try:
            with progress:
                task = progress.add_task("sweep", total=len(jobs), completed=len(finished))
                run_on_cluster(client, data, todo, grid.batch_size, on_batch)
        except KeyboardInterrupt:
            journal.close()
            records = [finished[j.key] for j in jobs if j.key in finished]
            _save(records, grid, out_dir, walk_forward=walk_forward, charts=False)
            sys.stderr.write(f"interrupted: {len(records)} of {len(jobs)} runs finished, "
                             f"saved in {out_dir}; run again with --resume to go on\n")
            raise
        journal.close()
    records = [finished[j.key] for j in jobs]
    rows, files = _save(records, grid, out_dir, walk_forward=walk_forward, charts=True)
    failed = [r for r in records if r["status"] != "ok"]
    return {"grid": str(grid.path), "rank_by": grid.rank_by,
            "constraint": None if grid.constraint is None else str(grid.constraint),
            "walk_forward": walk_forward, "runs": len(records), "resumed": resumed,
            "failed": len(failed), "scheduler": address or f"local ({workers} workers)",
            "files": [str(p) for p in files], "rows": rows,
            "notes": [f"{resumed} runs already done in {out_dir / journal.path.name}"]
            if resume else []}


def _save(records, grid, out_dir: Path, *, walk_forward: bool, charts: bool):
    from perpcarry.sweep.results import ranked_rows, write_results

    rows = ranked_rows(records, grid, walk_forward=walk_forward)
    files = write_results(records, rows, out_dir)
    if charts:
        from perpcarry.sweep.heatmaps import write_heatmaps

        for stale in out_dir.glob("heatmap_*.png"):   # an earlier grid's, here by its name
            stale.unlink()
        for prefix in (("train_", "test_") if walk_forward else ("",)):
            files += write_heatmaps(rows, grid, out_dir, prefix)
    return rows, files


def _print(console, summary: dict, grid, *, walk_forward: bool, top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    if not console.is_terminal:   # a pipe or file has no width: tables whole, not cut at 80
        console = Console(file=console.file, width=WIDEST_PIPED_TABLE)
    rows = summary["rows"]
    shown = rows[:top]
    title = f"{summary['runs']} runs on {summary['scheduler']}, ranked by {grid.rank_by}"
    if grid.constraint is not None:
        title += f" (first: {grid.constraint})"
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    for name in grid.swept:
        table.add_column(name, no_wrap=True)
    prefixes = ("train_", "test_") if walk_forward else ("",)
    metrics = dict.fromkeys((grid.rank_by, "apr", "sharpe", "max_drawdown"))
    for prefix in prefixes:
        for metric in metrics:
            label = {"train_": "train ", "test_": "test "}.get(prefix, "") + metric
            table.add_column(label, justify="right", no_wrap=True)
    for row in shown:
        cells = [str(row["rank"]), *(_cell(row[name]) for name in grid.swept)]
        for prefix in prefixes:
            failed = row.get(prefix + "status") != "ok"
            cells += ["error" if failed else _metric(metric, row.get(prefix + metric))
                      for metric in metrics]
        table.add_row(*cells)
    console.print(table)
    for row in shown:
        for prefix in prefixes:
            label = {"train_": " train", "test_": " test"}.get(prefix, "")
            console.print(f"#{row['rank']}{label}: {row[prefix + 'command']}", highlight=False,
                          soft_wrap=True)
    if walk_forward and rows:
        best = rows[0]
        console.print(f"chosen on the earlier part: #{best['rank']}, {grid.rank_by} "
                      f"{_metric(grid.rank_by, best['train_' + grid.rank_by])} there, "
                      f"{_metric(grid.rank_by, best['test_' + grid.rank_by])} on the held-out "
                      "part", highlight=False)
    errors = [r for r in rows if any(r.get(p + "status") != "ok" for p in prefixes)]
    if errors:
        console.print(f"[yellow]{summary['failed']} runs failed[/yellow] (parameters and "
                      "error in the results files), e.g.:")
        for row in errors[:3]:
            for prefix in prefixes:
                if row.get(prefix + "status") != "ok":
                    console.print(f"  {row[prefix + 'command']}: {row[prefix + 'error']}",
                                  highlight=False, soft_wrap=True)
    for note in summary["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    for path in summary["files"]:
        console.print(f"wrote {path}", highlight=False)


def _cell(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _metric(name: str, value) -> str:
    if value is None:
        return "-"
    if name in ("apr", "total_return", "cagr", "max_drawdown", "annual_volatility",
                "time_in_market"):
        return percent(value)
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)
