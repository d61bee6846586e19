"""A rank's local experts: DeepSpeed's `Experts` container, with independently initialised copies.

DeepSpeed deep-copies the `expert` module num_local_experts times, so every expert of every rank starts with the same
weights and only the gate's routing tells them apart. Here each copy is re-initialised with a seed of its own, derived
from the layer's seed and the expert's *global* index (expert-parallel rank * num_local_experts + slot): the experts
start different, and expert g starts with the same weights whatever the ep size and whichever rank holds it, so a
model built at ep_size 2 equals one built at ep_size 1 expert for expert (given the same seed before construction).

Re-initialising calls `reset_parameters()` of every submodule that has one (torch's layers all do). A parameter that
no submodule resets (a bare nn.Parameter of a custom module) keeps the template's values in every copy, as in
DeepSpeed.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def expert_seed(layer_seed: int, global_id: int) -> int:
    return (layer_seed * 1_000_003 + global_id) % (2**63)


def reinitialize(module: nn.Module, seed: int) -> None:
    """Draw the module's parameters afresh from `seed`, leaving the callers' random streams where they were."""
    cuda = sorted({t.device.index or 0 for t in [*module.parameters(), *module.buffers()] if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        for submodule in module.modules():
            reset = getattr(submodule, "reset_parameters", None)
            if callable(reset):
                reset()


def mark_expert_parameters(module: nn.Module, group_name: str | None) -> None:
    """DeepSpeed's marks, which the engine and `is_moe_param` read: `allreduce = False` (not averaged over the whole
    data-parallel world) and `group_name` (the expert-data-parallel group, f"ep_size_{ep_size}", to average over)."""
    for param in module.parameters():
        param.allreduce = False  # type: ignore[attr-defined]
        param.group_name = group_name  # type: ignore[attr-defined]


class Experts(nn.Module):
    """`deepspeed_experts`: num_local_experts copies of `expert`, holding global experts `global_ids`.

    `seed` None copies the template unchanged (DeepSpeed's behaviour); the MoE layer passes a seed."""

    def __init__(self, expert: nn.Module, num_local_experts: int = 1, expert_group_name: str | None = None, *,
                 first_global_id: int = 0, seed: int | None = None) -> None:
        super().__init__()
        self.num_local_experts = num_local_experts
        self.global_ids = list(range(first_global_id, first_global_id + num_local_experts))
        copies = []
        for global_id in self.global_ids:
            replica = copy.deepcopy(expert)
            if seed is not None:
                reinitialize(replica, expert_seed(seed, global_id))
            copies.append(replica)
        self.deepspeed_experts = nn.ModuleList(copies)
        mark_expert_parameters(self.deepspeed_experts, expert_group_name)

    def forward(self, inputs: Tensor) -> Tensor:
        """[ep_size, num_local_experts, C, M] -> the same shape; local expert j sees [ep_size, 1, C, M], the tokens
        every rank of the expert-parallel group sent it (the shape DeepSpeed gives an expert)."""
        outputs = []
        for chunk, expert in zip(inputs.chunk(self.num_local_experts, dim=1), self.deepspeed_experts, strict=True):
            out = expert(chunk)
            outputs.append(out[0] if isinstance(out, tuple) else out)  # (output, bias) experts: the bias is ignored
        return torch.cat(outputs, dim=1)
