"""Splitting CPU cores among a node's workers (`--bind_cores_to_rank`, `--bind_core_list`)."""

from __future__ import annotations

from dsrun.errors import UsageError


def parse_core_list(text: str) -> list[int]:
    """`0,2-5,7` → [0, 2, 3, 4, 5, 7]; ascending and without overlaps, as DeepSpeed requires."""
    cores: list[int] = []
    for part in text.split(","):
        part = part.strip()
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise UsageError(f"--bind_core_list {text!r}: {part!r} is not a core or a range like 2-5")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise UsageError(f"--bind_core_list {text!r}: range {part!r} runs backwards")
        if cores and low <= cores[-1]:
            raise UsageError(f"--bind_core_list {text!r}: cores must ascend without overlap")
        cores.extend(range(low, high + 1))
    return cores


def split_cores(cores: list[int], workers: int) -> list[list[int]]:
    """Give each of `workers` an equal contiguous block of `cores`; leftover cores stay unused."""
    per_worker = len(cores) // workers
    if per_worker == 0:
        raise UsageError(f"cannot bind {workers} workers to {len(cores)} core(s): need at least one core each")
    return [cores[i * per_worker : (i + 1) * per_worker] for i in range(workers)]
