"""A small model on synthetic data that trains in seconds on CPU, written as a DeepSpeed script would be:

    dsrun --num_gpus 2 examples/train.py --deepspeed_config examples/ds_config.json

The model learns a fixed random "teacher" network, so the loss visibly falls. The config decides the batch sizes,
ZeRO stage, precision, optimizer and LR schedule; the engine prints progress every `steps_per_print` steps.
`import dsrun as deepspeed` would let the same lines run an existing DeepSpeed script.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import TensorDataset

import dsrun


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps")
    dsrun.add_config_arguments(parser)
    return parser.parse_args()


class MLP(nn.Module):
    def __init__(self, width: int = 64, depth: int = 3):
        super().__init__()
        self.inp = nn.Linear(16, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
                                    for _ in range(depth))
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


def synthetic_data(samples: int = 8192) -> TensorDataset:
    generator = torch.Generator().manual_seed(1234)
    teacher = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1))
    with torch.no_grad():
        for param in teacher.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) / param.shape[-1] ** 0.5)
        x = torch.randn(samples, 16, generator=generator)
        return TensorDataset(x, teacher(x))


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)  # the same initial weights on every rank
    engine, _, loader, _ = dsrun.initialize(args=args, model=MLP(), training_data=synthetic_data())
    batches = dsrun.utils.RepeatingLoader(loader)
    for _ in range(args.steps * engine.gradient_accumulation_steps()):
        x, y = next(batches)
        loss = nn.functional.mse_loss(engine(x), y.to(x.dtype))
        engine.backward(loss)
        engine.step()
    if engine.global_rank == 0:
        print(f"done: {engine.global_steps} steps, {engine.global_samples} samples, "
              f"train_batch_size {engine.train_batch_size()}", flush=True)


if __name__ == "__main__":
    main()
