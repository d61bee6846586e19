"""Preemption: SIGTERM to a worker (dsrun forwards it at teardown; Slurm sends it before preempting a job) becomes
"finish this step, save a checkpoint, exit with dsrun.exit_codes.PREEMPTED" when the engine has somewhere to save
(`checkpoint.save_dir`). Without a save directory SIGTERM keeps its default meaning: the process ends at once.

A signal reaches the ranks at slightly different moments, so a rank that saw it cannot simply stop: a rank that did
not would enter the next step's collectives alone and hang. After every optimizer step the ranks therefore agree on
"anyone asked?" with one all-reduce of one number (measured: well under 1% of a step; see bench/README.md), and
all stop at the same step. Further SIGTERMs change nothing; the launcher's SIGKILL after --shutdown-timeout ends a
rank that cannot get there.
"""

from __future__ import annotations

import signal
import threading

import torch
import torch.distributed as dist

from dsrun.runtime.monitor.shutdown import CloseOnExit

_asked = False
_installed = False


def _on_sigterm(signum: int, _frame) -> None:
    # One request, however many copies arrive: under Slurm a worker gets SIGTERM from slurmstepd and again from
    # dsrun's forwarding. What will not wait is ended by the launcher's SIGKILL after --shutdown-timeout.
    global _asked
    _asked = True


def install() -> bool:
    """Take SIGTERM over, unless the script handles it itself (its handler wins) or this is not the main thread
    (Python delivers signals there only). Returns whether SIGTERM now means "save and stop"."""
    global _installed
    if _installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(signal.SIGTERM)
    # The monitor's close-on-signal handler is dsrun's own and may go: a preempted run closes its monitor at exit.
    if current != signal.SIG_DFL and not isinstance(getattr(current, "__self__", None), CloseOnExit):
        return False
    signal.signal(signal.SIGTERM, _on_sigterm)
    _installed = True
    return True


def asked_anywhere(device: torch.device) -> bool:
    """Whether any rank has been asked to stop (a collective: every rank calls it after the same step)."""
    flag = torch.tensor([1 if _asked else 0], dtype=torch.int32, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())

