"""Expert state-dict keys by global expert index: what ranks at one ep size save, ranks at another load."""

from __future__ import annotations

import torch
from torch import nn

from dsrun.moe.layer import MoE
from dsrun.moe.state import expert_key_map, to_global_keys, to_local_keys

EXPERTS = "1.deepspeed_moe.experts.deepspeed_experts"


def model(ep_size: int, rank: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 4), MoE(4, nn.Linear(4, 4), num_experts=4, ep_size=ep_size, min_capacity=0,
                                              rank=rank, world_size=ep_size))


def test_local_slots_map_to_global_indices():
    mapping = expert_key_map(model(ep_size=2, rank=1))
    assert mapping == {f"{EXPERTS}.{slot}.{name}": f"{EXPERTS}.{slot + 2}.{name}"
                       for slot in (0, 1) for name in ("weight", "bias")}


def test_a_checkpoint_saved_at_ep_size_2_loads_at_ep_size_1_and_4():
    ranks = [model(ep_size=2, rank=rank, seed=1) for rank in (0, 1)]
    saved: dict[str, torch.Tensor] = {}
    for rank in ranks:  # every rank's experts under their own keys: nothing collides
        saved.update(to_global_keys(rank.state_dict(), rank))
    assert sorted(k for k in saved if "experts" in k) == sorted(
        f"{EXPERTS}.{g}.{name}" for g in range(4) for name in ("weight", "bias"))
    whole = model(ep_size=1, rank=0, seed=2)
    whole.load_state_dict(to_local_keys(saved, whole))
    for rank, source in enumerate(ranks):
        for slot in (0, 1):
            assert torch.equal(whole[1].deepspeed_moe.experts.deepspeed_experts[2 * rank + slot].weight,
                               source[1].deepspeed_moe.experts.deepspeed_experts[slot].weight)
    quarter = model(ep_size=4, rank=3, seed=2)  # holds global expert 3 only: rank 1's second slot
    quarter.load_state_dict(to_local_keys(saved, quarter))
    assert torch.equal(quarter[1].deepspeed_moe.experts.deepspeed_experts[0].bias,
                       ranks[1][1].deepspeed_moe.experts.deepspeed_experts[1].bias)
    assert torch.equal(quarter[0].weight, ranks[0][0].weight)  # the rest as saved
    # all experts back in their slots: the ep_size 1 model computes what the saved experts compute
    x = torch.randn(8, 4)
    assert torch.equal(whole[1].deepspeed_moe.experts(x.view(1, 1, 8, 4).expand(1, 4, 8, 4).contiguous())[0, 3],
                       ranks[1][1].deepspeed_moe.experts.deepspeed_experts[1](x))
