"""DeepSpeed's top-1 / top-2 gating (deepspeed/moe/sharded_moe.py): dsrun.moe's sparse routes against a reference
written here token by token from DeepSpeed's formulas, and hand-computed cases.

The reference draws its noise from the same torch.distributions calls in the same order as DeepSpeed (Gumbel for
RSample and the second expert, Uniform(0, 1) for random token selection), so the same seed gives the same routes.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Gumbel, Uniform

from dsrun.errors import UsageError
from dsrun.moe.gate import TopKGate
from dsrun.moe.gating import capacity_for, dense_combine_weights, top1gating_routes, top2gating_routes
from dsrun.moe.sharded_moe import top1gating, top2gating


def f32_capacity(tokens: int, experts: int, factor: float, min_capacity: int) -> int:
    """DeepSpeed: torch.ceil((S / E) * torch.tensor(factor)), i.e. in float32, then at least min_capacity."""
    scaled = torch.tensor(tokens / experts, dtype=torch.float32) * torch.tensor(factor, dtype=torch.float32)
    return max(math.ceil(scaled.item()), min_capacity)


def gumbel(shape) -> torch.Tensor:
    return Gumbel(torch.tensor(0.0), torch.tensor(1.0)).rsample(shape)


def uniform(shape) -> torch.Tensor:
    return Uniform(torch.tensor(0.0), torch.tensor(1.0)).rsample(shape)


def reference_top1(logits, capacity_factor, min_capacity, used_token=None, noisy_gate_policy=None, drop_tokens=True,
                   use_rts=True):
    """(l_aux, combine [S, E, C], exp_counts) token by token."""
    tokens, experts = logits.shape
    noise = gumbel(logits.shape) if noisy_gate_policy == "RSample" else None
    gates = F.softmax(logits, dim=1)
    choice = [int(torch.argmax((logits + noise)[s] if noise is not None else gates[s])) for s in range(tokens)]
    used = [True] * tokens if used_token is None else [bool(u) for u in used_token]
    routed = [[s for s in range(tokens) if choice[s] == e and used[s]] for e in range(experts)]
    counts = [len(r) for r in routed]
    capacity = f32_capacity(tokens, experts, capacity_factor, min_capacity)
    if not drop_tokens:
        capacity = min(max(counts), tokens)
    l_aux = sum(gates[:, e].mean() * counts[e] / tokens for e in range(experts)) * experts
    score = uniform((tokens, experts)) if use_rts else None
    combine = torch.zeros(tokens, experts, capacity)
    for e in range(experts):
        if score is not None:  # the highest random scores stay
            kept = sorted(sorted(routed[e], key=lambda s, e=e: -float(score[s, e]))[:capacity])
        else:  # the earliest stay
            kept = routed[e][:capacity]
        for slot, s in enumerate(kept):
            combine[s, e, slot] = gates[s, e]
    return l_aux, combine, torch.tensor(counts)


def reference_top2(logits, capacity_factor, min_capacity, drop_tokens=True, second_expert_sampling=True):
    tokens, experts = logits.shape
    gates = F.softmax(logits, dim=1)
    first = [int(torch.argmax(gates[s])) for s in range(tokens)]
    noisy = (logits + gumbel(logits.shape) if second_expert_sampling else logits).detach()
    second = [max((e for e in range(experts) if e != first[s]), key=lambda e, s=s: float(noisy[s, e]))
              for s in range(tokens)]
    counts = [first.count(e) + second.count(e) for e in range(experts)]
    capacity = f32_capacity(tokens, experts, capacity_factor * 2, min_capacity) if drop_tokens else max(counts)
    firsts = [sum(1 for s in range(tokens) if first[s] == e) / tokens for e in range(experts)]
    l_aux = sum(gates[:, e].mean() * firsts[e] for e in range(experts)) / experts * experts * experts
    # each expert's queue: every first route in token order, then every second route in token order
    queue = {e: [(s, 0) for s in range(tokens) if first[s] == e] + [(s, 1) for s in range(tokens) if second[s] == e]
             for e in range(experts)}
    place = {(s, r): (e, position) for e, entries in queue.items() for position, (s, r) in enumerate(entries)}
    combine = torch.zeros(tokens, experts, capacity)
    for s in range(tokens):
        routes = [place[(s, 0)], place[(s, 1)]]
        kept = [(e, pos, gates[s, e]) for e, pos in routes if pos < capacity]
        if kept:  # the kept gates, normalised to sum 1
            total = torch.clamp(torch.stack([g for _, _, g in kept]).sum(), min=torch.finfo(torch.float32).eps)
            for e, pos, g in kept:
                combine[s, e, pos] = g / total
    return l_aux, combine, torch.tensor(counts)


def logits_for(tokens: int, experts: int, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(tokens, experts) * 2


TOP1_CASES = [  # tokens, experts, capacity_factor, min_capacity, use_rts, drop_tokens, noise, used tokens
    (16, 4, 1.0, 0, True, True, None, False),  # drops, random token selection
    (16, 4, 1.0, 0, False, True, None, False),  # drops, earliest kept
    (16, 4, 1.0, 8, True, True, None, False),  # min_capacity wins: nothing dropped
    (25, 2, 1.2, 0, True, True, None, False),  # the float32 capacity (16, not 15)
    (30, 3, 0.5, 2, True, True, "RSample", False),  # Gumbel noise picks the expert
    (16, 4, 1.0, 0, True, False, None, False),  # drop_tokens=False: capacity = largest count
    (20, 4, 1.0, 0, True, True, None, True),  # used_token masks tokens out
    (20, 4, 0.25, 0, False, False, "RSample", True),
]


@pytest.mark.parametrize(("tokens", "experts", "factor", "min_cap", "rts", "drop", "noise", "masked"), TOP1_CASES)
def test_top1_matches_the_formulas(tokens, experts, factor, min_cap, rts, drop, noise, masked):
    logits = logits_for(tokens, experts)
    used = (torch.arange(tokens) % 3 != 1).long() if masked else None
    torch.manual_seed(5)
    l_aux, combine, counts = reference_top1(logits, factor, min_cap, used, noise, drop, rts)
    torch.manual_seed(5)
    routing = top1gating_routes(logits, factor, min_cap, used, noise, drop, rts)
    assert routing.capacity == combine.shape[2]
    assert torch.equal(routing.exp_counts, counts)
    assert torch.allclose(routing.l_aux, l_aux, atol=1e-6)
    assert torch.allclose(dense_combine_weights(routing), combine, atol=1e-7)
    torch.manual_seed(5)
    ds_l_aux, ds_combine, ds_dispatch, ds_counts = top1gating(logits, factor, min_cap, used, noise, drop, rts)
    assert torch.allclose(ds_combine, combine, atol=1e-7) and torch.equal(ds_dispatch, combine.bool())


TOP2_CASES = [  # tokens, experts, capacity_factor, min_capacity, drop_tokens, second expert sampling
    (16, 4, 1.0, 0, True, True),
    (16, 4, 0.5, 0, True, False),  # tight: first and second routes dropped
    (16, 4, 0.5, 12, True, True),  # min_capacity
    (25, 4, 0.6, 0, True, True),
    (16, 8, 1.0, 0, False, True),  # drop_tokens=False
    (30, 3, 0.3, 0, True, False),
]


@pytest.mark.parametrize(("tokens", "experts", "factor", "min_cap", "drop", "sampling"), TOP2_CASES)
def test_top2_matches_the_formulas(tokens, experts, factor, min_cap, drop, sampling):
    logits = logits_for(tokens, experts, seed=1)
    torch.manual_seed(9)
    l_aux, combine, counts = reference_top2(logits, factor, min_cap, drop, sampling)
    torch.manual_seed(9)
    routing = top2gating_routes(logits, factor, min_cap, drop, None, sampling)
    assert routing.capacity == combine.shape[2]
    assert torch.equal(routing.exp_counts, counts)
    assert torch.allclose(routing.l_aux, l_aux, atol=1e-6)
    assert torch.allclose(dense_combine_weights(routing), combine, atol=1e-6)
    torch.manual_seed(9)
    assert torch.allclose(top2gating(logits, factor, min_cap, drop, None, sampling)[1], combine, atol=1e-6)


# Four tokens, two experts: gates (0.75, 0.25) for tokens 0-2, (0.25, 0.75) for token 3.
HAND = torch.log(torch.tensor([[3.0, 1.0], [3.0, 1.0], [3.0, 1.0], [1.0, 3.0]]))


def test_top1_by_hand():
    routing = top1gating_routes(HAND, 1.0, 0, use_rts=False)
    # capacity ceil(4 / 2 * 1.0) = 2: expert 0 is routed 3 tokens and keeps the first two
    assert routing.capacity == 2
    assert routing.exp_counts.tolist() == [3, 1]
    assert routing.experts.tolist() == [[0, 0, -1, 1]]
    assert routing.locations.tolist() == [[0, 1, 0, 0]]
    assert torch.allclose(routing.weights, torch.tensor([[0.75, 0.75, 0.0, 0.75]]))
    # me = (0.625, 0.375), ce = (3/4, 1/4): l_aux = (0.625 * 0.75 + 0.375 * 0.25) * 2
    assert routing.l_aux.item() == pytest.approx(1.125)
    assert top1gating_routes(HAND, 1.0, 3, use_rts=False).experts.tolist() == [[0, 0, 0, 1]]  # min_capacity 3
    assert top1gating_routes(HAND, 1.0, 0, use_rts=False, drop_tokens=False).capacity == 3
    masked = top1gating_routes(HAND, 1.0, 0, used_token=torch.tensor([0, 1, 1, 1]), use_rts=False)
    assert masked.experts.tolist() == [[-1, 0, 0, 1]] and masked.exp_counts.tolist() == [2, 1]
    assert masked.l_aux.item() == pytest.approx((0.625 * 0.5 + 0.375 * 0.25) * 2)


def test_top2_by_hand():
    routing = top2gating_routes(HAND, 1.0, 0, top2_2nd_expert_sampling=False)
    # capacity ceil(4 / 2 * 2) = 4: every route fits; seconds queue after all firsts
    assert routing.capacity == 4 and routing.exp_counts.tolist() == [4, 4]
    assert routing.experts.tolist() == [[0, 0, 0, 1], [1, 1, 1, 0]]
    assert routing.locations.tolist() == [[0, 1, 2, 0], [1, 2, 3, 3]]
    assert torch.allclose(routing.weights, torch.tensor([[0.75] * 4, [0.25] * 4]))
    assert routing.l_aux.item() == pytest.approx(1.125)  # mean(me * ce) * E * E: the top-1 value
    tight = top2gating_routes(HAND, 0.5, 0, top2_2nd_expert_sampling=False)
    # capacity 2. Expert 0: firsts 0, 1 kept, first 2 and token 3's second dropped. Expert 1: token 3's first and
    # token 0's second kept. A token left with one route gets weight 1; token 2 lost both.
    assert tight.capacity == 2
    assert tight.experts.tolist() == [[0, 0, -1, 1], [1, -1, -1, -1]]
    assert torch.allclose(tight.weights, torch.tensor([[0.75, 1.0, 0.0, 1.0], [0.25, 0.0, 0.0, 0.0]]))


def test_capacity_is_computed_in_float32_like_deepspeed():
    assert capacity_for(25, 2, 1.2, 0) == 16  # 15.0 in float64, 15.000001 in float32
    assert capacity_for(35, 3, 1.2, 0) == 15
    assert capacity_for(8, 4, 1.0, 4) == 4 and capacity_for(8, 4, 1.0, 0) == 2


def test_fewer_tokens_than_min_capacity_is_one_line():
    with pytest.raises(UsageError, match="3 tokens reach the layer, fewer than min_capacity=4") as info:
        top1gating_routes(logits_for(3, 2), 1.0, 4)
    assert "\n" not in str(info.value)


def test_gate_noise_and_capacity_follow_train_and_eval():
    torch.manual_seed(0)
    gate = TopKGate(6, 4, k=1, capacity_factor=0.5, eval_capacity_factor=2.0, min_capacity=0,
                    noisy_gate_policy="Jitter", use_rts=False)
    x = torch.randn(12, 6)
    logits = x @ gate.wg.weight.t()
    gate.eval()  # no jitter, eval_capacity_factor
    routing = gate(x)
    assert routing.capacity == 6
    assert torch.equal(routing.experts, top1gating_routes(logits, 2.0, 0, use_rts=False).experts)
    gate.train()  # jitter: the input times Uniform(0.99, 1.01), drawn first
    torch.manual_seed(3)
    jittered = x * Uniform(torch.tensor(0.99), torch.tensor(1.01)).rsample(x.shape)
    expected = top1gating_routes(jittered @ gate.wg.weight.t(), 0.5, 0, use_rts=False)
    torch.manual_seed(3)
    routing = gate(x)
    assert routing.capacity == 2 and torch.allclose(routing.weights, expected.weights)
    assert not torch.allclose(routing.weights, top1gating_routes(logits, 0.5, 0, use_rts=False).weights)


def test_rsample_noise_only_in_training():
    torch.manual_seed(0)
    gate = TopKGate(6, 4, k=1, min_capacity=0, noisy_gate_policy="RSample", use_rts=False, capacity_factor=4.0,
                    eval_capacity_factor=4.0)
    x = torch.randn(64, 6)
    clean = gate.eval()(x).experts
    assert torch.equal(clean[0], torch.argmax(x @ gate.wg.weight.t(), dim=1))
    assert not torch.equal(gate.train()(x).experts, clean)  # Gumbel noise changes some choices


def test_gate_runs_in_fp32_for_half_inputs():
    torch.manual_seed(0)
    gate = TopKGate(6, 4, k=2, min_capacity=0).to(torch.bfloat16)
    routing = gate(torch.randn(8, 6, dtype=torch.bfloat16))
    assert routing.weights.dtype == torch.float32 and routing.l_aux.dtype == torch.float32
