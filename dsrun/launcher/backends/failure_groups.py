"""When several ranks fail, say each error once: ranks failing with the same last line of stderr (the exception a
Python worker died of) form a group, shown with one copy of their first rank's stderr tail. Ranks the teardown
stopped (killed by a signal) are not failures of their own and are left out; the per-rank logs keep everything."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FailureGroup:
    ranks: list[int]  # ascending; ranks[0] is the one whose tail is shown (the first failing rank for its group)
    error: str  # the shared last stderr line ("" when the ranks wrote nothing)
    tail: list[str]


def group_failures(codes: dict[int, int], tails: dict[int, list[str]], first: int) -> list[FailureGroup]:
    """Groups of ranks that exited non-zero by themselves (Popen codes: negative = killed by a signal), the group
    of `first` (the first failing rank) first, its tail shown; the others in rank order."""
    failed = sorted(rank for rank, code in codes.items() if code > 0 or rank == first)
    by_error: dict[str, list[int]] = {}
    for rank in failed:
        lines = [line for line in tails.get(rank, []) if line.strip()]
        by_error.setdefault(lines[-1].strip() if lines else "", []).append(rank)
    groups = []
    for error, ranks in by_error.items():
        shown = first if first in ranks else ranks[0]
        groups.append(FailureGroup(ranks, error, list(tails.get(shown, []))))
    groups.sort(key=lambda g: (first not in g.ranks, g.ranks[0]))
    return groups
