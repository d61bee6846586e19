"""Activation checkpointing (dsrun.checkpointing.checkpoint) on a deep transformer-like stack: memory kept for the
backward, peak memory of a step, and step time, without checkpointing and with a checkpoint every block or every 2.

    .venv/bin/python bench/activation_checkpointing.py [--blocks 16] [--batch 4] [--seq 256] [--width 256] [--reps 3]

Memory, two ways, because on the CPU torch has no allocator statistics (no torch.cpu.max_memory_allocated) and
tracemalloc sees only Python's own allocations, not tensors:
- kept after forward: every tensor autograd saves for the backward passes through an outermost
  torch.autograd.graph.saved_tensors_hooks; the distinct storages among them (parameters excluded: they exist
  anyway) are the activation memory a step holds between its forward and its backward. Exact and repeatable. With
  checkpointing, torch's own hook takes what the checkpointed blocks save, so this counts their inputs only.
- peak RSS growth: one forward+backward in a fresh process, after a warm-up step: the kernel's high-water mark of
  its RSS (VmHWM, reset through /proc/self/clear_refs just before the step) minus the RSS then. This is the true
  peak, with the recomputed segment's activations during the backward and the gradients (allocated again). glibc's
  mmap threshold is pinned at 64 KiB there, so freed tensors go back to the system and RSS follows the live
  tensors, not malloc's cache.
  (ru_maxrss would not do: a child starts with its parent's high-water mark, which exec keeps.)
Time: the median of --reps forward+backward passes after a warm-up, the variants taking turns; wall seconds, and CPU
seconds of the process, which other jobs on a shared machine disturb less. Losses and gradients are compared with
the plain run's, with dropout on and the same seed: they must be identical.

cpu_checkpointing is not a row: on a machine without a GPU the saved inputs are in CPU memory already, and
save_on_cpu keeps them as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

import dsrun.checkpointing as ckpt

MiB = 2**20
VARIANTS = {"none": 0, "every block": 1, "every 2 blocks": 2}  # name -> blocks per checkpoint (0: no checkpoint)


@dataclass(frozen=True)
class Shape:
    blocks: int = 16
    batch: int = 4
    seq: int = 256
    width: int = 256
    heads: int = 4
    dropout: float = 0.1


class Block(nn.Module):
    """Pre-LN attention + MLP with dropout on both residual branches."""

    def __init__(self, shape: Shape):
        super().__init__()
        self.heads = shape.heads
        self.ln1, self.ln2 = nn.LayerNorm(shape.width), nn.LayerNorm(shape.width)
        self.qkv, self.proj = nn.Linear(shape.width, 3 * shape.width), nn.Linear(shape.width, shape.width)
        self.mlp = nn.Sequential(nn.Linear(shape.width, 4 * shape.width), nn.GELU(),
                                 nn.Linear(4 * shape.width, shape.width))
        self.drop = nn.Dropout(shape.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time_, width = x.shape
        q, k, v = (t.view(batch, time_, self.heads, -1).transpose(1, 2)
                   for t in self.qkv(self.ln1(x)).split(width, dim=2))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(x.shape)
        x = x + self.drop(self.proj(attended))
        return x + self.drop(self.mlp(self.ln2(x)))


def build(shape: Shape) -> tuple[nn.ModuleList, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    blocks = nn.ModuleList(Block(shape) for _ in range(shape.blocks))
    x = torch.randn(shape.batch, shape.seq, shape.width)
    target = torch.randn(shape.batch, shape.seq, shape.width)
    return blocks, x, target


def forward(blocks: nn.ModuleList, x: torch.Tensor, every: int) -> torch.Tensor:
    if every == 0:
        for block in blocks:
            x = block(x)
        return x
    for start in range(0, len(blocks), every):
        chunk = blocks[start:start + every]
        x = ckpt.checkpoint(lambda h, chunk=chunk: _run(chunk, h), x)
    return x


def _run(chunk: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for block in chunk:
        x = block(x)
    return x


def step(blocks: nn.ModuleList, x: torch.Tensor, target: torch.Tensor, every: int) -> torch.Tensor:
    blocks.zero_grad(set_to_none=True)
    loss = F.mse_loss(forward(blocks, x, every), target)
    loss.backward()
    return loss.detach()


def kept_after_forward(blocks: nn.ModuleList, x: torch.Tensor, target: torch.Tensor, every: int) -> int:
    """Bytes of the distinct non-parameter storages autograd holds for the backward once the forward is done."""
    params = {p.untyped_storage().data_ptr() for p in blocks.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = F.mse_loss(forward(blocks, x, every), target)
    loss.backward()
    blocks.zero_grad(set_to_none=True)
    return sum(storages.values())


def compare(shape: Shape) -> dict[str, dict[str, float]]:
    """Loss and the largest gradient difference of each variant against the plain run, same seed, dropout on."""
    blocks, x, target = build(shape)
    results, reference = {}, None
    for variant, every in VARIANTS.items():
        torch.manual_seed(1)
        loss = step(blocks, x, target, every)
        grads = [p.grad.clone() for p in blocks.parameters() if p.grad is not None]
        if reference is None:
            reference = (loss, grads)
        diff = max((g - r).abs().max().item() for g, r in zip(grads, reference[1], strict=True))
        results[variant] = {"loss": loss.item(), "loss_diff": abs(loss - reference[0]).item(), "grad_diff": diff}
    return results


def timings(shape: Shape, reps: int) -> dict[str, list[tuple[float, float]]]:
    """Per variant, (wall, CPU) seconds of each repetition."""
    blocks, x, target = build(shape)
    seconds: dict[str, list[tuple[float, float]]] = {variant: [] for variant in VARIANTS}
    order = list(VARIANTS)
    for rep in range(reps + 1):  # the first round warms up
        for variant in order[rep % len(order):] + order[:rep % len(order)]:
            wall, cpu = time.perf_counter(), time.process_time()
            step(blocks, x, target, VARIANTS[variant])
            if rep:
                seconds[variant].append((time.perf_counter() - wall, time.process_time() - cpu))
    return seconds


def peak_rss_growth(shape: Shape, variant: str) -> float | None:
    """MiB: one step in a fresh process (see the module docstring); None where the kernel cannot reset the mark."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    proc = subprocess.run([sys.executable, __file__, "--peak-of", variant, "--shape", json.dumps(asdict(shape))],
                          capture_output=True, text=True, env=env, check=True, timeout=600)
    return json.loads(proc.stdout.splitlines()[-1])


def _peak_child(shape: Shape, variant: str) -> None:
    blocks, x, target = build(shape)
    step(blocks, x, target, VARIANTS[variant])  # kernels' first-use buffers and thread pools are not activations
    blocks.zero_grad(set_to_none=True)  # the measured step allocates its gradients again
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # the high-water mark starts again from the RSS of now
    except OSError:
        print(json.dumps(None))
        return
    before = status_kib("VmRSS")
    step(blocks, x, target, VARIANTS[variant])
    print(json.dumps((status_kib("VmHWM") - before) / 1024))


def status_kib(field: str) -> int:
    """A /proc/self/status figure in KiB (VmRSS, VmHWM, RssAnon, ...)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Shape()
    for name in ("blocks", "batch", "seq", "width"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--peak-of", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak_of:
        _peak_child(Shape(**json.loads(args.shape)), args.peak_of)
        return
    shape = Shape(blocks=args.blocks, batch=args.batch, seq=args.seq, width=args.width)
    blocks, x, target = build(shape)
    params = sum(p.numel() for p in blocks.parameters())
    print(f"{shape.blocks} blocks, width {shape.width}, {shape.heads} heads, batch {shape.batch} x seq {shape.seq},"
          f" dropout {shape.dropout}; {params / 1e6:.1f}M parameters ({params * 4 / MiB:.0f} MiB, gradients as much);"
          f" torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    kept = {variant: kept_after_forward(blocks, x, target, every) for variant, every in VARIANTS.items()}
    peaks = {variant: peak_rss_growth(shape, variant) for variant in VARIANTS}
    same = compare(shape)
    seconds = timings(shape, args.reps)

    header = ("variant", "checkpoints", "kept after fwd MiB", "peak RSS growth MiB", "wall s median (min-max)",
              "CPU s median", "loss", "|Δloss|", "max |Δgrad|")
    rows = []
    for variant, every in VARIANTS.items():
        wall = [w for w, _ in seconds[variant]]
        cpu = [c for _, c in seconds[variant]]
        peak = peaks[variant]
        rows.append((variant, str(0 if every == 0 else -(-shape.blocks // every)), f"{kept[variant] / MiB:.1f}",
                     "n/a" if peak is None else f"{peak:.0f}",
                     f"{statistics.median(wall):.2f} ({min(wall):.2f}-{max(wall):.2f})",
                     f"{statistics.median(cpu):.2f}", f"{same[variant]['loss']:.6f}",
                     f"{same[variant]['loss_diff']:.1e}", f"{same[variant]['grad_diff']:.1e}"))
    _print_table(header, rows)


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))

    print(line(header))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


if __name__ == "__main__":
    main()
