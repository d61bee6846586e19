"""`training_metrics.csv`: one row per optimizer step, flushed as it is written so a crash keeps every step."""

from __future__ import annotations

import csv
from pathlib import Path

from dsrun.tools.metrics import COLUMNS, METRICS_CSV, format_row


class CsvWriter:
    def __init__(self, run_dir: Path):
        self.path = run_dir / METRICS_CSV
        # A new run in the same directory starts a new file: the CSV, summary and curves describe one run.
        self._file = open(self.path, "w", newline="")  # open for the whole run; close() closes it
        self._rows = csv.writer(self._file)
        self._rows.writerow(COLUMNS)
        self._file.flush()

    def log(self, stats) -> None:
        self._rows.writerow(format_row({name: getattr(stats, name, None) for name in COLUMNS}))
        self._file.flush()

    def close(self) -> None:
        self._file.close()
