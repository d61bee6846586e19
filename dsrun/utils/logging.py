"""`logger` and `log_dist`, as `deepspeed.utils` has them: scripts log through them and expect rank-filtered lines.

The logger writes to stdout at INFO (the launcher prefixes each line with its rank); it is named "dsrun" and does not
propagate, so a script's own root-logger setup neither doubles nor swallows its lines.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is when a line is logged (a script or test may replace it after import)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def _make_logger() -> logging.Logger:
    made = logging.getLogger("dsrun")
    if not made.handlers:
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] [%(filename)s:%(lineno)d] %(message)s"))
        made.addHandler(handler)
    made.setLevel(logging.INFO)
    made.propagate = False
    return made


logger = _make_logger()


def _rank() -> int | None:
    """This process's rank once distributed training has started, else None (everyone logs then)."""
    torch_dist = sys.modules.get("torch.distributed")  # only when torch is loaded: importing it costs seconds
    if torch_dist is not None and torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_rank()
    return None


def log_dist(message: str, ranks: Iterable[int] | None = None, level: int = logging.INFO) -> None:
    """Log `message` on the listed ranks (DeepSpeed's rule: `ranks=[-1]` means every rank, `None` none of them once
    distributed training has started; before that, every process logs)."""
    rank = _rank()
    wanted = list(ranks) if ranks is not None else []
    if rank is None or (wanted and wanted[0] == -1) or rank in wanted:
        shown = rank if rank is not None else int(os.environ.get("RANK", "0"))
        logger.log(level, f"[Rank {shown}] {message}", stacklevel=2)  # the caller's file and line
