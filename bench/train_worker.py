"""The worker the train-step and memory benchmarks launch on 2 ranks (`dsrun --num_gpus 2` or `deepspeed`).

    time    every requested (stage, precision) in turn; for each, one trainer per implementation on the same initial
            weights and data, warmed up, then timed in interleaved repetitions (the order rotates every repetition
            so no implementation always runs right after another one). Losses of every micro-batch are kept.
    memory  one implementation, one stage and precision, in a fresh process: model-state bytes counted from the
            tensors during the last update, and the peak RSS of the process.

Rank 0 writes one JSON file with both ranks' figures; the harness (train_step.py, memory.py) summarises it.
"""

from __future__ import annotations

import argparse
import cProfile
import faulthandler
import gc
import io
import os
import pstats
import resource
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # launched as a script: bench/ is on sys.path, the repository root is not
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from bench.models import GPTConfig, TokenBatches, build_model, parameter_count  # noqa: E402
from bench.train_setup import ACCUMULATION, MICRO_BATCH, SEED  # noqa: E402
from bench.workers import gather_and_write  # noqa: E402


def make_trainer(impl: str, stage: int, precision: str, communication_data_type: str | None = None):
    """`communication_data_type` goes into the config dsrun and DeepSpeed read; the hand-written loops keep theirs."""
    model = build_model(GPTConfig(), seed=SEED)
    if impl == "dsrun":
        from bench.engines import DsrunTrainer

        return DsrunTrainer(model, stage, precision, communication_data_type)
    if impl == "deepspeed":
        from bench.engines import DeepSpeedTrainer

        return DeepSpeedTrainer(model, stage, precision, communication_data_type)
    from bench.hand_written import hand_trainer

    return hand_trainer(model, stage, precision)


class Runner:
    """One trainer and where it is in the data: every implementation sees micro-batch k at its k-th micro-step."""

    def __init__(self, trainer, batches: TokenBatches, rank: int):
        self.trainer, self.batches, self.rank = trainer, batches, rank
        self.steps = 0
        self.losses: list[torch.Tensor] = []

    def run(self, steps: int) -> None:
        for _ in range(steps):
            first = self.steps * ACCUMULATION
            micro = [self.batches.get(first + i, self.rank) for i in range(ACCUMULATION)]
            self.losses.extend(self.trainer.step(micro))
            self.steps += 1


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def timed_block(runner: Runner, steps: int) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (all its threads) per step.

    The CPU time barely moves when other jobs share the cores (a waiting collective sleeps, a descheduled rank
    is not charged), so it shows a few percent of overhead that wall time on a busy 2-core machine hides.
    """
    dist.barrier()  # both ranks start together, so one rank's wait for the other is not counted as its speed
    start, cpu_start = time.perf_counter(), time.process_time()
    runner.run(steps)
    cpu = time.process_time() - cpu_start
    dist.barrier()
    return (time.perf_counter() - start) / steps, cpu / steps


def profile_block(runner: Runner, steps: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    runner.run(steps)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


def time_config(args, stage: int, precision: str, batches: TokenBatches, rank: int) -> dict:
    runners: dict[str, Runner] = {}
    errors: dict[str, str] = {}
    for impl in args.impls:
        try:
            runners[impl] = Runner(make_trainer(impl, stage, precision, args.communication_data_type), batches, rank)
        except Exception as err:  # noqa: BLE001 - a peer that cannot run is reported, the others still measured
            if impl != "deepspeed":
                raise
            errors[impl] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
    for runner in runners.values():
        runner.run(args.warmup)  # first steps allocate optimizer state and fill caches: not the steady state
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu_times: dict[str, list[float]] = {name: [] for name in names}
    orders = []
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        orders.append(order)
        for name in order:
            wall, cpu = timed_block(runners[name], args.steps_per_rep)
            times[name].append(wall)
            cpu_times[name].append(cpu)
        if rank == 0:
            shown = ", ".join(f"{n} {times[n][-1]:.3f}" for n in names)
            print(f"  z{stage} {precision} rep {rep + 1}/{args.reps}: {shown} s/step", file=sys.stderr, flush=True)
    profiles = {}
    if args.profile:
        for name in names:
            profiles[name] = profile_block(runners[name], args.steps_per_rep)
    result = {
        "stage": stage,
        "precision": precision,
        "times": times,
        "cpu_times": cpu_times,
        "orders": orders,
        "losses": {name: [float(x) for x in r.losses] for name, r in runners.items()},
        "errors": errors,
        "profiles": profiles,
    }
    del runners
    gc.collect()
    return result


def memory_config(args, batches: TokenBatches, rank: int) -> dict:
    stage, precision, impl = args.stages[0], args.precisions[0], args.impls[0]
    if impl == "deepspeed":
        import deepspeed  # noqa: F401 - its import is part of the baseline, not of training
    else:
        import dsrun  # noqa: F401
    base = rss_bytes()
    trainer = make_trainer(impl, stage, precision, args.communication_data_type)
    runner = Runner(trainer, batches, rank)
    runner.run(args.warmup)
    trainer.track_model_state = impl != "deepspeed"
    runner.run(1)  # the step whose update is counted: every optimizer state exists by now
    return {
        "stage": stage,
        "precision": precision,
        "impl": impl,
        "model_state": trainer.model_state,
        "rss_base": base,
        "rss_peak": peak_rss_bytes(),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("time", "memory"), required=True)
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--impls", nargs="+", default=["dsrun", "hand"])
    parser.add_argument("--communication-data-type", choices=("fp32", "bf16", "fp16"), default=None,
                        help="set in the config of dsrun and DeepSpeed (default: each one's own)")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--steps-per-rep", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="after timing, cProfile one block per implementation")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--local_rank", type=int, default=None, help="passed by the launchers; LOCAL_RANK is used")
    return parser.parse_args()


def main() -> None:
    faulthandler.enable()  # an abort inside torch or gloo then shows the Python stack it happened under
    args = parse_args()
    dist.init_process_group("gloo")  # both engines and the hand-written loops join this one group
    rank, world = dist.get_rank(), dist.get_world_size()
    steps = args.warmup + (args.reps * args.steps_per_rep if args.mode == "time" else 1)
    if args.profile:
        steps += args.steps_per_rep
    batches = TokenBatches(GPTConfig(), MICRO_BATCH, world, steps * ACCUMULATION)
    facts = {
        "world": world,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "parameters": parameter_count(build_model()),
        "torch": torch.__version__,
    }
    if args.mode == "time":
        configs = [time_config(args, s, p, batches, rank) for s in args.stages for p in args.precisions]
        mine = {"configs": configs}
    else:
        mine = memory_config(args, batches, rank)
    gather_and_write(args.out, args.impls, facts, mine)


if __name__ == "__main__":
    main()
