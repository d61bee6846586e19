"""Where the stage boundaries fall: pure functions over layer names and weights (no torch, no process groups).

A partition is DeepSpeed's `parts` list: num_stages + 1 increasing layer indices, stage s owning layers
[parts[s], parts[s + 1]). The algorithms reproduce DeepSpeed's (deepspeed/runtime/utils.py) so the same layer list
splits at the same places under dsrun and DeepSpeed:

- uniform: the first `num_layers % num_stages` stages get one layer more than the others.
- balanced (methods "parameters" and "type:REGEX"): DeepSpeed's dynamic programme over contiguous splits that
  minimises, greedily per prefix, the spread (heaviest stage minus lightest stage) of the per-stage weight sums; on a
  tie the later split point wins. It is not a min-max (bottleneck) partition: it is what DeepSpeed does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from dsrun.errors import UsageError

METHODS = ("parameters", "uniform", "type:REGEX")


def partition_uniform(num_items: int, num_parts: int) -> list[int]:
    """Boundaries giving each part num_items // num_parts items, the first num_items % num_parts parts one more.

    With fewer items than parts DeepSpeed gives the trailing parts nothing; callers that need every part non-empty
    check that (see `partition`)."""
    if num_items <= num_parts:
        return [min(p, num_items) for p in range(num_parts + 1)]
    chunk, extra = divmod(num_items, num_parts)
    return [p * chunk + min(p, extra) for p in range(num_parts + 1)]


def partition_balanced(weights: Sequence[float], num_parts: int) -> list[int]:
    """DeepSpeed's balanced split of `weights` into num_parts contiguous, non-empty parts.

    best[i][j] describes the chosen split of the first i items into j parts: its spread (max part sum - min part sum),
    its max and min part sums, and where its last part starts. For each (i, j) every start k of the last part is tried
    in increasing order against best[k][j - 1], and a candidate replaces the current choice when its spread is <= the
    current one, so ties go to the largest k. DeepSpeed also tries the starts k < j - 1, which leave fewer items than
    parts before the last one: their spread is infinite and the first real split (k = j - 1 always is one) replaces
    them, so skipping them changes nothing."""
    n, m = len(weights), num_parts
    if n <= m:
        return partition_uniform(n, m)
    inf = float("inf")
    prefix = [0.0] * (n + 1)
    for i, w in enumerate(weights):
        prefix[i + 1] = prefix[i] + w
    spread = [[inf] * (m + 1) for _ in range(n + 1)]
    high = [[inf] * (m + 1) for _ in range(n + 1)]
    low = [[inf] * (m + 1) for _ in range(n + 1)]
    start = [[0] * (m + 1) for _ in range(n + 1)]
    spread[0][0] = high[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, min(i, m) + 1):
            for k in range(j - 1, i):
                part = prefix[i] - prefix[k]
                cand_high = max(high[k][j - 1], part)
                cand_low = min(low[k][j - 1], part)
                cost = cand_high - cand_low
                if spread[i][j] >= cost:
                    spread[i][j], high[i][j], low[i][j], start[i][j] = cost, cand_high, cand_low, k
    parts = [n]
    for j in range(m, 0, -1):
        parts.append(start[parts[-1]][j])
    return parts[::-1]


def type_weights(names: Sequence[str | None], pattern: str) -> list[int]:
    """1 for each layer whose name matches `pattern` (re.search, case-insensitive, as DeepSpeed), else 0. A layer
    without a name (a callable object with no __name__) never matches."""
    regex = re.compile(pattern, re.IGNORECASE)
    weights = [1 if name is not None and regex.search(name) else 0 for name in names]
    if not any(weights):
        raise UsageError(f"partition_method 'type:{pattern}' matches no layer class name; the layers are "
                         f"{sorted({n for n in names if n is not None})}")
    return weights


def partition(method: str, num_stages: int, names: Sequence[str | None],
              param_counts: Callable[[], Sequence[int]]) -> list[int]:
    """The stage boundaries for `partition_method` (case-insensitive, as DeepSpeed lowercases it) over the layers
    named `names`. `param_counts` is called only for "parameters": counting means building every LayerSpec (on the
    meta device), which the other methods do not need."""
    num_layers = len(names)
    if num_layers < num_stages:
        raise UsageError(f"{num_layers} layers cannot fill {num_stages} pipeline stages: every stage needs at least "
                         "one layer; use fewer stages or split the model into more layers")
    lowered = method.lower()
    if lowered == "uniform":
        parts = partition_uniform(num_layers, num_stages)
    elif lowered == "parameters":
        parts = partition_balanced(list(param_counts()), num_stages)
    elif lowered.startswith("type:"):
        parts = partition_balanced(type_weights(names, method.split(":", 1)[1]), num_stages)
    else:
        raise UsageError(f"partition_method {method!r} is not one of {', '.join(METHODS)}")
    check_parts(parts, num_stages, num_layers)
    return parts


def check_parts(parts: Sequence[int], num_stages: int, num_layers: int) -> None:
    """Every stage must own at least one layer, and the stages together all of them."""
    empty = [s for s in range(num_stages) if parts[s + 1] <= parts[s]]
    if len(parts) != num_stages + 1 or parts[0] != 0 or parts[-1] != num_layers or empty:
        raise UsageError(f"partition {list(parts)} of {num_layers} layers leaves stages {empty} without a layer")
