"""Starting bench/train_worker.py on 2 ranks, and deciding whether DeepSpeed takes part.

DeepSpeed takes part only when the interpreter running the harness can import it: that is the peers venv of
`make bench-peers` (bench/.venv-peers), never the project's .venv. There the worker pair is started with DeepSpeed's
own launcher and runs all three implementations side by side; otherwise dsrun starts it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.timing import BenchError

WORKER = Path(__file__).resolve().parent / "train_worker.py"
RANKS = 2
# A full train-step run with DeepSpeed is several minutes, and DeepSpeed's first start JIT-compiles its ops.
TIMEOUT_SECONDS = 3600
PEERS_HINT = "run `make bench-peers` to include DeepSpeed (it installs it into bench/.venv-peers, not into .venv)"


def deepspeed_available() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def _launcher_env() -> dict[str, str]:
    env = dict(os.environ)
    # dsrun gives each local worker its share of the cores; DeepSpeed's launcher sets nothing without
    # --bind_cores_to_rank, and torch would then start 2 threads per rank on 2 cores. Same share for both.
    env.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // RANKS)))
    env.setdefault("DS_ACCELERATOR", "cpu")  # otherwise DeepSpeed looks for CUDA and fails on this machine
    env.setdefault("DS_BUILD_OPS", "0")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(worker_args: list[str], with_deepspeed: bool, worker: Path = WORKER) -> list[str]:
    bindir = Path(sys.executable).parent  # the venv of the harness: its dsrun, or the peers venv's deepspeed
    if with_deepspeed:
        # DeepSpeed's launcher always uses port 29500, which tests running beside the benchmark may hold.
        return [str(bindir / "deepspeed"), "--num_gpus", str(RANKS), "--master_port", str(_free_port()),
                str(worker), *worker_args]
    return [str(bindir / "dsrun"), "--num_gpus", str(RANKS), str(worker), *worker_args]


def run_worker(worker_args: list[str], with_deepspeed: bool, cwd: Path, attempts: int = 2,
               worker: Path = WORKER) -> dict:
    """Run one worker pair (`worker`: train_worker.py unless another is given); return the JSON rank 0 wrote. Its
    output goes to the terminal (progress, errors).

    A failed pair is started once more: a rare abort at exit ("terminate called without an active exception",
    seen once in ~40 runs, not reproduced in the next 3) should not throw away a whole benchmark run. Every
    failure stays visible, on the terminal and in the result's "failed_attempts".
    """
    failures: list[str] = []
    for _ in range(attempts):
        with tempfile.TemporaryDirectory(prefix="dsrun-bench-") as tmp:
            out = Path(tmp) / "result.json"
            command = launch_command([*worker_args, "--out", str(out)], with_deepspeed, worker)
            try:
                proc = subprocess.run(command, cwd=cwd, env=_launcher_env(), timeout=TIMEOUT_SECONDS, check=False,
                                      stdout=sys.stderr)
            except subprocess.TimeoutExpired:
                raise BenchError(f"{' '.join(command)} did not finish in {TIMEOUT_SECONDS} s") from None
            if proc.returncode == 0 and out.exists():
                result = json.loads(out.read_text())
                result["command"] = command
                result["failed_attempts"] = failures
                return result
            failures.append(f"{' '.join(command)} exited {proc.returncode}")
            print(f"bench: {failures[-1]} (its output is above)", file=sys.stderr)
    raise BenchError(f"{failures[-1]}, {attempts} times (its output is above)")


def gather_and_write(out, impls, facts: dict, mine: dict) -> None:
    """In a benchmark worker: every rank's measurements to rank 0, which writes them with the facts (and DeepSpeed's
    version when it ran) as one JSON line; then the process group ends."""

    import torch.distributed as dist

    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    if dist.get_rank() == 0:
        if "deepspeed" in impls:
            import deepspeed

            facts["deepspeed"] = deepspeed.__version__
        out.write_text(json.dumps({"facts": facts, "ranks": every}) + "\n")
    dist.barrier()
    dist.destroy_process_group()
