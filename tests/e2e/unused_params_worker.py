"""Under dsrun with 2 ranks: each rank's forward uses a different branch of the model (the other branch gets no
gradient there). Every stage must still average gradients exactly (prints max |engine - reference| per stage).
Ranks that skip different blocks at stage 3 must be refused: their FSDP units' collectives do not pair up."""

import json
import sys

import torch
from torch import nn

import dsrun


class TwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(4, 4)
        self.a = nn.Linear(4, 1)
        self.b = nn.Linear(4, 1)

    def forward(self, x, branch):
        h = torch.tanh(self.trunk(x))
        return self.a(h) if branch == 0 else self.b(h)


class SkippingStack(nn.Module):
    """Four 72-element blocks; each rank skips a different one (LayerDrop drawn per rank)."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(4))

    def forward(self, x, skip):
        for i, block in enumerate(self.blocks):
            if i != skip:
                x = x + torch.tanh(block(x))
        return x.sum(dim=1, keepdim=True)


def refusal_when_ranks_skip_different_blocks():
    torch.manual_seed(0)
    config = {"train_micro_batch_size_per_gpu": 3, "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
              "zero_optimization": {"stage": 3, "stage3_prefetch_bucket_size": 150}}  # units of 2 + 2 blocks
    engine, *_ = dsrun.initialize(model=SkippingStack(), config=config)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(engine.global_rank))
    try:
        engine.backward(engine(x, 1 + engine.global_rank).pow(2).mean())
    except RuntimeError as err:
        return str(err)
    return "no error"


def data(rank, step):
    g = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(3, 4, generator=g), torch.randn(3, 1, generator=g)


def reference(steps):
    torch.manual_seed(0)
    model = TwoBranches()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        losses = [nn.functional.mse_loss(model(x, r), y) for r, (x, y) in ((r, data(r, step)) for r in (0, 1))]
        (sum(losses) / 2).backward()
        opt.step()
        opt.zero_grad()
    return model.state_dict()


def main():
    steps, diffs = 3, {}
    for stage in range(4):
        torch.manual_seed(0)
        config = {"train_micro_batch_size_per_gpu": 3, "gradient_clipping": 0, "zero_optimization": {"stage": stage},
                  "optimizer": {"type": "SGD", "params": {"lr": 0.1}}}
        engine, *_ = dsrun.initialize(model=TwoBranches(), config=config)
        rank = engine.global_rank
        for step in range(steps):
            x, y = data(rank, step)
            engine.backward(nn.functional.mse_loss(engine(x, rank), y))
            engine.step()
        state = {k: v.full_tensor() if hasattr(v, "full_tensor") else v  # stage 3: DTensor shards
                 for k, v in engine.module.state_dict().items()}
        expected = reference(steps)
        diffs[stage] = max((state[k].float() - expected[k]).abs().max().item() for k in expected)
    diffs["3 skipping"] = refusal_when_ranks_skip_different_blocks()
    if engine.global_rank == 0:
        print("RESULTS " + json.dumps(diffs), flush=True)


def strict(stage: int) -> None:
    """zero_optimization.ignore_unused_parameters false: the first backward that leaves a parameter unused fails."""
    config = {"train_micro_batch_size_per_gpu": 3, "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
              "zero_optimization": {"stage": stage, "ignore_unused_parameters": False}}
    engine, *_ = dsrun.initialize(model=TwoBranches(), config=config)
    x, y = data(engine.global_rank, 0)
    engine.backward(nn.functional.mse_loss(engine(x, engine.global_rank), y))
    engine.step()


if __name__ == "__main__":
    if sys.argv[1:2] == ["strict"]:
        strict(int(sys.argv[2]))
    else:
        main()
