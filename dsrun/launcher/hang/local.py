"""--hang-timeout when every rank runs under this machine's supervisor: the progress watch it is given decides,
reports, and the supervisor then stops the job. (Over SSH and Slurm the launcher decides: backends/agents.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from dsrun.launcher.hang.detect import Hang, HangDetector
from dsrun.launcher.hang.report import report_hang
from dsrun.launcher.node.progress import Steps
from dsrun.launcher.node.stacks import RankStack


class LocalHangWatch:
    """--hang-timeout when every rank runs under one supervisor: it decides, reports, and the supervisor stops."""

    def __init__(self, timeout: float, log_dir: Path | None, notify: Callable[[str], None]):
        self.timeout = timeout
        self.log_dir = log_dir
        self.notify = notify
        self.detector = HangDetector(timeout)
        self.hang: Hang | None = None

    def tick(self, steps: Steps, now: float) -> bool:
        self.detector.observe(steps, now)
        self.hang = self.detector.check(now)
        return self.hang is not None

    def stacks(self, stacks: dict[int, RankStack]) -> None:
        if self.hang is not None:
            report_hang(self.hang, stacks, self.timeout, self.log_dir, self.notify)
