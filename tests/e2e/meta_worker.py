"""Under dsrun: a model built on the meta device trains at every ZeRO stage; prints the first and last losses."""

import json

import torch
from torch import nn

import dsrun


def main():
    results = {}
    for stage in range(4):
        with torch.device("meta"):
            model = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 1))
        config = {"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": stage},
                  "optimizer": {"type": "AdamW", "params": {"lr": 1e-2}}}
        engine, *_ = dsrun.initialize(model=model, config=config)
        generator = torch.Generator().manual_seed(engine.global_rank)
        losses = []
        for _ in range(40):
            x = torch.randn(4, 8, generator=generator)
            loss = nn.functional.mse_loss(engine(x), x.sum(1, keepdim=True))
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
        results[stage] = [sum(losses[:5]), sum(losses[-5:])]
    if engine.global_rank == 0:
        print("RESULTS " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
