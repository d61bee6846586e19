"""Runs under dsrun with 2 ranks: trains a small model with the config's Lamb at ZeRO stages 0-3 (and with gradient
clipping; with a checkpoint directory argument, also saved at stage 2 and resumed at stage 3) on rank-different
data, beside a single-process Lamb on the whole model with the global batch, and prints the largest weight and
trust-ratio differences over both ranks as JSON."""

import json
import sys

import torch
import torch.distributed as dist
from torch import nn

import dsrun
from dsrun.runtime.optim.lamb import Lamb

STEPS, MICRO, WIDTH = 4, 2, 8
LAMB = {"lr": 0.02, "weight_decay": 0.01, "betas": [0.9, 0.99], "eps": 1e-6}


class Model(nn.Module):
    """Parameters with fewer rows than ranks (the head's (1, WIDTH) weight and (1,) bias, a (1,) gain): one rank
    holds no rows of them at stages 1-2, yet their norms must be the whole tensor's."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(5, WIDTH)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Tanh()) for _ in range(2))
        self.head = nn.Linear(WIDTH, 1)
        self.gain = nn.Parameter(torch.tensor([0.7]))  # 1-D: FSDP2 refuses 0-d parameters

    def forward(self, x):
        h = self.embed(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h) * self.gain


def global_batch(step, size):
    g = torch.Generator().manual_seed(500 + step)
    return torch.randn(size, 5, generator=g), torch.randn(size, 1, generator=g)


def reference(world, clip):
    """The whole model in one process, on the whole global batch (the average of the ranks' gradients)."""
    torch.manual_seed(0)
    model = Model()
    opt = Lamb(model.parameters(), **LAMB)
    coeffs = []
    for step in range(STEPS):
        x, y = global_batch(step, MICRO * world)
        nn.functional.mse_loss(model(x), y).backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad()
        coeffs.append(opt.get_lamb_coeffs())
    return {name: p.detach().clone() for name, p in model.named_parameters()}, coeffs


def make_engine(stage, clip, seed=0):
    torch.manual_seed(seed)
    config = {
        "train_micro_batch_size_per_gpu": MICRO,
        "optimizer": {"type": "Lamb", "params": LAMB},
        "gradient_clipping": clip,
        "zero_optimization": {"stage": stage},
    }
    engine, optimizer, _, _ = dsrun.initialize(model=Model(), config=config)
    assert isinstance(optimizer, Lamb)
    if stage in (1, 2) and engine.world_size > 1:
        assert optimizer.norm_group == "world"  # initialize sets it for row shards
    return engine, optimizer


def train(engine, optimizer, steps):
    """Each rank takes its own slice of the global batch; returns each step's trust ratios."""
    world, rank = engine.world_size, engine.global_rank
    coeffs = []
    for step in steps:
        x, y = global_batch(step, MICRO * world)
        mine = slice(rank * MICRO, (rank + 1) * MICRO)
        engine.backward(nn.functional.mse_loss(engine(x[mine]), y[mine]))
        engine.step()
        coeffs.append(optimizer.get_lamb_coeffs())
    return coeffs


def whole_weights(engine):
    # Stage 3's parameters are DTensors: every rank gathers the whole tensors.
    return {name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
            for name, p in engine.module.named_parameters()}


def engine_run(stage, clip):
    engine, optimizer = make_engine(stage, clip)
    coeffs = train(engine, optimizer, range(STEPS))
    return whole_weights(engine), coeffs


def checkpoint_run(directory):
    """Half the steps at stage 2, saved; a fresh, differently initialised stage-3 engine loads them and goes on:
    Lamb's state (a scalar step, exp_avg, exp_avg_sq shaped like the shards) must come back exactly."""
    engine, optimizer = make_engine(2, 0.0)
    coeffs = train(engine, optimizer, range(STEPS // 2))
    engine.save_checkpoint(directory, tag="half")
    engine, optimizer = make_engine(3, 0.0, seed=1)
    engine.load_checkpoint(directory, tag="half")
    coeffs += train(engine, optimizer, range(STEPS // 2, STEPS))
    return whole_weights(engine), coeffs


def compare(label, weights, coeffs, clip):
    want_weights, want_coeffs = reference(dist.get_world_size(), clip)
    assert weights.keys() == want_weights.keys(), (label, sorted(weights), sorted(want_weights))
    weight_diff = max((weights[n] - want_weights[n]).abs().max().item() for n in want_weights)
    coeff_diff = max(abs(a / b - 1) for got, want in zip(coeffs, want_coeffs, strict=True)
                     for a, b in zip(got, want, strict=True))
    # the worst over both ranks: each rank computed its own coefficients and holds its own copy of the weights
    worst = torch.tensor([weight_diff, coeff_diff], dtype=torch.float64)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    # how far the weights moved, so a test can tell a match from "nothing happened"
    moved = max((want_weights[n] - w0).abs().max().item() for n, w0 in initial_weights().items())
    return {"weights": worst[0].item(), "coeffs": worst[1].item(), "moved": moved, "last_coeffs": want_coeffs[-1]}


def initial_weights():
    torch.manual_seed(0)
    return {name: p.detach().clone() for name, p in Model().named_parameters()}


def main():
    results = {}
    for label, stage, clip in [("z0", 0, 0.0), ("z1", 1, 0.0), ("z2", 2, 0.0), ("z3", 3, 0.0),
                               ("z1 clip", 1, 0.05), ("z3 clip", 3, 0.05)]:
        results[label] = compare(label, *engine_run(stage, clip), clip)
    if len(sys.argv) > 1:
        results["z2 saved, z3 loaded"] = compare("checkpoint", *checkpoint_run(sys.argv[1]), 0.0)
    if dist.get_rank() == 0:
        print("RESULTS " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
