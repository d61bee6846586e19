"""Top-1 and top-2 gating with DeepSpeed's formulas (deepspeed/moe/sharded_moe.py, GShard's algorithm).

For S tokens and E experts, from the gate's fp32 logits [S, E]:
- gates = softmax(logits); each token's first expert is argmax(gates) (top-1 "RSample": argmax(logits + Gumbel));
  top-2's second expert is argmax over the other experts of logits (+ Gumbel noise with top2_2nd_expert_sampling);
- capacity = max(ceil(S / E * capacity_factor), min_capacity), computed in float32 as DeepSpeed does (top-2 uses
  2 * capacity_factor); drop_tokens=False: capacity = the largest expert count, the max over the expert-parallel
  group (so every rank's buffers have the same shape for all_to_all), for top-1 at most S;
- exp_counts = tokens routed to each expert before any is dropped (top-2 counts both routes);
- l_aux = E * sum_e(mean_s gates[s, e] * fraction of tokens whose first expert is e) (top-2 writes it
  mean(...) * E * E, the same value), with the used_token mask applied to the fractions in top-1;
- an expert keeps at most capacity tokens: top-1 with use_rts keeps those with the highest uniform random score,
  without it the earliest; top-2 keeps first routes by position, then second routes after all first routes;
- a kept token's slot in its expert's buffer is its position among the kept tokens of that expert;
- combine weight: top-1 the gate probability itself; top-2 the two kept gate probabilities divided by their sum.

The routes come back sparse (expert, slot, weight per token and route) rather than as DeepSpeed's dense [S, E, C]
combine tensor: dispatching then costs O(S * k * M), not O(S * E * C * M). `dense_combine_weights` rebuilds the
dense form where DeepSpeed's return value is wanted.

One deliberate difference: top-1 without use_rts keeps the earliest tokens of an over-full expert. DeepSpeed calls
torch.topk on the 0/1 mask there, whose choice among equal values is unspecified (and not by position on CPU);
keeping the earliest is what "no random token selection" means in GShard and what top-2 does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Gumbel, Uniform

from dsrun.moe.checks import check_tokens


@dataclass
class Routing:
    """Where each of a gate's S tokens goes, per route (k = 1 or 2 rows)."""

    l_aux: Tensor  # scalar, fp32: the load-balancing loss
    exp_counts: Tensor  # [E] int64: tokens routed to each expert, before drops
    capacity: int  # slots per expert in the dispatch buffer
    experts: Tensor  # [k, S] int64: the expert of each route, -1 where the route was dropped
    locations: Tensor  # [k, S] int64: the slot within that expert's buffer (0 where dropped)
    weights: Tensor  # [k, S] fp32, differentiable: the combine weight of each route (0 where dropped)

    @property
    def num_experts(self) -> int:
        return int(self.exp_counts.numel())


def capacity_for(num_tokens: int, num_experts: int, capacity_factor: float, min_capacity: int) -> int:
    """max(ceil(S / E * capacity_factor), min_capacity), in float32 like DeepSpeed: at exact multiples float64 and
    float32 disagree (S=25, E=2, factor 1.2: 15 in float64, 16 in DeepSpeed)."""
    scaled = torch.tensor(num_tokens / num_experts, dtype=torch.float32) * torch.tensor(capacity_factor)
    return max(int(torch.ceil(scaled)), min_capacity)


def largest_count(exp_counts: Tensor, ep_group: dist.ProcessGroup | None) -> int:
    """drop_tokens=False: the capacity that drops nothing on any rank of the expert-parallel group."""
    largest = exp_counts.max().clone()
    if ep_group is not None and dist.get_world_size(ep_group) > 1:
        dist.all_reduce(largest, op=dist.ReduceOp.MAX, group=ep_group)
    return int(largest)


def _keep_top1(mask: Tensor, capacity: int, use_rts: bool) -> Tensor:
    """The routed tokens each expert keeps: at most `capacity` per column of the [S, E] 0/1 mask."""
    if use_rts:
        scores = mask * uniform_scores(mask.shape, mask.device)
        chosen = torch.topk(scores, k=min(capacity, mask.shape[0]), dim=0).indices
        return mask * torch.zeros_like(mask).scatter_(0, chosen, 1)
    return mask * (torch.cumsum(mask, dim=0) - 1 < capacity)


def top1gating_routes(logits: Tensor, capacity_factor: float, min_capacity: int, used_token: Tensor | None = None,
                      noisy_gate_policy: str | None = None, drop_tokens: bool = True, use_rts: bool = True,
                      ep_group: dist.ProcessGroup | None = None) -> Routing:
    num_tokens, num_experts = logits.shape
    if noisy_gate_policy == "RSample":
        noisy_logits = logits + gumbel_rsample(logits.shape, logits.device)
    gates = F.softmax(logits, dim=1)
    capacity = capacity_for(num_tokens, num_experts, capacity_factor, min_capacity)
    choice = torch.argmax(noisy_logits if noisy_gate_policy == "RSample" else gates, dim=1)
    mask = F.one_hot(choice, num_classes=num_experts)
    if used_token is not None:
        mask = mask * used_token.reshape(-1, 1).to(mask.dtype)
    exp_counts = mask.sum(dim=0).detach()
    if not drop_tokens:
        capacity = min(largest_count(exp_counts, ep_group), num_tokens)
    l_aux = torch.sum(gates.mean(dim=0) * mask.float().mean(dim=0)) * num_experts
    check_tokens(num_tokens, min_capacity)
    kept = _keep_top1(mask, capacity, use_rts)
    slot = ((torch.cumsum(kept, dim=0) - 1) * kept).sum(dim=1)
    expert = torch.where(kept.sum(dim=1) > 0, choice, torch.full_like(choice, -1))
    weight = (gates * kept).sum(dim=1)
    return Routing(l_aux, exp_counts, capacity, expert.unsqueeze(0), slot.unsqueeze(0), weight.unsqueeze(0))


def top2gating_routes(logits: Tensor, capacity_factor: float, min_capacity: int, drop_tokens: bool = True,
                      ep_group: dist.ProcessGroup | None = None, top2_2nd_expert_sampling: bool = True) -> Routing:
    """As DeepSpeed: no used_token masking, no min_capacity check, no random token selection in top-2."""
    num_tokens, num_experts = logits.shape
    gates = F.softmax(logits, dim=1)
    first = torch.argmax(gates, dim=1)
    mask1 = F.one_hot(first, num_classes=num_experts)
    if top2_2nd_expert_sampling:  # the Gumbel-max trick: the second expert is sampled from the remaining softmax
        logits = logits + gumbel_rsample(logits.shape, logits.device)
    second = torch.argmax(logits.masked_fill(mask1.bool(), float("-inf")), dim=1)
    mask2 = F.one_hot(second, num_classes=num_experts)
    slot1 = torch.cumsum(mask1, dim=0) - 1
    slot2 = torch.cumsum(mask2, dim=0) - 1 + mask1.sum(dim=0, keepdim=True)  # second routes queue after all firsts
    l_aux = torch.mean(gates.mean(dim=0) * mask1.float().mean(dim=0)) * num_experts * num_experts
    exp_counts = (mask1 + mask2).sum(dim=0).detach()
    if drop_tokens:
        capacity = capacity_for(num_tokens, num_experts, capacity_factor * 2, min_capacity)
        mask1 = mask1 * (slot1 < capacity)
        mask2 = mask2 * (slot2 < capacity)
    else:
        capacity = largest_count(exp_counts, ep_group)
    gate1 = (gates * mask1).sum(dim=1)
    gate2 = (gates * mask2).sum(dim=1)
    total = torch.clamp(gate1 + gate2, min=torch.finfo(gates.dtype).eps)
    experts = torch.stack([torch.where(mask1.sum(dim=1) > 0, first, torch.full_like(first, -1)),
                           torch.where(mask2.sum(dim=1) > 0, second, torch.full_like(second, -1))])
    slots = torch.stack([(slot1 * mask1).sum(dim=1), (slot2 * mask2).sum(dim=1)])
    return Routing(l_aux, exp_counts, capacity, experts, slots, torch.stack([gate1 / total, gate2 / total]))


def dense_combine_weights(routing: Routing) -> Tensor:
    """DeepSpeed's [S, E, C] combine_weights (its dispatch_mask is `.bool()` of it)."""
    num_tokens = routing.experts.shape[1]
    dense = routing.weights.new_zeros(num_tokens, routing.num_experts, routing.capacity)
    for expert, slot, weight in zip(routing.experts, routing.locations, routing.weights, strict=True):
        kept = expert >= 0
        tokens = torch.arange(num_tokens, device=expert.device)[kept]
        dense = dense.index_put((tokens, expert[kept], slot[kept]), weight[kept], accumulate=True)
    return dense


# ---- noise (noisy_gate_policy) ----

JITTER_EPSILON = 1e-2  # DeepSpeed's multiplicative_jitter default (from the Switch Transformer)


def multiplicative_jitter(x: Tensor, epsilon: float = JITTER_EPSILON) -> Tensor:
    """`x` times a uniform draw in [1 - epsilon, 1 + epsilon) per element ("Jitter" policy, on the gate's input)."""
    if epsilon == 0:
        return x
    low = torch.tensor(1.0 - epsilon, device=x.device)
    high = torch.tensor(1.0 + epsilon, device=x.device)
    return x * Uniform(low, high).rsample(x.shape)


def gumbel_rsample(shape: torch.Size | tuple[int, ...], device: torch.device) -> Tensor:
    """Standard Gumbel noise: added to the logits for the "RSample" policy (top-1) and the second expert (top-2)."""
    zero = torch.tensor(0.0, device=device)
    one = torch.tensor(1.0, device=device)
    return Gumbel(zero, one).rsample(shape)


def uniform_scores(shape: torch.Size | tuple[int, ...], device: torch.device) -> Tensor:
    """Uniform [0, 1) scores for random token selection: which tokens an over-full expert keeps."""
    zero = torch.tensor(0.0, device=device)
    one = torch.tensor(1.0, device=device)
    return Uniform(zero, one).rsample(shape)
