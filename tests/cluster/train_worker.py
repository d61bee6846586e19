"""Cross-host training check for the cluster tests: an all-reduce, then a short ZeRO-3 run through
dsrun.initialize (gloo). Prints one JSON line per rank."""

import json

import torch
import torch.distributed as dist
from torch import nn

import dsrun

CONFIG = {
    "train_micro_batch_size_per_gpu": 16,
    "optimizer": {"type": "SGD", "params": {"lr": 0.02}},
    "zero_optimization": {"stage": 3},
}


def main() -> None:
    torch.manual_seed(0)  # the same initial model on every rank
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    full_size = sum(p.numel() for p in model.parameters())
    engine, _, _, _ = dsrun.initialize(model=model, config=CONFIG)
    rank, world = dist.get_rank(), dist.get_world_size()
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    # Each rank its own batch, as in data parallelism; the same batch every step, so the loss must go down.
    x = torch.randn(16, 16, generator=torch.Generator().manual_seed(100 + rank))
    losses = []
    for _ in range(8):
        loss = nn.functional.mse_loss(engine(x), x.sum(dim=1, keepdim=True))
        engine.backward(loss)
        engine.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / world)
    local_size = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel()
                     for p in engine.module.parameters())
    print(json.dumps({"rank": rank, "world": world, "sum": total.item(), "losses": losses, "stage":
                      engine.zero_optimization_stage(), "local_params": local_size, "full_params": full_size}),
          flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
