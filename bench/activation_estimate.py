"""The dry run's activation estimate (`--model ... --model-input`, computed on the meta device) against what a real
forward+backward of the same model needs, with and without activation checkpointing per block.

    .venv/bin/python -m bench.activation_estimate [--batch 8] [--layers 6]

Model: the benchmark GPT (bench/models.py), tokens [batch, context]. Measured two ways in fresh processes:
- saved: the same saved-tensor accounting as the estimate, on real CPU tensors (do meta shapes tell the truth?);
- peak: the high-water mark of the process's RSS during one forward + backward (VmHWM, reset through
  /proc/self/clear_refs after a warm-up step; glibc's mmap threshold pinned at 64 KiB so freed tensors leave RSS),
  minus the RSS before the step. The gradients exist before the step (zeroed, not freed), so the backward adds into
  them and the growth is activations and the backward's temporaries. The backward starts from output.sum(), as the
  estimate's forward ends at the output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch
from torch.utils.checkpoint import checkpoint

from bench.activation_checkpointing import status_kib
from bench.models import GPTConfig, build_model


def _forward(model, tokens: torch.Tensor, checkpointed: bool) -> torch.Tensor:
    positions = torch.arange(tokens.shape[1])
    x = model.tokens(tokens) + model.positions(positions)
    for block in model.blocks:
        x = checkpoint(block, x, use_reentrant=False) if checkpointed else block(x)
    return model.head(model.ln_f(x))


def _child(layers: int, batch: int, checkpointed: bool) -> None:
    torch.manual_seed(0)
    cfg = GPTConfig(layers=layers)
    model = build_model(cfg)
    tokens = torch.randint(cfg.vocab, (batch, cfg.context))
    _forward(model, tokens, checkpointed).sum().backward()  # warm-up: first-call allocations are not activations
    model.zero_grad(set_to_none=False)  # the gradients exist already: the backward adds into them, allocating none
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before = status_kib("VmRSS")
    _forward(model, tokens, checkpointed).sum().backward()
    print(json.dumps((status_kib("VmHWM") - before) * 1024))


def _peak(layers: int, batch: int, checkpointed: bool) -> int:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    command = [sys.executable, "-m", "bench.activation_estimate", "--child", "--layers", str(layers), "--batch",
               str(batch)] + (["--checkpointed"] if checkpointed else [])
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env, timeout=600).stdout
    return int(json.loads(out.strip().splitlines()[-1]))


def measure(layers: int, batch: int) -> dict:
    from dsrun.probe.activations import saved_bytes
    from dsrun.runtime.strategies.fully_sharded import block_runs

    cfg = GPTConfig(layers=layers)
    with torch.device("meta"):
        meta_model = build_model_meta(cfg)
    blocks = [b for run in block_runs(meta_model) for b in run]
    estimate = saved_bytes(meta_model, (torch.empty(batch, cfg.context, dtype=torch.long, device="meta"),), blocks)
    real_model = build_model(cfg)
    real_blocks = [b for run in block_runs(real_model) for b in run]
    real = saved_bytes(real_model, (torch.randint(cfg.vocab, (batch, cfg.context)),), real_blocks)
    peaks = {"without_checkpointing": _peak(layers, batch, False), "with_checkpointing": _peak(layers, batch, True)}
    return {"estimate": estimate, "real_saved": real, "peak": peaks}


def build_model_meta(cfg: GPTConfig):
    from bench.models import GPT

    return GPT(cfg)  # no weight init: meta tensors hold no values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--checkpointed", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        _child(args.layers, args.batch, args.checkpointed)
        return
    result = measure(args.layers, args.batch)
    est, real, peak = result["estimate"], result["real_saved"], result["peak"]
    mib = 2**20
    print(f"GPT {args.layers} layers, tokens {args.batch}x{GPTConfig().context}")
    for label, est_key, peak_key in (("without checkpointing", "saved_bytes", "without_checkpointing"),
                                     ("with checkpointing", "checkpointed_bytes", "with_checkpointing")):
        e, r, p = est[est_key], real[est_key], peak[peak_key]
        print(f"  {label}: estimate {e / mib:.1f} MiB, same count on real tensors {r / mib:.1f} MiB,"
              f" measured peak {p / mib:.1f} MiB; estimate/peak {e / p:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
