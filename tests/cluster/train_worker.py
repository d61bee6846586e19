"""Cross-host training check for the cluster tests: an all-reduce, then a few FSDP2 (`fully_shard`, ZeRO-3 style)
steps on a tiny model with gloo. Prints one JSON line per rank.

Plain FSDP2 stands in for dsrun.initialize's ZeRO-3 engine until that lands in dsrun/runtime.
"""

import json

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)

    torch.manual_seed(0)  # the same initial model on every rank; fully_shard then keeps each rank's shard
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    full_size = sum(p.numel() for p in model.parameters())
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02)
    # Each rank its own batch, as in data parallelism; the same batch every step, so the loss must go down.
    x = torch.randn(16, 16, generator=torch.Generator().manual_seed(100 + rank))
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / world)
    local_size = sum(p.to_local().numel() for p in model.parameters())
    print(json.dumps({"rank": rank, "world": world, "sum": total.item(), "losses": losses,
                      "local_params": local_size, "full_params": full_size}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
