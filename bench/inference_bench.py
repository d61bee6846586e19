"""Greedy generate's tokens/s: init_inference at tp_size 1 against plain Hugging Face generate on the same model
(alternated in one process), and at tp_size 2 (2 ranks under dsrun, gloo) against tp_size 1. The two kinds of run
alternate ROUNDS times so machine load hits both; medians (min-max) over every repetition.

    .venv/bin/python bench/inference_bench.py [--rounds 3] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER = str(HERE / "inference_worker.py")


def run(command: list[str]) -> dict:
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"inference_bench: {' '.join(command)} failed:\n{result.stderr[-2000:]}")
    line = next(line for line in result.stdout.splitlines() if "BENCH " in line)
    return json.loads(line.split("BENCH ", 1)[1])


def spread(values: list[float], digits: int = 1) -> str:
    """median (min-max): on a shared machine the best run is what the code does when it gets the cores."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    hf: list[float] = []
    tp1: list[float] = []
    tp2: list[float] = []
    ratios: list[float] = []
    peaks: dict[str, list[float]] = {"tp1": [], "tp2": [], "tp2_meta": []}
    anon: dict[str, list[float]] = {"tp1": [], "tp2": [], "tp2_meta": []}
    with tempfile.TemporaryDirectory() as scratch:
        weights = str(Path(scratch) / "model.safetensors")
        subprocess.run([sys.executable, WORKER, "save", weights], check=True, timeout=600)
        # Once: built on the meta device and read from the file, a rank holds only its share of the split layers.
        meta = run([sys.executable, "-m", "dsrun", "--num_gpus", "2", "--no_local_rank", WORKER, "tp", "1", weights])
        peaks["tp2_meta"] = meta["peak_mib"]
        anon["tp2_meta"] = meta["anon_peak_mib"]
    for _ in range(args.rounds):
        one = run([sys.executable, WORKER, "interleaved", str(args.reps)])
        two = run([sys.executable, "-m", "dsrun", "--num_gpus", "2", "--no_local_rank", WORKER, "tp", str(args.reps)])
        if not one["hf_tokens"] == one["engine_tokens"] == two["tp_tokens"]:
            raise SystemExit("inference_bench: the three runs generated different tokens")
        hf += one["hf"]
        tp1 += one["engine"]
        tp2 += two["tp"]
        ratios += [engine / plain for engine, plain in zip(one["engine"], one["hf"], strict=True)]
        peaks["tp1"] += one["peak_mib"]
        peaks["tp2"] += two["peak_mib"]
        anon["tp1"] += one["anon_peak_mib"]
        anon["tp2"] += two["anon_peak_mib"]
    print(f"plain HF generate       {spread(hf)} tokens/s ({one['threads']} threads)")
    print(f"init_inference tp 1     {spread(tp1)} tokens/s; each / the HF run beside it: {spread(ratios, 2)}x")
    print(f"init_inference tp 2     {spread(tp2)} tokens/s ({two['threads']} thread per rank);"
          f" / tp 1: {statistics.median(tp2) / statistics.median(tp1):.2f}x median, {max(tp2) / max(tp1):.2f}x best")
    print(f"best tp 1 / best HF     {max(tp1) / max(hf):.2f}x")
    for name, figures in (("peak RSS", peaks), ("peak anonymous RSS (no file pages)", anon)):
        print(f"{name} per rank, MiB: tp 1 {max(figures['tp1']):.0f}, tp 2 {max(figures['tp2']):.0f} (each rank"
              f" builds the whole model first), tp 2 from a meta model + .safetensors {max(figures['tp2_meta']):.0f}")


if __name__ == "__main__":
    main()
