"""Under dsrun with 2 ranks: a model with an MoE layer trained through dsrun.initialize at ep_size 2 (each rank holds 2
of the 4 experts) against the same model at ep_size 1 in this process, fed every rank's tokens: the objective is the
mean of the ranks' losses, so the reference averages its per-rank losses. Clipping is on, so the global norm must
count each expert once. Then a checkpoint saved at ep_size 2 is loaded into an ep_size 1 model of this process.

Arguments: `train DIR` or `refuse` (ZeRO stage 1 with ep_size 2: one line, exit 2).
Each rank prints `MOEENGINE <rank> <json>`: its losses' and its weights' largest differences from the reference.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import dsrun
from dsrun.moe.layer import MoE
from dsrun.moe.utils import split_params_into_different_moe_groups_for_optimizer

WIDTH, TOKENS, STEPS, EXPERTS = 6, 8, 4, 4


class Net(nn.Module):
    def __init__(self, ep_size: int, **placement):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(WIDTH, WIDTH)
        expert = nn.Sequential(nn.Linear(WIDTH, 8), nn.Tanh(), nn.Linear(8, WIDTH))
        self.moe = MoE(WIDTH, expert, num_experts=EXPERTS, ep_size=ep_size, k=1, drop_tokens=False, **placement)
        self.out = nn.Linear(WIDTH, 1)

    def forward(self, x):
        hidden, l_aux, _ = self.moe(torch.tanh(self.inp(x)))
        return self.out(hidden), l_aux


def loss_of(model, x, y):
    out, l_aux = model(x)
    return nn.functional.mse_loss(out, y) + 0.01 * l_aux


def batch(step: int, rank: int):
    g = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(TOKENS, WIDTH, generator=g), torch.randn(TOKENS, 1, generator=g)


def main() -> None:
    dsrun.init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    model = Net(ep_size=2)
    config = {"train_micro_batch_size_per_gpu": TOKENS, "gradient_clipping": 0.05,
              "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
              "zero_optimization": {"stage": 1 if sys.argv[1] == "refuse" else 0}}
    groups = split_params_into_different_moe_groups_for_optimizer(
        [{"params": list(model.parameters()), "name": "parameters"}])
    engine, _, _, _ = dsrun.initialize(model=model, model_parameters=groups, config=config)

    reference = Net(ep_size=1, rank=0, world_size=1)  # all 4 experts, no communication
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    loss_diff = 0.0
    for step in range(STEPS):
        x, y = batch(step, rank)
        loss = loss_of(engine, x, y)
        engine.backward(loss)
        engine.step()
        optimizer.zero_grad()
        per_rank = [loss_of(reference, *batch(step, r)) for r in range(world)]
        (sum(per_rank) / world).backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.05)
        optimizer.step()
        loss_diff = max(loss_diff, abs(loss.item() - per_rank[rank].item()))

    mine = dict(model.named_parameters())
    theirs = dict(reference.named_parameters())
    slots = "moe.deepspeed_moe.experts.deepspeed_experts."
    weight_diff = 0.0
    for name, param in mine.items():
        if name.startswith(slots):  # this rank's slot j holds global expert ep_rank * 2 + j
            slot, rest = name[len(slots):].split(".", 1)
            name = f"{slots}{model.moe.expert_global_ids[int(slot)]}.{rest}"
        weight_diff = max(weight_diff, (param.detach() - theirs[name].detach()).abs().max().item())

    engine.save_checkpoint(sys.argv[2])
    dist.barrier()
    from dsrun.runtime.checkpoint.consolidate import consolidate

    load_diff = None
    if rank == 0:  # every expert, under its global index, loads into the ep_size 1 model
        consolidate(Path(sys.argv[2]), Path(sys.argv[2]) / "weights.pt")
        fresh = Net(ep_size=1, rank=0, world_size=1)
        fresh.load_state_dict(torch.load(f"{sys.argv[2]}/weights.pt")["module"])
        load_diff = max((a - b).abs().max().item() for a, b in zip(fresh.parameters(), reference.parameters(),
                                                                   strict=True))
    print(f"MOEENGINE {rank} {json.dumps({'loss_diff': loss_diff, 'weight_diff': weight_diff, 'load': load_diff})}",
          flush=True)


if __name__ == "__main__":
    main()
