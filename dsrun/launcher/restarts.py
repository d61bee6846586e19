"""`--max_restarts N`: when a rank fails, the whole world has been torn down; start it again, at most N times.

Each start is the same plan with `DSRUN_RESTART_COUNT` (0 for the first) in every worker's environment, after a
back-off that doubles from `--restart-backoff` seconds (capped at a minute), so a failure that needs a moment to
clear (a host rebooting, a port still held) is not hammered. The engine resumes from the newest checkpoint when the
config's `checkpoint.auto_resume` asks for it; without that a restart starts training from the beginning.

Not restarted: a mistake (exit code 2: the same command fails the same way), a stop someone asked for (a signal to
dsrun), and a preemption (exit code 75: the checkpoint is saved and the scheduler decides when to go on).
"""

from __future__ import annotations

import dataclasses
import signal
import time
from typing import Callable

from dsrun.console import say
from dsrun.exit_codes import PREEMPTED, USAGE_ERROR
from dsrun.launcher.plan.world import WorldPlan

RESTART_COUNT = "DSRUN_RESTART_COUNT"
MAX_BACKOFF = 60.0
_ASKED_TO_STOP = {128 + int(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}


def restartable(code: int) -> bool:
    return code not in (0, USAGE_ERROR, PREEMPTED) and code not in _ASKED_TO_STOP


def with_restart_count(plan: WorldPlan, count: int) -> WorldPlan:
    ranks = [dataclasses.replace(rank, env={**rank.env, RESTART_COUNT: str(count)}) for rank in plan.ranks]
    return dataclasses.replace(plan, ranks=ranks)


def backoff_delay(first: float, restart: int) -> float:
    """Seconds before restart number `restart` (1, 2, ...)."""
    return min(first * 2 ** (restart - 1), MAX_BACKOFF)


def run_with_restarts(plan: WorldPlan, run: Callable[[WorldPlan], int], max_restarts: int, backoff: float,
                      notify: Callable[[str], None] = say, sleep: Callable[[float], None] = time.sleep) -> int:
    restart = 0
    while True:
        code = run(with_restart_count(plan, restart))
        if not restartable(code) or restart >= max_restarts:
            if restart and code != 0 and restartable(code):
                notify(f"giving up after {restart} restart(s) (--max_restarts {max_restarts})")
            return code
        restart += 1
        delay = backoff_delay(backoff, restart)
        notify(f"the job failed (exit code {code}); restart {restart} of {max_restarts} in {delay:g} s")
        sleep(delay)
