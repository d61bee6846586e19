"""A worker without torch for the node agent's --hang-timeout relay: reports step argv[1] through dsrun's heartbeat,
takes SIGUSR1 as dsrun's runtime does (a faulthandler dump on stderr), records its pid and waits in wait_here()."""

import faulthandler
import os
import signal
import sys
import time

from dsrun.runtime import heartbeat


def wait_here():
    time.sleep(60)


if __name__ == "__main__":
    with open(os.path.join(os.environ["PID_DIR"], f"rank{os.environ['RANK']}.pid"), "w") as f:
        f.write(str(os.getpid()))
    faulthandler.register(signal.SIGUSR1, file=2, all_threads=True, chain=False)
    heartbeat.start()
    heartbeat.report(int(sys.argv[1]))
    wait_here()
