"""The live view (--live): one table, a row per rank, redrawn in place about once a second by the supervisor's
loop, with the workers' output scrolling above it.

rich's Live keeps its region at the bottom of the terminal and prints whatever goes through its Console above it,
so every worker line is printed through that Console (OutputRouter, or over SSH and Slurm the relay, hands them
over: see `line`) and dsrun's own messages reach it through the redirected sys.stderr. A local run's supervisor
calls `show` with what it sees and psutil is read here; over SSH and Slurm each node agent reads its own ranks and
the launcher calls `update` with what the agents relay (relayed.py). Each print also redraws the table; lines are
therefore gathered and printed together every OUTPUT_SECONDS, so a chatty worker costs one redraw per batch, not
per line.
"""

from __future__ import annotations

import os
import threading
import time
from typing import IO

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dsrun.launcher.live.rows import RankRow, RankSeen, RowBuilder, Usage
from dsrun.launcher.live.usage import NO_USAGE, UsageProbe

OUTPUT_SECONDS = 0.1
HOST_WIDTH = 9  # "localhost"
_LABEL_STYLES = ("cyan", "yellow", "magenta", "green", "blue", "red")  # the plain console's colours, in order


def live_wanted(requested: bool, stdout: IO) -> bool:
    """--live draws only on a terminal; with stdout going to a file or a pipe, the output stays as it always is."""
    return requested and stdout.isatty() and os.environ.get("TERM") != "dumb"


def _seconds(value: float) -> str:
    whole = int(value)
    return f"{whole} s" if whole < 60 else f"{whole // 60}m{whole % 60:02d}s"


def _bytes(value: int) -> str:
    mib = value / 2**20
    return f"{mib:.0f} MiB" if mib < 1024 else f"{mib / 1024:.1f} GiB"


def _loss(row: RankRow) -> str:
    if row.loss is None:
        return "-"
    text = f"{row.loss:.4g}"
    return text if row.loss_step == row.step else f"{text} @{row.loss_step}"  # the step it belongs to


def _cell(value: float | int | None, shown) -> str:
    return "-" if value is None else shown(value)


def render_table(rows: list[RankRow], elapsed: float) -> Table:
    """Fits 80 columns: hosts show their short name (up to the first dot), cut to HOST_WIDTH."""
    table = Table(title=f"dsrun · {len(rows)} rank(s) · {_seconds(elapsed)}", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0), expand=False)
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("host", no_wrap=True, overflow="ellipsis", max_width=HOST_WIDTH)
    for header in ("pid", "state", "CPU%", "RSS", "step", "loss", "samples/s", "idle"):
        table.add_column(header, justify="left" if header == "state" else "right", no_wrap=True)
    for row in rows:
        table.add_row(
            str(row.rank), row.host.split(".", 1)[0], str(row.pid), row.state,
            _cell(row.cpu_percent, lambda v: f"{v:.0f}"),
            _cell(row.rss, _bytes),
            _cell(row.step, str),
            _loss(row),
            _cell(row.samples_per_s, lambda v: f"{v:.1f}"),
            _cell(row.since_progress, _seconds),
        )
    return table


class LiveView:
    """Used as a context manager around the supervisor's run; `show` and `line` are what the supervisor calls."""

    def __init__(self, hosts: dict[int, str], console: Console | None = None):
        self.console = console or Console()
        self._started = time.monotonic()
        self._rows = RowBuilder(hosts, self._started)
        self._latest: dict[int, RankRow] = {}
        self._rows_lock = threading.Lock()  # the relay threads of several hosts may update at once
        self._usage = UsageProbe()
        self._live = Live(render_table([], 0.0), console=self.console, auto_refresh=False, transient=False,
                          redirect_stdout=True, redirect_stderr=True)
        self._pending: list[Text] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._printer = threading.Thread(target=self._print_pending_lines, daemon=True, name="live-output")

    def __enter__(self) -> LiveView:
        self._live.start(refresh=True)
        self._printer.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stopping.set()
        self._printer.join()
        self._flush()
        self._live.stop()

    def show(self, seen: dict[int, RankSeen], now: float) -> None:
        """This machine's ranks, from its supervisor; CPU and memory are read here."""
        ranks = {}
        for rank, one in seen.items():
            ranks[rank] = (one, self._usage.read(one.pid) if one.returncode is None else NO_USAGE)
            if one.returncode is not None:
                self._usage.forget(one.pid)
        self.update(ranks, now)

    def update(self, ranks: dict[int, tuple[RankSeen, Usage]], now: float) -> None:
        """Some ranks as seen at `now` (time.monotonic); the others keep their last row."""
        with self._rows_lock:
            for rank, (one, usage) in ranks.items():
                self._latest[rank] = self._rows.row(rank, one, usage, now)
            table = render_table([self._latest[rank] for rank in sorted(self._latest)], now - self._started)
            # Under the lock: over SSH each host's relay thread updates, and an older table must not land last.
            self._live.update(table, refresh=True)

    def line(self, rank: int, label: str, text: bytes) -> None:
        """A worker's output line (stdout or stderr alike: both would otherwise scramble the table)."""
        shown = Text(f"[{label}] ", style=_LABEL_STYLES[rank % len(_LABEL_STYLES)])
        shown.append_text(Text.from_ansi(text.decode("utf-8", "replace").rstrip("\n")))
        with self._lock:
            self._pending.append(shown)

    def text(self, text: bytes) -> None:
        """A line that is no rank's (a node agent's own message), shown as it is."""
        with self._lock:
            self._pending.append(Text.from_ansi(text.decode("utf-8", "replace").rstrip("\n")))

    def _flush(self) -> None:
        with self._lock:
            lines, self._pending = self._pending, []
        if lines:
            self.console.print(*lines, sep="\n", soft_wrap=True, highlight=False, markup=False)

    def _print_pending_lines(self) -> None:
        while not self._stopping.wait(OUTPUT_SECONDS):
            self._flush()
