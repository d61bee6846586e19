"""deepspeed.moe.utils: telling expert parameters apart, and the optimizer parameter groups ZeRO needs for them.

An expert parameter is one with `allreduce == False` (Experts sets it, with `group_name = f"ep_size_{ep_size}"`).
`split_params_into_different_moe_groups_for_optimizer` moves expert parameters out of the given groups into groups
of their own, marked `"moe": True` and named by the expert group (the key the engine looks up the
expert-data-parallel group by), each copying the other options (lr, weight_decay, ...) of the group it came from.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dsrun.errors import UsageError

DEFAULT_MAX_GROUP_SIZE = 178956971  # DeepSpeed's default: elements per expert parameter group


def is_moe_param(param: torch.Tensor) -> bool:
    return hasattr(param, "allreduce") and not param.allreduce


def has_moe_layers(m: nn.Module) -> tuple[bool, int]:
    """(whether `m` holds an MoE layer, the num_experts of the first one found)."""
    from dsrun.moe.layer import MoE  # the layer imports torch.distributed machinery; utils stays light

    for module in m.modules():
        if isinstance(module, MoE):
            return True, module.num_experts
    return False, 0


def split_params_into_shared_and_expert_params(
        params: Iterable[nn.Parameter]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    shared: list[nn.Parameter] = []
    expert: list[nn.Parameter] = []
    for param in params:
        (expert if is_moe_param(param) else shared).append(param)
    return shared, expert


def split_params_grads_into_shared_and_expert_params(
        group: Iterable[nn.Parameter]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The gradients (cast to their parameter's dtype) of non-expert and of expert parameters, for norms."""
    shared: list[torch.Tensor] = []
    expert: list[torch.Tensor] = []
    for param in group:
        if param.grad is not None:
            (expert if is_moe_param(param) else shared).append(param.grad.to(param.dtype))
    return shared, expert


def _as_group_list(param_groups: Any) -> list[dict[str, Any]]:
    if isinstance(param_groups, dict):
        return [param_groups]
    if isinstance(param_groups, tuple):
        return list(param_groups)
    if isinstance(param_groups, list):
        return param_groups
    raise UsageError(f"split_params_into_different_moe_groups_for_optimizer takes a param group (dict) or a list "
                     f"or tuple of them, not {type(param_groups).__name__}")


def _chunks(params: list[nn.Parameter], max_group_size: int | float) -> list[list[nn.Parameter]]:
    """Consecutive runs of params of at most max_group_size elements (a larger param alone), DeepSpeed's split."""
    chunks: list[list[nn.Parameter]] = []
    current: list[nn.Parameter] = []
    size = 0
    for param in params:
        numel = int(getattr(param, "ds_numel", param.numel()))
        if current and size + numel > max_group_size:
            chunks.append(current)
            current, size = [], 0
        current.append(param)
        size += numel
    if current:
        chunks.append(current)
    return chunks


def split_params_into_different_moe_groups_for_optimizer(
        param_groups: dict[str, Any] | tuple[dict[str, Any], ...] | list[dict[str, Any]],
        max_group_size: int | float | None = DEFAULT_MAX_GROUP_SIZE) -> list[dict[str, Any]]:
    """The given groups without their expert parameters, then per group and expert group name the groups
    `{**group, "name": group_name, "moe": True, "params": [...]}`, split in runs of at most max_group_size elements
    (None: not split). A list is changed in place and returned, as DeepSpeed does.

    Where DeepSpeed differs by accident, this follows the evident intent: `params` given as an iterator is read once
    (DeepSpeed reads it twice and loses it); groups without a "name" or sharing one stay apart (DeepSpeed needs a
    unique "name"); expert groups come in a fixed order, the same on every rank (DeepSpeed iterates a set); no empty
    expert group is added."""
    groups = _as_group_list(param_groups)
    for group in groups:
        params = group["params"]
        group["params"] = [params] if isinstance(params, torch.Tensor) else list(params)
    names: dict[str, None] = {}  # expert group names, in first-seen order
    for group in groups:
        for param in group["params"]:
            if is_moe_param(param):
                names.setdefault(param.group_name)
    if not names:
        return groups
    expert_groups: list[dict[str, Any]] = []
    for group in groups:
        by_name: dict[str, list[nn.Parameter]] = {name: [] for name in names}
        dense = []
        for param in group["params"]:
            if is_moe_param(param):
                by_name[param.group_name].append(param)
            else:
                dense.append(param)
        template = {**group, "moe": True}
        group["params"] = dense
        for name, params in by_name.items():
            runs = [params] if max_group_size is None else _chunks(params, max_group_size)
            expert_groups += [{**template, "name": name, "params": run} for run in runs if run]
    groups.extend(expert_groups)
    return groups


def is_moe_param_group(param_group: dict[str, Any]) -> bool:
    return bool(param_group.get("moe", False))


def configure_moe_param_groups(model_parameters: list[Any]) -> list[dict[str, Any]]:
    """What the engine does with model_parameters when the model has MoE layers: a list of parameters becomes the
    group "dense-params" split as above; param groups are split unless some are already marked "moe"."""
    if not isinstance(model_parameters, list):
        raise UsageError(f"configure_moe_param_groups takes a list of parameters or param groups, not "
                         f"{type(model_parameters).__name__}")
    for item in model_parameters:
        if not isinstance(item, torch.Tensor | dict):
            raise UsageError(f"optimizer parameters are tensors or param group dicts, not {type(item).__name__}")
    if model_parameters and isinstance(model_parameters[0], torch.Tensor):
        return split_params_into_different_moe_groups_for_optimizer({"params": model_parameters,
                                                                     "name": "dense-params"})
    if any("moe" in group for group in model_parameters):
        return model_parameters
    return split_params_into_different_moe_groups_for_optimizer(model_parameters)


# ---- averaging expert gradients (what the engine's ZeRO stage 0 does; a reference for custom loops) ----
# Averaging expert gradients with the right scale: what the engine's strategies must do (a reference for them).
#
# A rank's copy of expert g receives, through the backward all_to_all, the gradient of the losses of every rank of its
# expert-parallel group; the expert-data-parallel group holds the copies of g on the other expert-parallel groups. So
# the sum over the expert-data-parallel group is the sum over all data-parallel ranks' losses, and dividing it by the
# data-parallel world size gives the gradient of the mean loss: the same value as with ep_size 1, and the same as the
# dense parameters' average. Dividing by the expert-data-parallel group's own size instead (DeepSpeed before #5259 in
# the engine and #6546 in ZeRO-1/2) makes expert gradients ep_size times too large.


def allreduce_expert_gradients(parameters: Iterable[torch.nn.Parameter],
                               data_parallel_size: int | None = None) -> None:
    """Sum each expert parameter's gradient over its expert-data-parallel group, then divide by the data-parallel
    world size (default: the size of the data-parallel group, the whole world without a pipeline)."""
    buckets: dict[tuple[str, torch.dtype], list[torch.Tensor]] = {}
    for param in parameters:
        if is_moe_param(param) and param.grad is not None:
            name: str = param.group_name  # type: ignore[attr-defined]  # set by Experts
            buckets.setdefault((name, param.grad.dtype), []).append(param.grad)
    if not buckets:
        return
    from dsrun.moe import groups  # groups imports this module's neighbours; loaded when used

    divisor = data_parallel_size if data_parallel_size is not None else groups._get_data_parallel_world_size()
    for (name, _), grads in buckets.items():
        flat = torch.cat([grad.reshape(-1) for grad in grads])
        group = groups._get_expert_data_parallel_group(name)
        if dist.get_world_size(group) > 1:
            dist.all_reduce(flat, group=group)
        flat.div_(divisor)
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
            offset += grad.numel()
