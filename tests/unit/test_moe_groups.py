"""Expert-parallel process groups: DeepSpeed's rank layout (checked against deepspeed.utils.groups 0.19.8's
_create_expert_and_data_parallel, creation order included), and the cached groups and accessors in a world of one."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

import dsrun
from dsrun.errors import UsageError
from dsrun.moe import groups
from dsrun.moe.layer import MoE
from dsrun.moe.utils import allreduce_expert_gradients

LAYOUTS = [  # world, ep_size, pipeline stages, D+E; expert-parallel groups; expert-data-parallel groups
    (16, 2, 1, False, [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15]],
     [[0, 2, 4, 6, 8, 10, 12, 14], [1, 3, 5, 7, 9, 11, 13, 15]]),  # DeepSpeed's docstring example
    (8, 4, 1, False, [[0, 1, 2, 3], [4, 5, 6, 7]], [[0, 4], [1, 5], [2, 6], [3, 7]]),
    (8, 2, 2, False, [[0, 1], [2, 3], [4, 5], [6, 7]], [[0, 2], [1, 3], [4, 6], [5, 7]]),
    (8, 2, 1, True, [[0, 4], [1, 5], [2, 6], [3, 7]], [[0, 1, 2, 3], [4, 5, 6, 7]]),
    (16, 2, 2, True, [[0, 4], [1, 5], [2, 6], [3, 7], [8, 12], [9, 13], [10, 14], [11, 15]],
     [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]),
    (4, 1, 1, False, [[0], [1], [2], [3]], [[0, 1, 2, 3]]),
    (2, 2, 1, False, [[0, 1]], [[0], [1]]),
]  # fmt: skip


@pytest.mark.parametrize(("world", "ep_size", "stages", "data_first", "ep_groups", "edp_groups"), LAYOUTS)
def test_layout_is_deepspeeds(world, ep_size, stages, data_first, ep_groups, edp_groups):
    assert groups.expert_parallel_layout(world, ep_size, stages, data_first) == (ep_groups, edp_groups)


@pytest.mark.parametrize(("world", "ep_size", "stages", "message"), [
    (6, 4, 1, "ep_size=4 does not divide the world size 6: .* among \\[1, 2, 3, 6\\]"),
    (8, 4, 4, "ep_size=4 does not divide the 2 data-parallel ranks of a pipeline stage"),
    (6, 1, 4, "4 pipeline stages do not divide the world size 6"),
])  # fmt: skip
def test_impossible_layouts_are_one_line(world, ep_size, stages, message):
    with pytest.raises(UsageError, match=message) as info:
        groups.expert_parallel_layout(world, ep_size, stages)
    assert "\n" not in str(info.value)


def test_groups_are_made_once_and_answer_deepspeeds_accessors(single_process):
    dsrun.init_distributed()
    groups._create_expert_and_data_parallel(1)
    name = "ep_size_1"
    group = groups._get_expert_parallel_group(name)
    groups._create_expert_and_data_parallel(1)  # cached: no second group
    assert groups._get_expert_parallel_group(name) is group
    assert groups._get_expert_parallel_group_dict() == {name: group}
    assert set(groups._get_expert_data_parallel_group_dict()) == {name}
    assert groups._get_expert_parallel_group_ranks(name) == [0]
    assert groups._get_expert_data_parallel_group_ranks(name) == [0]
    assert groups._get_expert_parallel_world_size(name) == groups._get_expert_data_parallel_world_size(name) == 1
    assert groups._get_expert_parallel_rank(name) == groups._get_expert_data_parallel_rank(name) == 0
    assert groups._get_expert_parallel_src_rank(name) == groups._get_expert_broadcast_src_rank(name) == 0
    assert groups._get_max_expert_size() == 1 and groups._get_max_expert_parallel_group() is group
    assert groups._get_data_parallel_world_size() == 1 and groups._get_data_parallel_rank() == 0
    with pytest.raises(UsageError, match="no expert-parallel group named 'ep_size_4' \\(made: ep_size_1\\)"):
        groups._get_expert_parallel_group("ep_size_4")
    with pytest.raises(UsageError, match="ep_size=2 does not divide the world size 1"):
        groups._create_expert_and_data_parallel(2)
    with pytest.raises(UsageError, match="no tensor or sequence parallelism"):
        groups._create_expert_and_data_parallel(1, mp_size=2)
    with pytest.raises(UsageError, match="deprecated"):
        groups.initialize(ep_size=2)


def test_a_new_world_drops_the_old_groups(single_process):
    dsrun.init_distributed()
    groups._create_expert_and_data_parallel(1)
    dist.destroy_process_group()
    assert groups._get_expert_parallel_group_dict() == {}
    dsrun.init_distributed()
    groups._create_expert_and_data_parallel(1)
    assert dist.get_world_size(groups._get_expert_parallel_group("ep_size_1")) == 1  # usable: made in this world


def test_layer_in_a_world_of_one(single_process, capsys):
    dsrun.init_distributed()
    torch.manual_seed(0)
    moe = MoE(4, nn.Linear(4, 4), num_experts=2, min_capacity=0)
    moe.set_deepspeed_parallelism()
    assert moe.deepspeed_moe.ep_group is groups._get_expert_parallel_group("ep_size_1")
    output, _, _ = moe(torch.randn(6, 4))
    output.sum().backward()
    before = {n: p.grad.clone() for n, p in moe.named_parameters()}
    allreduce_expert_gradients(moe.parameters(), data_parallel_size=4)  # only expert gradients are scaled
    for name, param in moe.named_parameters():
        scale = 4 if ".deepspeed_experts." in name else 1
        assert torch.allclose(param.grad * scale, before[name]), name
    with pytest.raises(SystemExit) as stop:  # in a worker, a mistake ends the job with one line
        MoE(4, nn.Linear(4, 4), num_experts=2, ep_size=2)
    assert stop.value.code == 2
    assert "MoE ep_size=2 does not divide the world size 1" in capsys.readouterr().err
