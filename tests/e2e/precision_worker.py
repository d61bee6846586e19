"""Under dsrun: half-precision runs per ZeRO stage, and an fp16 overflow injected on one rank only.

    precision_worker.py train   -> per (precision, stage): losses, finite and falling
    precision_worker.py overflow STAGE -> rank 1's gradients become inf at the 2nd update: every rank must skip it
    precision_worker.py sums  -> bf16 stages 0-1, gradients summed by default and with communication_data_type fp32:
                                 losses, gradient norms and final weights
"""

import json
import sys

import torch
from torch import nn

import dsrun


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 1))


def batch(step):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(4, 8, generator=g)
    return x, x.sum(dim=1, keepdim=True) / 4


def config(stage, precision, **extra):
    return {"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "AdamW", "params": {"lr": 3e-2}},
            "zero_optimization": {"stage": stage}, precision: {"enabled": True, **extra},
            "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 2, "warmup_max_lr": 3e-2}}}


def train():
    results = []
    for precision in ("bf16", "fp16"):
        for stage in (0, 1, 2, 3):
            engine, *_ = dsrun.initialize(model=model(), config=config(stage, precision))
            losses = []
            for step in range(12):
                x, y = batch(step)
                if engine.fp16_enabled():
                    x = x.half()  # what DeepSpeed scripts do; must keep working
                loss = nn.functional.mse_loss(engine(x).float(), y)
                engine.backward(loss)
                engine.step()
                losses.append(loss.item())
            results.append({"precision": precision, "stage": stage, "losses": losses,
                            "skipped": engine.skipped_steps})
    return results


def overflow(stage):
    engine, *_ = dsrun.initialize(model=model(), config=config(stage, "fp16", initial_scale_power=8,
                                                                 hysteresis=1))
    record = []
    for step in range(4):
        x, y = batch(step)
        loss = nn.functional.mse_loss(engine(x).float(), y)
        if step == 1 and engine.global_rank == 1:
            loss = loss * float("inf")
        engine.backward(loss)
        engine.step()
        record.append({"applied": engine.was_step_applied(), "scale": engine.loss_scale, "lr": engine.get_lr()[0],
                       "skipped": engine.skipped_steps, "global_steps": engine.global_steps})
    return record


def sums():
    """Each rank trains on its own data, so the two ranks' gradients differ and their sum is rounded for real."""
    results = {}
    for stage, comm in ((0, None), (0, "fp32"), (1, None), (1, "fp32"), (2, "bf16"), (2, "fp32")):
        extra = {"communication_data_type": comm} if comm else {}
        if stage == 2:  # its shards accumulate each micro-step's sum, where the sum's dtype does show
            extra["gradient_accumulation_steps"] = 2
        engine, *_ = dsrun.initialize(model=model(), config={**config(stage, "bf16"), **extra})
        losses, norms = [], []
        for step in range(8):
            x, y = batch(100 * step + engine.global_rank)
            loss = nn.functional.mse_loss(engine(x).float(), y)
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
            norms.append(engine.get_global_grad_norm())
        weights = [v for p in engine.module.parameters() for v in p.detach().float().flatten().tolist()]
        results[f"z{stage} {comm or 'default'}"] = {"losses": losses, "norms": norms, "weights": weights}
    return results


if __name__ == "__main__":
    modes = {"train": train, "sums": sums}
    result = modes[sys.argv[1]]() if sys.argv[1] in modes else overflow(int(sys.argv[2]))
    import torch.distributed as dist

    print(f"RESULTS {dist.get_rank()} " + json.dumps(result), flush=True)
