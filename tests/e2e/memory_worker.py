"""Under dsrun: one update per ZeRO stage, printing per-rank model-state bytes per parameter as JSON."""

import json
import sys

import torch
from torch import nn

import dsrun


def main():
    precision = sys.argv[1]
    results = {}
    for stage in range(4):
        torch.manual_seed(0)
        model = nn.Sequential(*[nn.Linear(512, 512) for _ in range(8)])
        psi = sum(p.numel() for p in model.parameters())
        config = {"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
                  "zero_optimization": {"stage": stage}, "bf16": {"enabled": precision == "bf16"}}
        engine, *_ = dsrun.initialize(model=model, config=config)
        engine.track_model_state = True
        loss = engine(torch.randn(4, 512)).float().pow(2).mean()
        engine.backward(loss)
        engine.step()
        results[stage] = {k: v / psi for k, v in engine.model_state.items()}
    if engine.global_rank == 0:
        print("RESULTS " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
