"""Expert-parallel process groups, laid out and named as DeepSpeed's deepspeed/utils/groups.py lays them out.

With E+D ordering (the default), ranks form expert-parallel groups of ep_size consecutive ranks, within each pipeline
stage's block of world // pp_size ranks; an expert-data-parallel group holds the ranks at the same position of every
expert-parallel group (the ranks holding the same experts). DeepSpeed's example, world 16, ep_size 2:

    expert-parallel groups       [0, 1], [2, 3], ..., [14, 15]   all_to_all of the tokens
    expert-data-parallel groups  [0, 2, ..., 14], [1, 3, ..., 15] gradients of the experts
    data-parallel group          [0, 1, ..., 15]                  gradients of everything else

D+E ordering (`use_data_before_expert_parallel_`, the config key use_data_before_expert_parallelism) swaps the two:
expert-data-parallel groups are blocks of world // pp_size // ep_size consecutive ranks and expert-parallel groups
stride over them. Groups are keyed by name, f"ep_size_{ep_size}", one pair per ep size in use.

torch.distributed.new_group is collective: every rank creates every group, in the same order. The groups are created
on first need (an MoE layer's set_deepspeed_parallelism or first forward) and cached; a cache made in a world that has
since been destroyed is dropped.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

from dsrun.errors import UsageError
from dsrun.moe.checks import check_world

# A model-parallel unit, as DeepSpeed's groups.mpu: only its pipeline size and data-parallel group are read.
mpu: Any = None

_EXPERT_PARALLEL_GROUP: dict[str, dist.ProcessGroup] = {}
_EXPERT_PARALLEL_GROUP_RANKS: dict[str, list[int]] = {}
_EXPERT_DATA_PARALLEL_GROUP: dict[str, dist.ProcessGroup] = {}
_EXPERT_DATA_PARALLEL_GROUP_RANKS: dict[str, list[int]] = {}
_cache_world: list[Any] = [None]  # the default group the cached groups belong to


def group_name(ep_size: int) -> str:
    return f"ep_size_{ep_size}"


def expert_parallel_layout(world_size: int, ep_size: int, pp_size: int = 1,
                           use_data_before_expert_parallel: bool = False) -> tuple[list[list[int]], list[list[int]]]:
    """(expert-parallel groups, expert-data-parallel groups) as lists of global ranks, in DeepSpeed's order."""
    check_world(ep_size, world_size, pp_size)
    stage = world_size // pp_size
    data_block = stage // ep_size  # D+E: the ranks holding the same experts are this many consecutive ranks
    ep_groups: list[list[int]] = []
    edp_groups: list[list[int]] = []
    for start in range(0, world_size, stage):
        for position in range(ep_size):
            if use_data_before_expert_parallel:
                edp_groups.append(list(range(start + position * data_block, start + (position + 1) * data_block)))
            else:
                edp_groups.append(list(range(start + position, start + stage, ep_size)))
        if use_data_before_expert_parallel:
            ep_groups += [list(range(start + offset, start + stage, data_block)) for offset in range(data_block)]
        else:
            ep_groups += [list(range(first, first + ep_size)) for first in range(start, start + stage, ep_size)]
    return ep_groups, edp_groups


def _pipeline_size() -> int:
    for getter in ("get_pipeline_model_parallel_world_size", "get_pipe_parallel_world_size"):
        if mpu is not None and hasattr(mpu, getter):
            return int(getattr(mpu, getter)())
    return 1


def _drop_stale() -> None:
    """Groups cached in a world that has been destroyed (or replaced) went with it."""
    world = dist.group.WORLD if dist.is_available() and dist.is_initialized() else None
    if _cache_world[0] is not world:
        for cache in (_EXPERT_PARALLEL_GROUP, _EXPERT_PARALLEL_GROUP_RANKS, _EXPERT_DATA_PARALLEL_GROUP,
                      _EXPERT_DATA_PARALLEL_GROUP_RANKS):
            cache.clear()
        _cache_world[0] = world


def _require_distributed() -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise UsageError("MoE with ep_size > 1 needs torch.distributed: call dsrun.init_distributed() (or "
                         "dsrun.initialize) before the first forward, and launch the script with dsrun")
    _drop_stale()


def _create_expert_and_data_parallel(expert_parallel_size_: int, mp_size: int | None = None,
                                     pp_size: int | None = None, mp_mode: str = "tp",
                                     use_data_before_expert_parallel_: bool = False) -> None:
    """Create (once per ep size, on every rank) the expert-parallel and expert-data-parallel groups of this rank."""
    _require_distributed()
    if mp_size not in (None, 1):
        raise UsageError(f"MoE groups with model-parallel size {mp_size}: dsrun has no tensor or sequence "
                         f"parallelism, so experts are laid out over data-parallel ranks only (mp_size 1)")
    name = group_name(expert_parallel_size_)
    if name in _EXPERT_PARALLEL_GROUP:
        return
    rank, world_size = dist.get_rank(), dist.get_world_size()
    ep_groups, edp_groups = expert_parallel_layout(world_size, expert_parallel_size_,
                                                   pp_size if pp_size is not None else _pipeline_size(),
                                                   use_data_before_expert_parallel_)
    for ranks in edp_groups:  # DeepSpeed's creation order: expert-data-parallel groups first
        group = dist.new_group(ranks)
        if rank in ranks:
            _EXPERT_DATA_PARALLEL_GROUP[name], _EXPERT_DATA_PARALLEL_GROUP_RANKS[name] = group, ranks
    for ranks in ep_groups:
        group = dist.new_group(ranks)
        if rank in ranks:
            _EXPERT_PARALLEL_GROUP[name], _EXPERT_PARALLEL_GROUP_RANKS[name] = group, ranks


def initialize(ep_size: int = 1, mpu: Any = None) -> None:
    """Deprecated in DeepSpeed, which raises as well."""
    raise UsageError("groups.initialize() is deprecated (in DeepSpeed too): pass ep_size to "
                     "deepspeed.moe.layer.MoE(..., ep_size=...) and the groups are created for it")


def _lookup(table: dict[str, Any], name: str, what: str) -> Any:
    _require_distributed()
    if name not in table:
        made = ", ".join(sorted(table)) or "none"
        raise UsageError(f"no {what} group named {name!r} (made: {made}): it is created by an MoE layer with that "
                         f"ep size, at dsrun.initialize or at the layer's first forward")
    return table[name]


def _get_expert_parallel_group(group_name: str) -> dist.ProcessGroup:
    group: dist.ProcessGroup = _lookup(_EXPERT_PARALLEL_GROUP, group_name, "expert-parallel")
    return group


def _get_expert_parallel_group_ranks(group_name: str) -> list[int]:
    ranks: list[int] = _lookup(_EXPERT_PARALLEL_GROUP_RANKS, group_name, "expert-parallel")
    return ranks


def _get_expert_parallel_group_dict() -> dict[str, dist.ProcessGroup]:
    _drop_stale()
    return _EXPERT_PARALLEL_GROUP


def _get_expert_data_parallel_group(group_name: str) -> dist.ProcessGroup:
    group: dist.ProcessGroup = _lookup(_EXPERT_DATA_PARALLEL_GROUP, group_name, "expert-data-parallel")
    return group


def _get_expert_data_parallel_group_ranks(group_name: str) -> list[int]:
    ranks: list[int] = _lookup(_EXPERT_DATA_PARALLEL_GROUP_RANKS, group_name, "expert-data-parallel")
    return ranks


def _get_expert_data_parallel_group_dict() -> dict[str, dist.ProcessGroup]:
    _drop_stale()
    return _EXPERT_DATA_PARALLEL_GROUP


def _get_expert_parallel_world_size(group_name: str) -> int:
    return len(_get_expert_parallel_group_ranks(group_name))


def _get_expert_data_parallel_world_size(group_name: str) -> int:
    return len(_get_expert_data_parallel_group_ranks(group_name))


def _get_expert_parallel_rank(group_name: str) -> int:
    return _get_expert_parallel_group_ranks(group_name).index(dist.get_rank())


def _get_expert_data_parallel_rank(group_name: str) -> int:
    return _get_expert_data_parallel_group_ranks(group_name).index(dist.get_rank())


def _get_expert_parallel_src_rank(group_name: str) -> int:
    """The global rank of expert-parallel rank 0 of this rank's group."""
    return _get_expert_parallel_group_ranks(group_name)[0]


def _get_expert_broadcast_src_rank(group_name: str) -> int:
    """The global rank whose copy of the experts the engine broadcasts over the expert-data-parallel group."""
    return _get_expert_data_parallel_group_ranks(group_name)[0]


def _get_max_expert_size() -> int | None:
    _drop_stale()
    sizes = [int(name.split("_")[2]) for name in _EXPERT_PARALLEL_GROUP]
    return max(sizes) if sizes else None


def _get_max_expert_size_name() -> str:
    return f"ep_size_{_get_max_expert_size()}"


def _get_max_expert_parallel_group() -> dist.ProcessGroup:
    return _get_expert_parallel_group(_get_max_expert_size_name())


def _get_expert_model_parallel_world_size() -> int:
    return 1  # no tensor parallelism of experts in dsrun


def _get_model_parallel_world_size() -> int:
    return 1 if mpu is None or not hasattr(mpu, "get_model_parallel_world_size") else \
        int(mpu.get_model_parallel_world_size())


def _get_data_parallel_group() -> dist.ProcessGroup:
    """The group dense gradients are averaged over: the mpu's data-parallel group, else the whole world."""
    _require_distributed()
    if mpu is not None and hasattr(mpu, "get_data_parallel_group"):
        group: dist.ProcessGroup = mpu.get_data_parallel_group()
        return group
    world = dist.group.WORLD
    assert world is not None  # distributed is initialized
    return world


def _get_data_parallel_world_size() -> int:
    return dist.get_world_size(group=_get_data_parallel_group())


def _get_data_parallel_rank() -> int:
    return dist.get_rank(group=_get_data_parallel_group())
