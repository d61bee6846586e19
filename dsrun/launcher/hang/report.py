"""What dsrun says when a job hangs: a few lines naming which ranks are where, and every rank's full stack in a file.

    hang (--hang-timeout 600): the ranks disagree on the step; rank 1 made no progress for 600 s
      rank 1 at step 16 in main (train.py:40)
      ranks 0,2-3 at step 17 in all_reduce <- engine.step <- train.py:42
    full stacks of every rank: logs/hang-stacks-20260101-120000.txt
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

from dsrun.launcher.hang.detect import Hang
from dsrun.launcher.hang.stack_text import where
from dsrun.launcher.node.progress import JOINED, RENDEZVOUS
from dsrun.launcher.node.stacks import RankStack
from dsrun.launcher.node.supervisor import EXIT_HANG
from dsrun.launcher.plan.render import span


def _ranks(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {span(sorted(ranks))}"


def _step(step: int | None, rendezvous: bool = False) -> str:
    if step is None:
        return "not at the rendezvous" if rendezvous else "with no step reported"
    if step == RENDEZVOUS:
        return "in the rendezvous"
    return "before its first step" if step == JOINED else f"at step {step}"


def _place(stack: RankStack | None) -> str:
    if stack is None:
        return ": no stack (its node did not answer)"
    phrase = where(stack.text) if stack.text else None
    if phrase is not None:
        return f" {phrase}"
    return f": {stack.note}" if stack.note else f": no Python frame in its stack ({stack.how})"


def _top(hang: Hang) -> int | None:
    return max((step for step in hang.steps.values() if step is not None), default=None)


def headline(hang: Hang, timeout: float) -> str:
    top, said = _top(hang), f"hang (--hang-timeout {timeout:g})"
    if top == RENDEZVOUS:
        missing = [rank for rank, step in hang.steps.items() if step is None]
        if missing:
            return (f"{said}: {_ranks(missing)} never came to the rendezvous (init_distributed) in {timeout:g} s;"
                    " the others wait there")
        return f"{said}: no rank got through the rendezvous in {timeout:g} s"
    if hang.disagree:
        behind = [rank for rank in hang.stuck if hang.steps[rank] != top] or hang.stuck
        return f"{said}: the ranks disagree on the step; {_ranks(behind)} made no progress for {timeout:g} s"
    if set(hang.stuck) >= set(hang.steps):
        return f"{said}: no rank made progress for {timeout:g} s, all {_step(top)}"
    return f"{said}: {_ranks(hang.stuck)} made no progress for {timeout:g} s"


def summary(hang: Hang, stacks: dict[int, RankStack], timeout: float, hosts: dict[int, str] | None = None) -> list[str]:
    """The headline, then one line per group of ranks at the same step and place (lowest step first).

    `hosts` names each rank's host; give it only when the job spans several hosts.
    """
    groups: dict[tuple, list[int]] = {}
    for rank, step in sorted(hang.steps.items()):
        host = f" on {hosts[rank]}" if hosts and rank in hosts else ""
        groups.setdefault((step, host, _place(stacks.get(rank))), []).append(rank)
    order = sorted(groups.items(), key=lambda item: (float("-inf") if item[0][0] is None else item[0][0], item[1][0]))
    lines = [headline(hang, timeout)]
    rendezvous = _top(hang) == RENDEZVOUS
    lines.extend(f"  {_ranks(ranks)}{host} {_step(step, rendezvous)}{place}"
                 for (step, host, place), ranks in order)
    return lines


def write_stacks(lines: list[str], hang: Hang, stacks: dict[int, RankStack], log_dir: Path | None,
                 hosts: dict[int, str] | None = None) -> Path:
    """The summary and every rank's full stack, in the log dir (or a new temporary dir); returns the file."""
    directory = log_dir if log_dir is not None else Path(tempfile.mkdtemp(prefix="dsrun-hang-"))
    path = directory / time.strftime("hang-stacks-%Y%m%d-%H%M%S.txt")
    parts = [*lines, ""]
    for rank, step in sorted(hang.steps.items()):
        stack = stacks.get(rank)
        host = f" on {hosts[rank]}" if hosts and rank in hosts else ""
        how = f" (stack by {stack.how})" if stack is not None and stack.how else ""
        parts.append(f"=== rank {rank}{host} {_step(step)}{how} ===")
        if stack is None:
            parts.append("no stack: its node did not answer")
        else:
            parts.append(stack.text or stack.note or "(empty)")
        parts.append("")
    path.write_text("\n".join(parts))
    return path


def report_hang(hang: Hang, stacks: dict[int, RankStack], timeout: float, log_dir: Path | None,
                notify: Callable[[str], None], hosts: dict[int, str] | None = None) -> Path:
    """Say where every rank is, write the full stacks, and say where they are and how the job ends."""
    lines = summary(hang, stacks, timeout, hosts)
    path = write_stacks(lines, hang, stacks, log_dir, hosts)
    notify("\n".join([*lines, f"full stacks of every rank: {path}",
                      f"stopping every rank; dsrun exits with code {EXIT_HANG}"]))
    return path

