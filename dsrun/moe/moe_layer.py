"""MOELayer: gate, dispatch, exchange over the expert-parallel group, experts, exchange back, combine.

The [E, C, M] buffer is ordered by global expert index, so its chunk j (experts j * L .. j * L + L - 1, L local
experts per rank) belongs to expert-parallel rank j: one all_to_all sends every rank's tokens to the rank holding
their expert, and a second one returns the results. Every rank of the group must call forward with the same number
of tokens (the buffers' shapes must match for all_to_all), as in DeepSpeed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dsrun.moe.dispatch import combine, dispatch, route_slots
from dsrun.moe.experts import Experts
from dsrun.moe.gate import TopKGate


class MOELayer(nn.Module):
    """`MOELayer(gate, experts, ep_group_name, ep_size, num_local_experts, use_tutel=False)`; forward(hidden_states,
    used_token=None) returns the output and leaves `l_aux` and `exp_counts` on the layer, as DeepSpeed's."""

    def __init__(self, gate: TopKGate, experts: Experts, ep_group_name: str, ep_size: int, num_local_experts: int,
                 use_tutel: bool = False) -> None:
        super().__init__()
        self.gate = gate
        self.experts = experts
        self.ep_group: dist.ProcessGroup | None = None
        self.ep_group_name = ep_group_name
        self.ep_size = ep_size
        self.num_local_experts = num_local_experts
        self.use_tutel = False  # no tutel kernels here; they would compute the same dispatch
        self.l_aux: Tensor | None = None
        self.exp_counts: Tensor | None = None

    def _set_ep_group(self, ep_group: dist.ProcessGroup) -> None:
        self.ep_group = ep_group
        self.gate._set_ep_group(ep_group)

    def forward(self, hidden_states: Tensor, used_token: Tensor | None = None) -> Tensor:
        width = hidden_states.shape[-1]
        tokens = hidden_states.reshape(-1, width)
        routing = self.gate(tokens, used_token)
        self.l_aux, self.exp_counts = routing.l_aux, routing.exp_counts
        slots = route_slots(routing.experts, routing.locations, routing.num_experts, routing.capacity)
        buffer = dispatch(tokens, slots, routing.num_experts, routing.capacity)
        if self.ep_size > 1:
            assert self.ep_group is not None, "MoE creates its expert-parallel group before the first forward"
            buffer = all_to_all(buffer, self.ep_group)
        # [ep_size, local experts, C, M]: what each rank of the group sent to each local expert
        results = self.experts(buffer.reshape(self.ep_size, self.num_local_experts, -1, width))
        results = results.reshape(self.ep_size * self.num_local_experts, -1, width)
        if self.ep_size > 1:
            assert self.ep_group is not None
            results = all_to_all(results, self.ep_group)
        return combine(results, slots, routing.weights).reshape(hidden_states.shape)


# ---- the exchange between the ranks of an expert-parallel group ----


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, group: dist.ProcessGroup, tensor: Tensor) -> Tensor:
        ctx.group = group
        tensor = tensor.contiguous()
        output = torch.empty_like(tensor)
        dist.all_to_all_single(output, tensor, group=group)
        return output

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Tensor) -> tuple[None, Tensor]:
        return None, _AllToAll.apply(ctx.group, grad_outputs[0])


def all_to_all(tensor: Tensor, group: dist.ProcessGroup) -> Tensor:
    """Exchange equal chunks of dim 0 (its size a multiple of the group's size) between the group's ranks."""
    result: Tensor = _AllToAll.apply(group, tensor)
    return result
