"""The format of `training_metrics.csv`, the per-step record a monitored run leaves in its run directory.

The runtime writes it and `dsrun plot` reads it, so the column list lives here, in a module without torch.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from dsrun.errors import UsageError

METRICS_CSV = "training_metrics.csv"

# One row per optimizer step; a StepStats field of the same name fills each column. Columns a run does not have
# (loss_scale without fp16, the *_ms timings without wall_clock_breakdown) are left empty, so the header is the
# same for every run and a reader needs no schema detection.
COLUMNS = (
    "step", "samples", "loss", "lr", "grad_norm", "loss_scale", "applied", "skipped_steps",
    "step_time_s", "samples_per_sec", "forward_ms", "backward_ms", "optimizer_ms",
)
_INTEGER = {"step", "samples", "skipped_steps"}


def format_row(values: dict) -> list[str]:
    """Text for each column: repr() keeps floats exact; None becomes an empty cell; booleans become 1/0."""
    cells = []
    for name in COLUMNS:
        value = values.get(name)
        if value is None:
            cells.append("")
        elif isinstance(value, bool):
            cells.append("1" if value else "0")
        elif isinstance(value, float):
            cells.append(repr(value))
        else:
            cells.append(str(value))
    return cells


def read_metrics(path: Path) -> dict[str, list[float]]:
    """The CSV's columns as lists (empty cells as NaN). A row cut short by a crash mid-write is dropped."""
    columns: dict[str, list[float]] = {name: [] for name in COLUMNS}
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return columns
        if tuple(header) != COLUMNS:
            raise UsageError(f"{path} is not a dsrun training_metrics.csv (its header is {','.join(header)})")
        for row in reader:
            if len(row) != len(COLUMNS):
                continue
            try:
                parsed = [_parse(name, cell) for name, cell in zip(COLUMNS, row, strict=True)]
            except ValueError:
                continue
            for name, value in zip(COLUMNS, parsed, strict=True):
                columns[name].append(value)
    return columns


def _parse(name: str, cell: str) -> float:
    if cell == "":
        return math.nan
    return int(cell) if name in _INTEGER else float(cell)
