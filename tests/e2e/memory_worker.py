"""Under dsrun: one update per ZeRO stage (and per stage 1-3 with offload_optimizer), printing per-rank model-state
bytes per parameter, measured and as the dry run's estimator predicts them, as JSON."""

import json
import sys

import torch
from torch import nn

import dsrun
from dsrun.launcher.memory.model_state import TrainingShape, estimate


def one_update(stage: int, precision: str, offload: bool) -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(512, 512) for _ in range(8)])
    psi = sum(p.numel() for p in model.parameters())
    config = {"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
              "zero_optimization": {"stage": stage}, "bf16": {"enabled": precision == "bf16"}}
    if offload:
        config["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
    engine, *_ = dsrun.initialize(model=model, config=config)
    engine.track_model_state = True
    loss = engine(torch.randn(4, 512)).float().pow(2).mean()
    engine.backward(loss)
    engine.step()
    shape = TrainingShape(stage=stage, precision=precision, optimizer="adamw", optimizer_states=2, offload=offload,
                          accelerator="cpu", data_parallel=engine.world_size)
    predicted = estimate(shape, psi)
    return {"measured": {k: v / psi for k, v in engine.model_state.items()},
            "estimate": {"total": predicted.total / psi, "formula": predicted.formula},
            "rank": engine.global_rank}


def main():
    precision = sys.argv[1]
    results = {str(stage): one_update(stage, precision, offload=False) for stage in range(4)}
    results.update({f"{stage}+offload": one_update(stage, precision, offload=True) for stage in (1, 2, 3)})
    if results["0"]["rank"] == 0:
        print("RESULTS " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
