"""Tied layers across stages: which stages hold a copy of each key, and the rank groups whose copies must agree.

Every stage whose layer range lists a TiedLayerSpec with key K builds its own copy of K. The copies start different
(each stage builds its own) and their gradients differ (each stage uses its copy at other positions), so the engine
broadcasts them from the first holding stage once and all-reduces their gradients over the holding stages of each
pipeline after backward: `tied_rank_groups` lists those groups, one per data-parallel index, in DeepSpeed's order
(keys sorted, then data index), so every rank creates the same process groups in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dsrun.errors import UsageError
from dsrun.pipe.topology import ProcessTopology


def stage_of_layer(parts: Sequence[int], layer_idx: int) -> int:
    """The stage owning a global layer index."""
    for stage in range(len(parts) - 1):
        if parts[stage] <= layer_idx < parts[stage + 1]:
            return stage
    raise ValueError(f"layer {layer_idx} is outside the partition {list(parts)}")


def tied_stages(keys: Sequence[str | None], parts: Sequence[int]) -> dict[str, list[int]]:
    """{key: sorted stages holding it} over all layers, keys sorted (the same order on every rank). `keys` has one
    entry per layer: the TiedLayerSpec key, or None for any other layer."""
    holders: dict[str, set[int]] = {}
    for idx, key in enumerate(keys):
        if key is not None:
            holders.setdefault(key, set()).add(stage_of_layer(parts, idx))
    return {key: sorted(holders[key]) for key in sorted(holders)}


def tied_rank_groups(stages: Sequence[int], topology: ProcessTopology) -> list[list[int]]:
    """For each pipeline (data-parallel index), the global ranks of the given stages in it, ordered by stage."""
    return [[pipeline[stage] for stage in stages] for pipeline in topology.pipeline_ranks()]


def resolve_attr(module: nn.Module, path: str) -> torch.Tensor:
    """module.<path> for a dotted path such as "linear.weight" (DeepSpeed's _recursive_getattr)."""
    found: object = module
    for part in path.split("."):
        found = getattr(found, part, None)
    if not isinstance(found, torch.Tensor):
        raise UsageError(f"tied_weight_attr {path!r}: {type(module).__name__} has no tensor of that name")
    return found
