"""What --live costs: the worker's per-step report into its progress slot, and the supervisor's CPU with the view.

    .venv/bin/python bench/live_cost.py [--steps N] [--reps N]

1. ns per heartbeat.report, the 40-byte slot (step, samples, loss, CRC-32) against the 16-byte (step, ~step) slot it
   replaced, and the engine's extra work for the loss on CPU (reading a scalar tensor's value).
2. CPU seconds of the dsrun process itself (all its threads; not the workers, not the watchdog) over a 2-rank job of
   --steps optimizer steps 0.25 s apart (tests/e2e/live_worker.py), with and without --live, both with stdout on a
   pseudo-terminal (--live is off otherwise). Taken with getrusage(RUSAGE_SELF) at the launcher's exit.
Prints the figures; a benchmark measures, it does not judge.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import select
import struct
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dsrun.launcher.node.progress import SLOT_SIZE, ProgressBoard  # noqa: E402
from dsrun.runtime import heartbeat  # noqa: E402

WORKER = REPO / "tests" / "e2e" / "live_worker.py"
OLD_SLOT = struct.Struct("<qq")
# The launcher under a wrapper that writes its own CPU times when it exits.
WRAPPER = """\
import atexit, json, resource, sys

def write_times(path):
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(path, "w") as f:
        json.dump([usage.ru_utime, usage.ru_stime], f)

atexit.register(write_times, sys.argv[1])
sys.argv = ["dsrun", *sys.argv[2:]]
from dsrun.cli import main
main()
"""


def ns_per_call(statement, number: int = 200_000) -> float:
    return min(timeit.repeat(statement, number=number, repeat=5)) / number * 1e9


def report_cost() -> dict:
    board = ProgressBoard([0])
    os.environ["DSRUN_PROGRESS_FD"] = str(os.dup(board.fds[0]))
    heartbeat.start()
    old = mmap.mmap(-1, OLD_SLOT.size)
    step = [0]

    def old_report():
        step[0] += 1
        OLD_SLOT.pack_into(old, 0, step[0], ~step[0])

    def new_report():
        step[0] += 1
        heartbeat.report(step[0], step[0] * 32, 2.5)

    def new_report_no_loss():
        step[0] += 1
        heartbeat.report(step[0], step[0] * 32)

    import torch

    loss = torch.tensor(2.5)
    figures = {
        "old_16_byte_report_ns": ns_per_call(old_report),
        "new_40_byte_report_ns": ns_per_call(new_report),
        "new_report_without_loss_ns": ns_per_call(new_report_no_loss),
        "loss_item_on_cpu_ns": ns_per_call(loss.item),
        "slot_bytes": SLOT_SIZE,
    }
    board.close()
    return figures


def launcher_cpu(live: bool, steps: int) -> dict:
    """Runs the job with stdout and stderr on a pseudo-terminal, draining it; returns the launcher's CPU seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "times.json"
        master, slave = os.openpty()
        env = {**os.environ, "PID_DIR": tmp, "TERM": "xterm-256color", "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-c", WRAPPER, str(out), "--num_gpus", "2", "--no_local_rank",
                   *(["--live"] if live else []), str(WORKER), str(steps), "0.25"]
        started = time.monotonic()
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=REPO)
        os.close(slave)
        while True:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    if not os.read(master, 65536):
                        break
                except OSError:
                    break
            elif proc.poll() is not None:
                break
        proc.wait()
        wall = time.monotonic() - started
        os.close(master)
        user, system = json.loads(out.read_text())
        return {"wall_s": round(wall, 2), "user_s": round(user, 3), "system_s": round(system, 3),
                "cpu_s": round(user + system, 3), "cpu_percent_of_wall": round(100 * (user + system) / wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps({"report": report_cost()}, indent=1))
    for rep in range(args.reps):
        for live in (False, True):
            print(json.dumps({"rep": rep, "live": live, "steps": args.steps, **launcher_cpu(live, args.steps)}))


if __name__ == "__main__":
    main()
