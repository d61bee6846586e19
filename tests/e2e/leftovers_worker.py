"""A worker that starts processes of every kind that could outlive dsrun, records their pids, then waits.

Each rank writes $PID_DIR/rank{RANK}-{kind}.pid for itself and for
- child: a grandchild of dsrun (`sleep`),
- session: a grandchild in a new session (start_new_session=True),
- bare: a grandchild started with an empty environment, in the worker's process group,
- grandchild: a great-grandchild, started by a middle process (`middle`) that stays alive,
- bare-session: a great-grandchild with an empty environment in a new session, whose parent (`middle`) lives.
Then it prints "ready" and sleeps until $PID_DIR/release appears (or for ever), and exits 0.
No torch: this is about processes only.
"""

import os
import subprocess
import sys
import time

RANK = os.environ["RANK"]
PID_DIR = os.environ["PID_DIR"]
SLEEP = ["sleep", "300"]
MIDDLE = """
import subprocess, sys
plain = subprocess.Popen(["sleep", "300"])
bare = subprocess.Popen(["/bin/sleep", "300"], env={}, start_new_session=True)
print(plain.pid, bare.pid, flush=True)
plain.wait()
"""


def record(kind: str, pid: int) -> None:
    path = os.path.join(PID_DIR, f"rank{RANK}-{kind}.pid")
    with open(path + ".tmp", "w") as f:
        f.write(str(pid))
    os.rename(path + ".tmp", path)  # a test polling the directory never reads a half-written file


def main() -> None:
    started = {
        "child": subprocess.Popen(SLEEP),
        "session": subprocess.Popen(SLEEP, start_new_session=True),
        "bare": subprocess.Popen(["/bin/sleep", "300"], env={}),
        "middle": subprocess.Popen([sys.executable, "-c", MIDDLE], stdout=subprocess.PIPE, text=True),
    }
    grandchild, bare_session = started["middle"].stdout.readline().split()
    for kind, proc in started.items():
        record(kind, proc.pid)
    record("grandchild", int(grandchild))
    record("bare-session", int(bare_session))
    record("worker", os.getpid())
    print("ready", flush=True)
    release = os.path.join(PID_DIR, "release")
    while not os.path.exists(release):
        time.sleep(0.05)


if __name__ == "__main__":
    main()
