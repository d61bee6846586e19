"""Moving tokens into the experts' [E, C, M] buffer and the experts' results back, from sparse routes.

A route's flat slot is expert * C + location; dropped routes point at one extra scratch slot (index E * C) that
holds zeros and is never read back, so neither direction needs a data-dependent branch or a host sync. Both are
gathers (index_select), whose backward is the matching scatter-add: autograd takes the gradients through as the
dense einsums of DeepSpeed's formulation would, at O(S * k * M) instead of O(S * E * C * M).
"""

from __future__ import annotations

import torch
from torch import Tensor


def route_slots(experts: Tensor, locations: Tensor, num_experts: int, capacity: int) -> Tensor:
    """[k, S] flat slot of every route in the [E * C] buffer; num_experts * capacity (scratch) where dropped."""
    slots = experts * capacity + locations
    return torch.where(experts >= 0, slots, torch.full_like(slots, num_experts * capacity))


def dispatch(tokens: Tensor, slots: Tensor, num_experts: int, capacity: int) -> Tensor:
    """[S, M] tokens -> [E, C, M] buffer; empty slots are zero rows."""
    num_tokens, width = tokens.shape
    num_slots = num_experts * capacity
    # source[slot] = the token filling it, or num_tokens (a zero row) where none does; kept slots are distinct, only
    # the scratch slot is written more than once and it is cut off.
    source = torch.full((num_slots + 1,), num_tokens, dtype=torch.long, device=tokens.device)
    token_ids = torch.arange(num_tokens, device=tokens.device).expand_as(slots)
    source.scatter_(0, slots.reshape(-1), token_ids.reshape(-1))
    padded = torch.cat([tokens, tokens.new_zeros(1, width)])
    return padded.index_select(0, source[:num_slots]).view(num_experts, capacity, width)


def combine(expert_output: Tensor, slots: Tensor, weights: Tensor) -> Tensor:
    """[E, C, M] expert results -> [S, M]: each token's routes weighted by their combine weights and summed.

    The weights are fp32 (the gate's precision), so the sum over routes accumulates in fp32; the result is cast to
    the experts' dtype, as DeepSpeed does."""
    width = expert_output.shape[-1]
    flat = expert_output.reshape(-1, width)
    padded = torch.cat([flat, flat.new_zeros(1, width)])
    routed = padded.index_select(0, slots.reshape(-1)).view(*slots.shape, width)
    return (routed * weights.unsqueeze(-1)).sum(dim=0).to(expert_output.dtype)
