"""When several ranks fail, say each error once: ranks failing with the same last line of stderr (the exception a
Python worker died of) form a group, shown with one copy of their first rank's stderr tail. Ranks the teardown
stopped (killed by a signal) are not failures of their own and are left out; the per-rank logs keep everything.

The same report serves every backend: a local run gives the supervisor's codes and tails; a multi-node run merges
what each node agent sent in its `done` event, so ranks on different hosts failing alike are one group too."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from dsrun.launcher.node.supervisor import describe_exit
from dsrun.launcher.plan.render import span


@dataclass(frozen=True)
class FailureGroup:
    ranks: list[int]  # ascending; ranks[0] is the one whose tail is shown (the first failing rank for its group)
    error: str  # the shared last stderr line (for ranks that wrote nothing: "no stderr, " and how they ended)
    tail: list[str]


@dataclass(frozen=True)
class FirstFailure:
    rank: int
    host: str
    returncode: int  # Popen's: negative = killed by that signal
    command: list[str]


def group_failures(codes: dict[int, int], tails: dict[int, list[str]], first: int) -> list[FailureGroup]:
    """Groups of ranks that exited non-zero by themselves (Popen codes: negative = killed by a signal), the group
    of `first` (the first failing rank) first, its tail shown; the others in rank order."""
    failed = sorted(rank for rank, code in codes.items() if code > 0 or rank == first)
    by_error: dict[str, list[int]] = {}
    for rank in failed:
        lines = [line for line in tails.get(rank, []) if line.strip()]
        # Ranks that wrote nothing are alike only when they ended alike (an OOM kill is not an exit 1).
        error = _error_of(lines[-1]) if lines else f"no stderr, {describe_exit(codes[rank])}"
        by_error.setdefault(error, []).append(rank)
    groups = []
    for error, ranks in by_error.items():
        shown = first if first in ranks else ranks[0]
        groups.append(FailureGroup(ranks, error, list(tails.get(shown, []))))
    groups.sort(key=lambda g: (first not in g.ranks, g.ranks[0]))
    return groups


# torch prefixes an uncaught exception's lines with the process's rank once the process group is up ("[rank3]: ...").
_TORCH_RANK_PREFIX = re.compile(r"^\[rank\d+\]:\s*")


def _error_of(last_line: str) -> str:
    """The error a rank died of, without what differs between ranks failing alike (torch's rank prefix)."""
    return _TORCH_RANK_PREFIX.sub("", last_line.strip())


def failure_report(first: FirstFailure, codes: dict[int, int], tails: dict[int, list[str]]) -> str:
    """The lines the user reads when a job failed: the first failing rank, its command and its error; then every
    other error once, with the ranks that had it."""
    head, *others = group_failures({**codes, first.rank: first.returncode}, tails, first.rank)
    lines = [f"rank {first.rank} on {first.host} failed first: {describe_exit(first.returncode)}",
             f"  command: {shlex.join(first.command)}"]
    if len(head.ranks) > 1:
        lines.append(f"  ranks {span(head.ranks)} failed with the same error")
    lines += _tail_lines(head.tail, "its")
    for group in others:
        ranks = f"rank {group.ranks[0]}" if len(group.ranks) == 1 else f"ranks {span(group.ranks)}"
        lines.append(f"{ranks} failed with another error: {group.error}")
        lines += _tail_lines(group.tail, f"rank {group.ranks[0]}'s")
    return "\n".join(lines)


def _tail_lines(tail: list[str], whose: str) -> list[str]:
    if not tail:
        return []
    return [f"  last {len(tail)} line(s) of {whose} stderr:", *(f"    {line}" for line in tail)]


def from_done_events(done: list[dict], hosts: dict[int, str]) -> str | None:
    """The report of a multi-node job from its agents' `done` events (the first failing node's first), or None
    when the first event names no failing rank."""
    failure = done[0].get("failure") if done else None
    if not failure:
        return None
    codes: dict[int, int] = {}
    tails: dict[int, list[str]] = {}
    for event in done:
        for rank, exited in event["exits"].items():
            codes[int(rank)] = int(exited["code"])
            if exited.get("tail") is not None:
                tails[int(rank)] = list(exited["tail"])
    rank = int(failure["rank"])
    first = FirstFailure(rank, hosts.get(rank, "?"), int(failure["returncode"]), list(failure["command"]))
    return failure_report(first, codes, tails)
