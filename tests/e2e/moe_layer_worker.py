"""Under dsrun: MoE layers with expert parallelism, each checked on every rank against a reference in this process
that holds all experts (ep_size 1, same seed: expert g starts equal whatever the ep size) and runs every rank's tokens
with that rank's noise seed.

Arguments: `compare`, or `error MODE` (a mistake that must end the job with one line).
`compare` runs every case at ep_size 2 and at ep_size 1; each rank prints `MOE <rank> <json>` with, per case:
the largest differences from the reference of its output, l_aux, input gradient and non-expert gradients (its own
tokens' share), of its experts' raw gradients (the sum over its expert-parallel group's tokens) and of its experts'
gradients after `allreduce_expert_gradients` (the average over all ranks' tokens), and its exp_counts.
"""

import json
import sys

import torch
import torch.distributed as dist
from torch import nn

import dsrun
from dsrun.moe.layer import MoE
from dsrun.moe.utils import allreduce_expert_gradients

WIDTH, TOKENS = 6, 16
CASES = {
    "top1": {"k": 1, "num_experts": 4},  # random token selection; capacity 4 of 16 tokens: drops
    "top1-earliest": {"k": 1, "num_experts": 4, "use_rts": False, "capacity_factor": 0.75},
    "top1-rsample": {"k": 1, "num_experts": 4, "noisy_gate_policy": "RSample"},
    "top1-no-drops-jitter": {"k": 1, "num_experts": 4, "drop_tokens": False, "noisy_gate_policy": "Jitter"},
    "top2": {"k": 2, "num_experts": 4, "capacity_factor": 0.75},
    "top2-no-drops-6-experts": {"k": 2, "num_experts": 6, "drop_tokens": False},
    "residual": {"k": 1, "num_experts": 4, "use_residual": True},
}


def template() -> nn.Module:
    return nn.Sequential(nn.Linear(WIDTH, 8), nn.Tanh(), nn.Linear(8, WIDTH))


def biggest(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def run_case(options: dict, ep_size: int) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(11)
    layer = MoE(WIDTH, template(), ep_size=ep_size, min_capacity=0, **options)
    torch.manual_seed(11)
    reference = MoE(WIDTH, template(), ep_size=1, min_capacity=0, rank=0, world_size=1, **options)
    layer.set_deepspeed_parallelism()  # what the engine does at initialize
    torch.manual_seed(5)
    inputs = [torch.randn(TOKENS, WIDTH) for _ in range(world)]
    targets = [torch.randn(TOKENS, WIDTH) for _ in range(world)]

    x = inputs[rank].clone().requires_grad_()
    torch.manual_seed(100 + rank)  # every rank draws its own gate noise and token selection
    output, l_aux, counts = layer(x)
    ((output * targets[rank]).sum() + 0.1 * l_aux).backward()

    expert_sum = {}  # global expert -> {param name: gradient summed over ranks}
    mine = {}
    for source in range(world):  # the reference runs every rank's tokens with that rank's seed
        xr = inputs[source].clone().requires_grad_()
        torch.manual_seed(100 + source)
        out_r, l_aux_r, counts_r = reference(xr)
        ((out_r * targets[source]).sum() + 0.1 * l_aux_r).backward()
        grads = {n: p.grad.clone() for n, p in reference.named_parameters() if p.grad is not None}
        for g, expert in enumerate(reference.deepspeed_moe.experts.deepspeed_experts):
            for n, p in expert.named_parameters():
                expert_sum.setdefault(g, {}).setdefault(n, []).append((source, p.grad.clone()))
        if source == rank:
            mine = {"output": out_r, "l_aux": l_aux_r, "counts": counts_r, "input": xr.grad, "grads": grads}
        reference.zero_grad()

    group_ranks = [r for r in range(world) if r // ep_size == rank // ep_size]  # E+D: consecutive blocks
    local = layer.deepspeed_moe.experts.deepspeed_experts
    raw = averaged = 0.0
    for slot, g in enumerate(layer.expert_global_ids):
        for n, p in local[slot].named_parameters():
            raw = max(raw, biggest(p.grad, sum(grad for r, grad in expert_sum[g][n] if r in group_ranks)))
    allreduce_expert_gradients(layer.parameters())
    for slot, g in enumerate(layer.expert_global_ids):
        for n, p in local[slot].named_parameters():
            averaged = max(averaged, biggest(p.grad, sum(grad for _, grad in expert_sum[g][n]) / world))
    dense = max(biggest(p.grad, mine["grads"][n]) for n, p in layer.named_parameters()
                if ".deepspeed_experts." not in n)
    return {"output": biggest(output, mine["output"]), "l_aux": abs(l_aux.item() - mine["l_aux"].item()),
            "input_grad": biggest(x.grad, mine["input"]), "dense_grads": dense, "expert_raw": raw,
            "expert_averaged": averaged, "counts": counts.tolist(), "counts_equal": bool(torch.equal(
                counts, mine["counts"])), "experts": layer.expert_global_ids}


def compare() -> None:
    dsrun.init_distributed()
    result = {f"{name}@ep{ep}": run_case(options, ep) for ep in (2, 1) for name, options in CASES.items()}
    print(f"MOE {dist.get_rank()} {json.dumps(result)}", flush=True)


def error(mode: str) -> None:
    dsrun.init_distributed()
    if mode == "experts":
        MoE(WIDTH, template(), num_experts=3, ep_size=2)
    if mode == "world":
        MoE(WIDTH, template(), num_experts=4, ep_size=4)
    if mode == "k":
        MoE(WIDTH, template(), num_experts=4, ep_size=2, k=4)
    if mode == "tokens":
        MoE(WIDTH, template(), num_experts=4, ep_size=2, min_capacity=8)(torch.randn(4, WIDTH))


if __name__ == "__main__":
    if sys.argv[1] == "compare":
        compare()
    else:
        error(sys.argv[2])
