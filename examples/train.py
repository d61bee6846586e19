"""A small model on synthetic data that trains in seconds on CPU: `dsrun --num_gpus 2 examples/train.py
--deepspeed_config examples/ds_config.json`.

The model learns a fixed random "teacher" network, so the loss visibly falls. Batch sizes come from the config
(resolved with the same batch math the launcher's dry run prints); the optimizer and LR come from its sections.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dsrun.config import load_config, resolve_batch


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deepspeed_config", "--config", dest="config", default=os.environ.get("DSRUN_CONFIG"))
    parser.add_argument("--local_rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)))
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps")
    return parser.parse_args()


def make_model(width: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(16, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, 1))


def main() -> None:
    args = parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    config = load_config(args.config)
    batch = resolve_batch(config, world)
    if rank == 0:
        print(batch.derivation(), flush=True)

    torch.manual_seed(0)  # same initial weights everywhere; DDP also broadcasts them
    teacher, model = make_model(), make_model()
    model = DistributedDataParallel(model)
    opt_params = config.get("optimizer", {}).get("params", {})
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt_params.get("lr", 1e-3),
                                  weight_decay=opt_params.get("weight_decay", 0.0))
    data = torch.Generator().manual_seed(1234 + rank)  # each rank draws its own share of the global batch
    micro, accumulation = batch.train_micro_batch_size_per_gpu, batch.gradient_accumulation_steps

    for step in range(1, args.steps + 1):
        total = 0.0
        for micro_step in range(accumulation):
            x = torch.randn(micro, 16, generator=data)
            with torch.no_grad():
                y = teacher(x)
            loss = nn.functional.mse_loss(model(x), y) / accumulation
            if micro_step < accumulation - 1:
                with model.no_sync():
                    loss.backward()
            else:
                loss.backward()
            total += loss.item()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        mean = torch.tensor(total)
        dist.all_reduce(mean)
        if rank == 0 and (step == 1 or step % 5 == 0):
            print(f"step {step:3d}  loss {mean.item() / world:.4f}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
