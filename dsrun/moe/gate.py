"""TopKGate: DeepSpeed's gate module (a bias-free linear layer to one logit per expert, then top-1 or top-2 gating).

The gate runs in fp32 whatever the model's precision, as DeepSpeed's does: the input and the weight are cast up.
Training uses capacity_factor and the noise policy; eval uses eval_capacity_factor and no Jitter/RSample noise (but
top-2's second-expert sampling and random token selection stay on in eval, as in DeepSpeed).
"""

from __future__ import annotations

import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from dsrun.moe.gating import Routing, multiplicative_jitter, top1gating_routes, top2gating_routes


class TopKGate(nn.Module):
    """`TopKGate(model_dim, num_experts, k=1, capacity_factor=1.0, eval_capacity_factor=1.0, min_capacity=8,
    noisy_gate_policy=None, drop_tokens=True, use_rts=True, ep_group=None, top2_2nd_expert_sampling=True)`.

    forward(input [S, model_dim], used_token=None) returns a `Routing` (DeepSpeed's returns its dense or sparse
    tuple; `dsrun.moe.sharded_moe.top1gating/top2gating` give the dense form)."""

    wg: nn.Linear

    def __init__(self, model_dim: int, num_experts: int, k: int = 1, capacity_factor: float = 1.0,
                 eval_capacity_factor: float = 1.0, min_capacity: int = 8, noisy_gate_policy: str | None = None,
                 drop_tokens: bool = True, use_rts: bool = True, ep_group: dist.ProcessGroup | None = None,
                 top2_2nd_expert_sampling: bool = True) -> None:
        super().__init__()
        self.wg = nn.Linear(model_dim, num_experts, bias=False)
        self.ep_group = ep_group
        self.k = k
        self.capacity_factor = capacity_factor
        self.eval_capacity_factor = eval_capacity_factor
        self.min_capacity = min_capacity
        self.noisy_gate_policy = None if noisy_gate_policy == "None" else noisy_gate_policy
        self.drop_tokens = drop_tokens
        self.use_rts = use_rts
        self.top2_2nd_expert_sampling = top2_2nd_expert_sampling

    def _set_ep_group(self, ep_group: dist.ProcessGroup) -> None:
        self.ep_group = ep_group

    def forward(self, input: Tensor, used_token: Tensor | None = None) -> Routing:
        tokens = input.float()
        if self.noisy_gate_policy == "Jitter" and self.training:
            tokens = multiplicative_jitter(tokens)
        logits = F.linear(tokens, self.wg.weight.float())
        capacity_factor = self.capacity_factor if self.training else self.eval_capacity_factor
        if self.k == 1:
            return top1gating_routes(logits, capacity_factor, self.min_capacity, used_token,
                                     self.noisy_gate_policy if self.training else None, self.drop_tokens,
                                     self.use_rts, self.ep_group)
        return top2gating_routes(logits, capacity_factor, self.min_capacity, self.drop_tokens, self.ep_group,
                                 self.top2_2nd_expert_sampling)
