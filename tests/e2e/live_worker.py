"""Under dsrun with 2 ranks and --live: trains a tiny model with dsrun's engine for argv[1] optimizer steps, a short
sleep between them so the live view sees the step advance, and prints one line per step ("rank R step N") for the
view to scroll above its table. Writes its pid to $PID_DIR/rank{RANK}.pid."""

import os
import sys
import time

import torch
from torch import nn

import dsrun

if __name__ == "__main__":
    steps, pause = int(sys.argv[1]), float(sys.argv[2])
    with open(os.path.join(os.environ["PID_DIR"], f"rank{os.environ['RANK']}.pid"), "w") as f:
        f.write(str(os.getpid()))
    config = {"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "SGD", "params": {"lr": 0.05}}}
    engine, *_ = dsrun.initialize(model=nn.Linear(8, 1), config=config)
    for step in range(1, steps + 1):
        engine.backward(engine(torch.randn(4, 8)).pow(2).mean())
        engine.step()
        print(f"rank {engine.global_rank} step {step}", flush=True)
        time.sleep(pause)
