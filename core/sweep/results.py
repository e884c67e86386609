"""Sweep results: the journal ``--resume`` reads, the ranking, parquet and CSV files.

Every finished run is appended to ``runs.jsonl`` in the output folder as soon as its batch
comes back, so an interrupted sweep keeps what it finished and ``--resume`` skips it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl

from perpcarry.domain.errors import UsageError
from perpcarry.sweep.grid import METRICS, Grid

JOURNAL = "runs.jsonl"
RESULT_FILES = ("results.parquet", "results.csv")


def check_out_dir(text: str) -> Path:
    """The output folder, checked before anything runs: UsageError if it cannot be one."""
    if not text.strip():
        raise UsageError("--out: empty path (give a folder)")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {text}: exists and is not a folder")
    parent = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not parent.is_dir():
        raise UsageError(f"--out {text}: {parent} is not a folder")
    return path


class Journal:
    """``runs.jsonl``: one JSON record per finished run, appended and flushed per batch."""

    def __init__(self, out_dir: Path, *, resume: bool) -> None:
        self.path = out_dir / JOURNAL
        self.previous: dict[str, dict] = {}
        if resume and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:   # the line being written when the run was killed
                    continue
                if isinstance(record, dict) and "key" in record:
                    self.previous[record["key"]] = record
        out_dir.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a" if resume else "w")

    def done(self) -> dict[str, dict]:
        """Records of runs that finished without error (a failed run is tried again)."""
        return {key: r for key, r in self.previous.items() if r["status"] == "ok"}

    def append(self, records: list[dict]) -> None:
        for record in records:
            self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _sort_key(record: dict, grid: Grid, prefix: str = "") -> tuple:
    value = record.get(prefix + grid.rank_by)
    missing = record.get(prefix + "status", "ok") != "ok" or value is None \
        or (isinstance(value, float) and math.isnan(value))
    met = grid.constraint is None or \
        grid.constraint.met(record.get(prefix + grid.constraint.metric))
    score = 0.0 if missing else (-value if grid.higher_is_better else value)
    return (missing, not met, score)


def ranked_rows(records: list[dict], grid: Grid, *, walk_forward: bool) -> list[dict]:
    """One row per combination, best first: rows meeting the constraint, then the others,
    then failed runs. With ``walk_forward`` a row holds the earlier part's figures as
    ``train_*`` (what it is ranked on) beside the held-out part's as ``test_*``."""
    if not walk_forward:
        rows = [dict(r) for r in records]
        rows.sort(key=lambda r: _sort_key(r, grid))
    else:
        parts: dict[str, dict[str, dict]] = {}
        for record in records:
            parts.setdefault(record["combination"], {})[record["part"]] = record
        rows = []
        for pair in parts.values():
            if set(pair) != {"train", "test"}:
                continue   # an interrupted sweep may have finished only one of the two
            row = {k: v for k, v in pair["train"].items() if k in grid.values}
            row["combination"] = pair["train"]["combination"]
            for part in ("train", "test"):
                for name in (*METRICS, "status", "error", "command", "span_start", "span_end"):
                    row[f"{part}_{name}"] = pair[part].get(name)
            rows.append(row)
        rows.sort(key=lambda r: _sort_key(r, grid, "train_"))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
        if grid.constraint is not None:
            prefix = "train_" if walk_forward else ""
            row["meets_constraint"] = grid.constraint.met(
                row.get(prefix + grid.constraint.metric))
    return rows


def write_results(records: list[dict], rows: list[dict], out_dir: Path) -> list[Path]:
    """Every run, in rank order, as parquet and CSV; returns the files written."""
    rank = {row["combination"]: row["rank"] for row in rows}
    table = pl.DataFrame([{"rank": rank.get(r["combination"]), **r} for r in records],
                         infer_schema_length=None)
    if table.height:
        table = table.sort("rank", "part", descending=[False, True], nulls_last=True)  # train, test
        table = table.with_columns(pl.col(c).cast(pl.String) for c, t in table.schema.items()
                                   if t == pl.Null)
    paths = [out_dir / name for name in RESULT_FILES]
    table.write_parquet(paths[0])
    table.write_csv(paths[1])
    return paths


def as_number(value: Any) -> float | None:
    """A metric as a float for tables and charts (None when missing)."""
    if value is None or isinstance(value, str):
        return None
    return float(value)
