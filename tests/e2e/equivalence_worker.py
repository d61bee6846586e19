"""Runs under dsrun (or alone for world size 1): trains the same model with every ZeRO stage and accumulation
setting and prints, as JSON, the engine's losses beside a plain single-process PyTorch loop's on the same data."""

import json
import sys

import torch
from torch import nn

import dsrun

STEPS, MICRO, WIDTH = 4, 2, 16


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, WIDTH)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(WIDTH), nn.Linear(WIDTH, WIDTH), nn.GELU())
                                    for _ in range(3))
        self.head = nn.Linear(WIDTH, 1)

    def forward(self, x):
        h = self.embed(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


def global_batch(step, size):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(size, 8, generator=g), torch.randn(size, 1, generator=g)


def reference(accumulation, world, clip):
    """Losses and gradient norms (before clipping) of each step. Adam hardly notices a gradient off by a constant
    factor, so the norms are what catch a wrong average."""
    torch.manual_seed(0)
    model = Model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    losses, norms = [], []
    for step in range(STEPS):
        x, y = global_batch(step, MICRO * accumulation * world)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        norms.append(nn.utils.clip_grad_norm_(model.parameters(), clip if clip else float("inf")).item())
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses, norms


# (label, stage, extra config). Stage 3 twice: all 3 blocks (304 elements each) in one FSDP unit by default, and
# units of 2 + 1 blocks. The scaling variants must not change fp32 results beyond rounding; the bf16 sums must.
VARIANTS = [
    ("z0", 0, {}), ("z1", 1, {}), ("z2", 2, {}), ("z3", 3, {}),
    ("z3 units 2+1", 3, {"zero_optimization": {"stage": 3, "stage3_prefetch_bucket_size": 700}}),
    ("z0 prescale", 0, {"prescale_gradients": True}),
    ("z1 predivide 4", 1, {"gradient_predivide_factor": 4.0}),
    ("z2 predivide 4", 2, {"gradient_predivide_factor": 4.0}),
    ("z0 bf16 sum", 0, {"communication_data_type": "bf16"}),
    ("z2 bf16 sum", 2, {"communication_data_type": "bf16"}),
    ("z3 bf16 sum", 3, {"communication_data_type": "bf16"}),
]


def engine_run(stage, accumulation, clip, extra):
    torch.manual_seed(0)
    model = Model()
    config = {
        "train_micro_batch_size_per_gpu": MICRO,
        "gradient_accumulation_steps": accumulation,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "weight_decay": 0.1}},
        "gradient_clipping": clip,
        "zero_optimization": {"stage": stage},
        **extra,
    }
    engine, _, _, _ = dsrun.initialize(model=model, config=config)
    world, rank = engine.world_size, engine.global_rank
    losses, norms = [], []
    for step in range(STEPS):
        x, y = global_batch(step, MICRO * accumulation * world)
        total = torch.zeros(())
        for micro in range(accumulation):
            k = micro * world + rank  # this rank's slice of the global batch
            loss = nn.functional.mse_loss(engine(x[k * MICRO:(k + 1) * MICRO]), y[k * MICRO:(k + 1) * MICRO])
            engine.backward(loss)
            engine.step()
            total += loss.detach()
        if world > 1:
            torch.distributed.all_reduce(total)
        losses.append(total.item() / (accumulation * world))
        norms.append(engine.get_global_grad_norm())
    return losses, norms


def main():
    clip = float(sys.argv[1]) if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else 0.0
    results = []
    for label, stage, extra in VARIANTS:
        for accumulation in (1, 2):
            losses, norms = engine_run(stage, accumulation, clip, extra)
            world = torch.distributed.get_world_size()
            ref_losses, ref_norms = reference(accumulation, world, clip)
            results.append({"variant": label, "accumulation": accumulation, "world": world, "losses": losses,
                            "reference": ref_losses, "norms": norms, "reference_norms": ref_norms})
    if torch.distributed.get_rank() == 0:
        print("RESULTS " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
