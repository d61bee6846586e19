"""Mixture-of-experts parameters in the strategies: which ranks average an expert's gradient, and with what scale.

An MoE layer with ep_size > 1 holds different experts on the ranks of an expert-parallel group; the copies of one
expert sit on the ranks of its expert-data-parallel group. Through the backward all_to_all each copy already holds
its expert-parallel group's share of the gradient, so the sum over the expert-data-parallel group divided by the
whole data-parallel world size is the gradient of the mean loss (dividing by the group's own size, as DeepSpeed did
before 0.14.1 / 0.15.4, makes it ep_size times too large). Dense parameters are averaged over all ranks as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist
from torch import nn

from dsrun.moe.utils import is_moe_param


@dataclass(frozen=True)
class ExpertGroup:
    name: str  # DeepSpeed's group name, "ep_size_<N>"
    params: list[nn.Parameter]
    data_group: dist.ProcessGroup  # the ranks holding copies of these experts (perhaps this rank alone)
    parallel_group: dist.ProcessGroup  # the ranks holding the layer's other experts
    broadcast_src: int  # the global rank whose copies start every other


def split_experts(params: list[nn.Parameter]) -> tuple[list[nn.Parameter], list[ExpertGroup]]:
    """(dense parameters, expert parameters by their expert-parallel group). Experts of ep_size 1 are dense: every
    rank holds all of them, and averaging over all ranks is their right average."""
    dense: list[nn.Parameter] = []
    by_name: dict[str, list[nn.Parameter]] = {}
    for param in params:
        name = getattr(param, "group_name", None) if is_moe_param(param) else None
        if name is None or name == "ep_size_1" or not dist.is_initialized():
            dense.append(param)
        else:
            by_name.setdefault(name, []).append(param)
    return dense, [_group(name, members) for name, members in sorted(by_name.items())]


def _group(name: str, params: list[nn.Parameter]) -> ExpertGroup:
    from dsrun.moe import groups

    data = groups._get_expert_data_parallel_group(name)
    parallel = groups._get_expert_parallel_group(name)
    return ExpertGroup(name, params, data, parallel, groups._get_expert_broadcast_src_rank(name))


def expert_parameter_ids(model: nn.Module) -> set[int]:
    """ids of the parameters an MoE layer spreads over ranks (ep_size > 1)."""
    return {id(p) for p in model.parameters()
            if is_moe_param(p) and getattr(p, "group_name", "ep_size_1") != "ep_size_1"}
