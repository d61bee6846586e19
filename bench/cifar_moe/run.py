"""DeepSpeed's CIFAR tutorial in MoE mode under DeepSpeed's launcher and under dsrun, losses and step times compared.

    bench/cifar_moe/run.py --examples DIR [--rev REV] [--pairs 3] [--train-size 768] [--dsrun-python PY]
                           [--peers VENV] [--out DIR]

--examples: a DeepSpeedExamples checkout, or its git directory (then --rev, default HEAD, is read with `git show`).
Its training/cifar/cifar10_deepspeed.py is copied into --out with synthetic_data.patch applied (no internet for the
CIFAR-10 download here; see README.md) and run, unchanged otherwise, with the tutorial's MoE arguments:
DeepSpeed's `deepspeed --num_gpus 2` from the peers venv, and dsrun's `python -m dsrun --num_gpus 2
--deepspeed-alias` (so `import deepspeed` and `from deepspeed.X import Y` load dsrun). Two modes, each with its own
initial weights saved by its first run and loaded by the others: the tutorial's RSample noisy gate, and no noise.
Within a mode the two alternate, pair after pair (the order flipping), so a busy neighbour on the 2-core machine
falls on both; the step time ratio is per pair.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "training/cifar/cifar10_deepspeed.py"
PATCH = Path(__file__).resolve().parent / "synthetic_data.patch"
# The tutorial's run_ds_moe.sh arguments plus the residual MLP; fp32 because fp16 (the script's default) is a GPU
# format and both sides run on CPU.
MOE_ARGS = ["--deepspeed", "--moe", "--ep-world-size", "2", "--num-experts", "2", "--top-k", "1", "--moe-param-group",
            "--mlp-type", "residual", "--dtype", "fp32", "--epochs", "1", "--log-interval", "16"]
MODES = {"rsample": ["--noisy-gate-policy", "RSample"], "no-noise": []}
SKIP = 3  # steps left out of the time per step: the first builds the loader's iterator and the optimizer state
SHOWN = 8  # steps shown side by side


def prepare(examples: Path, rev: str, out: Path) -> Path:
    """The tutorial script with the synthetic data patch, in out/; CRLF line ends (as the repository has them)
    become LF first so the patch applies."""
    if (examples / SCRIPT).is_file():
        text = (examples / SCRIPT).read_text()
    else:
        text = subprocess.run(["git", "--git-dir", str(examples), "show", f"{rev}:{SCRIPT}"], check=True,
                              capture_output=True, text=True).stdout
    out.mkdir(parents=True, exist_ok=True)
    script = out / "cifar10_deepspeed.py"
    script.write_text(text.replace("\r\n", "\n"))
    subprocess.run(["patch", "--quiet", str(script), str(PATCH)], check=True)
    return script


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(impl: str, mode: str, index: int, script: Path, args: argparse.Namespace) -> dict:
    run_dir = args.out / mode / f"{impl}-{index}"
    run_dir.mkdir(parents=True, exist_ok=True)
    for old in run_dir.glob("steps.rank*"):
        old.unlink()
    env = dict(os.environ, DS_ACCELERATOR="cpu", DS_BUILD_OPS="0", OMP_NUM_THREADS="1",
               CIFAR_TRAIN_SIZE=str(args.train_size), CIFAR_INIT_DIR=str(args.out / mode),
               CIFAR_STEP_LOG=str(run_dir / "steps"),
               # This checkout's dsrun first, also for the workers (a venv's editable install may point elsewhere).
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    if impl == "deepspeed":
        command = [str(args.peers / "bin" / "deepspeed"), "--num_gpus", "2", "--master_port", str(_free_port())]
    else:
        command = [str(args.dsrun_python), "-m", "dsrun", "--num_gpus", "2", "--deepspeed-alias"]
    command += [str(script), *MOE_ARGS, *MODES[mode]]
    start = time.perf_counter()
    with open(run_dir / "out.log", "w") as log:
        code = subprocess.run(command, cwd=script.parent, env=env, stdout=log, stderr=subprocess.STDOUT,
                              check=False).returncode
    wall = time.perf_counter() - start
    steps = [[json.loads(line) for line in (run_dir / f"steps.rank{r}").read_text().splitlines()]
             if (run_dir / f"steps.rank{r}").exists() else [] for r in (0, 1)]
    if code != 0:
        tail = (run_dir / "out.log").read_text().splitlines()[-30:]
        print(f"{impl} ({mode}) exited {code}; the end of {run_dir / 'out.log'}:\n" + "\n".join(tail),
              file=sys.stderr)
    per_step = [s["seconds"] for rank in steps for s in rank[SKIP:]]
    return {"impl": impl, "exit": code, "wall": wall, "steps": steps,
            "seconds_per_step": statistics.median(per_step) if per_step else None, "command": command}


def largest_gap(a: dict, b: dict) -> tuple[float | None, int | None]:
    """Largest |loss difference| over both ranks' steps, and the first step where it exceeds 1e-6."""
    gaps = [(s["step"], abs(s["loss"] - t["loss"])) for ra, rb in zip(a["steps"], b["steps"], strict=True)
            for s, t in zip(ra, rb, strict=True)]
    if not gaps:
        return None, None
    first = min((step for step, gap in gaps if gap > 1e-6), default=None)
    return max(gap for _, gap in gaps), first


def report(mode: str, runs: list[dict]) -> dict:
    by = {impl: [r for r in runs if r["impl"] == impl] for impl in ("deepspeed", "dsrun")}
    ds, dr = by["deepspeed"][0], by["dsrun"][0]
    print(f"\n## {mode}: {' '.join(MOE_ARGS + MODES[mode])}")
    print("exit codes: " + ", ".join(f"{r['impl']} {r['exit']}" for r in runs))
    gap, first = largest_gap(ds, dr)
    print(f"first pair, loss per step (rank 0 | rank 1), DeepSpeed vs dsrun; max |Δ| over "
          f"{len(ds['steps'][0])} steps and both ranks {gap:.2e}, first above 1e-6 at step {first}")
    for i in range(min(SHOWN, len(ds["steps"][0]), len(dr["steps"][0]))):
        cells = [f"{ds['steps'][r][i]['loss']:.6f} {dr['steps'][r][i]['loss']:.6f}" for r in (0, 1)]
        print(f"  step {i:2d}  " + "  |  ".join(cells))
    repeat = {impl: max((largest_gap(rs[0], r)[0] or 0.0) for r in rs[1:]) if len(rs) > 1 else None
              for impl, rs in by.items()}
    print("run-to-run max |Δloss| within an implementation: "
          + ", ".join(f"{impl} {value:.1e}" if value is not None else f"{impl} –" for impl, value in repeat.items()))
    ratios = [b["seconds_per_step"] / a["seconds_per_step"] for a, b in zip(by["deepspeed"], by["dsrun"], strict=True)
              if a["seconds_per_step"] and b["seconds_per_step"]]
    ms = {impl: [r["seconds_per_step"] * 1e3 for r in rs if r["seconds_per_step"]] for impl, rs in by.items()}
    for impl, values in ms.items():
        print(f"{impl}: ms/step (median of steps {SKIP}+, both ranks) per run " + ", ".join(f"{v:.1f}" for v in values))
    if ratios:
        print(f"dsrun / DeepSpeed per pair: {', '.join(f'{x:.2f}' for x in ratios)}; median "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})")
    return {"mode": mode, "loss_gap": gap, "first_above_1e-6": first, "run_to_run": repeat, "ratios": ratios,
            "ms_per_step": ms}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=Path, required=True)
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=768, help="synthetic images: 16 per step (train_batch_size)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--dsrun-python", type=Path, default=REPO / ".venv" / "bin" / "python")
    parser.add_argument("--peers", type=Path, default=REPO / "bench" / ".venv-peers", help="the venv with DeepSpeed")
    parser.add_argument("--out", type=Path, default=Path("/tmp/dsrun-cifar-moe"))
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    args.out = args.out.resolve()
    script = prepare(args.examples, args.rev, args.out)
    summaries = []
    for mode in args.modes:
        for stale in (args.out / mode).glob("init_rank*.pt"):
            stale.unlink()  # the first run of this invocation saves the weights every other run starts from
        runs = []
        for pair in range(args.pairs):
            order = ["deepspeed", "dsrun"] if pair % 2 == 0 else ["dsrun", "deepspeed"]
            runs += [run_once(impl, mode, pair, script, args) for impl in order]
        summaries.append(report(mode, runs))
        (args.out / mode / "runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    (args.out / "summary.json").write_text(json.dumps(summaries, indent=1) + "\n")
    return 0 if all(s["loss_gap"] is not None for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
