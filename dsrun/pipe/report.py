"""The partition as rank 0 prints it once: a header line, then one line per stage (layer range, names, parameters).

Consecutive layers of one name are folded ("TransformerLayer x12") and a stage's list is cut after a few names, so a
48-layer model still prints a handful of short lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

MAX_GROUPS = 6


def fold_names(names: Sequence[str]) -> str:
    """'Linear, ReLU x2, lambda' for [Linear, ReLU, ReLU, lambda]; past MAX_GROUPS runs, '... (+N more)'."""
    runs = [(name, len(list(group))) for name, group in groupby(names)]
    shown = [name if count == 1 else f"{name} x{count}" for name, count in runs[:MAX_GROUPS]]
    hidden = sum(count for _, count in runs[MAX_GROUPS:])
    return ", ".join(shown) + (f", ... (+{hidden} more)" if hidden else "")


def partition_lines(parts: Sequence[int], names: Sequence[str], counts: Sequence[int], *, method: str,
                    data_parallel: int, loss_name: str | None) -> list[str]:
    """The report: parts are the stage boundaries, names and counts one entry per layer."""
    num_stages = len(parts) - 1
    header = f"pipeline: {num_stages} stages x {data_parallel} data-parallel, partition_method={method}"
    if loss_name:
        header += f", loss={loss_name}"
    lines = [header]
    for stage in range(num_stages):
        start, stop = parts[stage], parts[stage + 1]
        span = f"layer {start}" if stop - start == 1 else f"layers {start}-{stop - 1}"
        params = sum(counts[start:stop])
        lines.append(f"  stage {stage}: {span}, {params:,} params: {fold_names(names[start:stop])}")
    return lines
