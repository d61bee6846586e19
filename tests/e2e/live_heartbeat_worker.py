"""A worker without torch for --live over SSH and Slurm: reports argv[1] steps through dsrun's heartbeat (as the
engine does: step, samples, loss), argv[2] seconds apart, printing "rank R step N" after each. Records its pid."""

import os
import sys
import time

from dsrun.runtime import heartbeat

if __name__ == "__main__":
    steps, pause = int(sys.argv[1]), float(sys.argv[2])
    rank = os.environ["RANK"]
    with open(os.path.join(os.environ["PID_DIR"], f"rank{rank}.pid"), "w") as f:
        f.write(str(os.getpid()))
    heartbeat.start()
    heartbeat.joined()
    for step in range(1, steps + 1):
        time.sleep(pause)
        heartbeat.report(step, step * 8, 1.0 / step)
        print(f"rank {rank} step {step}", flush=True)
