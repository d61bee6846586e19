"""Run a WorldPlan whose ranks all live on this machine, and report how it ended."""

from __future__ import annotations

import contextlib
from pathlib import Path

from dsrun.console import say
from dsrun.errors import UsageError
from dsrun.launcher.backends.failure_groups import FirstFailure, failure_report
from dsrun.launcher.hang.local import LocalHangWatch
from dsrun.launcher.node.supervisor import Outcome, Supervisor
from dsrun.launcher.plan.world import WorldPlan


def prepare_log_dir(log_dir: Path) -> Path:
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--log-dir {log_dir}: cannot create it ({err.strerror or err})") from None
    return log_dir


def _report(outcome: Outcome, supervisor: Supervisor) -> None:
    failure = outcome.failure
    if failure is None:
        return
    command = next(r.command for r in supervisor.ranks if r.rank == failure.rank)
    tails = {rank: list(tail) for rank, tail in supervisor.output.tails.items()}
    first = FirstFailure(failure.rank, failure.host, failure.returncode, command)
    say(failure_report(first, supervisor.codes, tails))


def run_local(plan: WorldPlan, *, log_dir: Path | None, quiet: bool, shutdown_timeout: float,
              hang_timeout: float | None = None, live: bool = False) -> int:
    """`live`: draw the live view (the caller has checked stdout is a terminal)."""
    if log_dir is not None:
        prepare_log_dir(log_dir)
    if not quiet:
        for note in plan.notes:
            say(f"note: {note}")
        say(f"starting {plan.world_size} worker(s) ({plan.accelerator}, {plan.backend}),"
             f" master {plan.master_addr}:{plan.master_port}")
    view = None
    if live:
        from dsrun.launcher.live.view import LiveView

        view = LiveView({rank.rank: rank.host for rank in plan.ranks})
    supervisor = Supervisor(
        plan.ranks,
        shutdown_timeout=shutdown_timeout,
        console=not (quiet and log_dir is not None),
        log_dir=log_dir,
        watch=LocalHangWatch(hang_timeout, log_dir, say) if hang_timeout is not None else None,
        live=view,
        screen=view,
    )
    with view if view is not None else contextlib.nullcontext():
        outcome = supervisor.run()
    _report(outcome, supervisor)
    if outcome.exit_code == 0 and not quiet:
        say(f"all {plan.world_size} worker(s) finished")
    return outcome.exit_code
