"""A stand-in training script for end-to-end launcher tests: no torch, behaviour chosen by argv[1].

Every worker writes its pid to $PID_DIR/rank{RANK}.pid (and any helper it starts to ...-child.pid) so tests can
check that nothing outlives the launcher.
"""

import json
import os
import signal
import subprocess
import sys
import time

RANK = int(os.environ["RANK"])
PID_DIR = os.environ.get("PID_DIR")


def record(name: str, pid: int) -> None:
    if PID_DIR:
        with open(os.path.join(PID_DIR, name), "w") as f:
            f.write(str(pid))


def main() -> None:
    record(f"rank{RANK}.pid", os.getpid())
    mode, *args = [a for a in sys.argv[1:] if not a.startswith("--local_rank=")]
    if mode == "env":
        keys = sorted(k for k in os.environ if k in json.loads(args[0]))
        print(json.dumps({"env": {k: os.environ[k] for k in keys}, "argv": sys.argv[1:]}))
        print(f"stderr of rank {RANK}", file=sys.stderr)
    elif mode == "fail":  # fail RANK CODE: that rank fails (after a last word on stderr), the others hang
        if RANK == int(args[0]):
            time.sleep(0.5)
            print("something went wrong on purpose", file=sys.stderr)
            code = int(args[1])
            if code < 0:
                os.kill(os.getpid(), -code)
            sys.exit(code)
        time.sleep(600)
    elif mode == "fail-alike":  # every rank fails by itself, one after the other; the last rank with another error
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the teardown must not stop a rank before it fails
        world = int(os.environ["WORLD_SIZE"])
        time.sleep(0.5 + 0.4 * RANK)
        print("Traceback (most recent call last):", file=sys.stderr)
        print("KeyError: 'missing'" if RANK == world - 1 else "ValueError: bad value", file=sys.stderr)
        sys.exit(1)
    elif mode == "ignore-term":  # never dies from SIGTERM; rank 0 then fails to force a teardown
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        if RANK == 0:
            time.sleep(1)
            sys.exit(5)
        time.sleep(600)
    elif mode == "sleep":
        def on_signal(signum, _frame):
            print(f"rank {RANK} got {signal.Signals(signum).name}", flush=True)
            sys.exit(1)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, on_signal)
        print("ready", flush=True)
        time.sleep(600)
    elif mode == "leave-orphan":  # starts a helper in its own session that outlives this worker
        child = subprocess.Popen(["sleep", "600"], start_new_session=True)
        record(f"rank{RANK}-child.pid", child.pid)
        print("left a helper behind", flush=True)
    elif mode == "affinity":
        print(json.dumps({"cores": sorted(os.sched_getaffinity(0)), "omp": os.environ.get("OMP_NUM_THREADS")}))
    elif mode == "lines":  # many long lines from every rank at once
        for i in range(int(args[0])):
            print(f"rank={RANK} line={i} " + "x" * 300)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
