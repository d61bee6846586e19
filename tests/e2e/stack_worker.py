"""Under dsrun: prints READY, then waits in a recognisable function until the launcher stops it.

    stack_worker.py runtime   joins through dsrun.init_distributed (which makes SIGUSR1 dump its stack)
    stack_worker.py plain     never touches dsrun (SIGUSR1 would kill it: the launcher must not send it)
"""

import sys
import time


def waiting_for_the_test():
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)


if __name__ == "__main__":
    if sys.argv[1] == "runtime":
        import dsrun

        dsrun.init_distributed()
    print("READY", flush=True)
    waiting_for_the_test()
