"""Runs under `dsrun --num_gpus 2`: times engine.save_checkpoint / load_checkpoint of a ~50M-parameter model with
AdamW state against torch.save / torch.load of the same state, A/B interleaved, and prints one JSON line."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import dsrun

WIDTH, LAYERS = 2048, 12  # 12 × (2048² + 2048) ≈ 50.4M parameters


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS)])


def one_step(engine) -> None:
    loss = engine(torch.randn(2, WIDTH)).pow(2).mean()
    engine.backward(loss)
    engine.step()


def timed(fn) -> float:
    dist.barrier()
    start = time.perf_counter()
    fn()
    dist.barrier()
    return time.perf_counter() - start


def main() -> None:
    stage, reps = int(sys.argv[1]), int(sys.argv[2])
    config = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": stage},
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}}}
    engine, *_ = dsrun.initialize(model=make_model(), config=config)
    one_step(engine)  # optimizer state exists
    # The baseline: what a plain PyTorch script does — rank 0 saves the whole model and optimizer, every rank loads.
    plain = make_model()
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-4)
    plain(torch.randn(2, WIDTH)).pow(2).mean().backward()
    plain_opt.step()
    rank = dist.get_rank()
    root = Path(tempfile.mkdtemp(prefix="dsrun-bench-ckpt-")) if rank == 0 else None
    holder = [str(root)]
    dist.broadcast_object_list(holder, src=0)
    root = Path(holder[0])
    baseline_file = root / "plain.pt"

    def torch_save():
        if rank == 0:
            torch.save({"model": plain.state_dict(), "optimizer": plain_opt.state_dict()}, baseline_file)

    def torch_load():  # every rank needs the state back, so every rank loads the file
        state = torch.load(baseline_file)
        plain.load_state_dict(state["model"])
        plain_opt.load_state_dict(state["optimizer"])

    raw = []
    for rep in range(reps):
        order = ["dsrun", "torch"] if rep % 2 == 0 else ["torch", "dsrun"]
        row = {"rep": rep, "order": order}
        for name in order:
            if name == "dsrun":
                row["dsrun_save"] = timed(lambda: engine.save_checkpoint(root / "dsrun", tag="bench"))
                row["dsrun_load"] = timed(lambda: engine.load_checkpoint(root / "dsrun", tag="bench"))
            else:
                row["torch_save"] = timed(torch_save)
                row["torch_load"] = timed(torch_load)
        raw.append(row)
    if rank == 0:
        params = sum(p.numel() for p in plain.parameters())
        size = sum(f.stat().st_size for f in (root / "dsrun" / "bench").rglob("*") if f.is_file())
        print("RESULT " + json.dumps({"stage": stage, "params": params, "dsrun_bytes": size,
                                      "torch_bytes": baseline_file.stat().st_size, "raw": raw}), flush=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
