"""The names of deepspeed.moe.sharded_moe, for scripts that import them.

top1gating / top2gating return DeepSpeed's dense tuple (l_aux, combine_weights [S, E, C], dispatch_mask, exp_counts);
the layer itself uses the sparse routes of dsrun.moe.gating.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor

from dsrun.moe.gate import TopKGate
from dsrun.moe.gating import Routing, dense_combine_weights, top1gating_routes, top2gating_routes
from dsrun.moe.moe_layer import MOELayer, _AllToAll

__all__ = ["MOELayer", "TopKGate", "_AllToAll", "top1gating", "top2gating"]


def _dense(routing: Routing) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    combine_weights = dense_combine_weights(routing)
    return routing.l_aux, combine_weights, combine_weights.bool(), routing.exp_counts


def top1gating(logits: Tensor, capacity_factor: float, min_capacity: int, used_token: Tensor | None = None,
               noisy_gate_policy: str | None = None, drop_tokens: bool = True, use_rts: bool = True,
               ep_group: dist.ProcessGroup | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _dense(top1gating_routes(logits, capacity_factor, min_capacity, used_token, noisy_gate_policy,
                                    drop_tokens, use_rts, ep_group))


def top2gating(logits: Tensor, capacity_factor: float, min_capacity: int, drop_tokens: bool = True,
               ep_group: dist.ProcessGroup | None = None,
               top2_2nd_expert_sampling: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _dense(top2gating_routes(logits, capacity_factor, min_capacity, drop_tokens, ep_group,
                                    top2_2nd_expert_sampling))
