"""Bringing up torch.distributed from whatever started us: dsrun, torchrun, Slurm-less plain `python train.py`.

The launcher's env (RANK, WORLD_SIZE, MASTER_*) is the rendezvous. Without it we are a world of one and make up
a local rendezvous, so a DeepSpeed-style script also runs as a plain single process.
"""

from __future__ import annotations

import atexit
import faulthandler
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from dsrun.console import say
from dsrun.errors import UsageError
from dsrun.runtime import heartbeat


@dataclass(frozen=True)
class Placement:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str


def _wants_cuda() -> bool:
    """The launcher decides CPU vs GPU once for the whole job (--device); a worker follows it, as
    dsrun.accelerator.get_accelerator() does, so a script and the runtime never end up on different devices."""
    from dsrun.accelerator.selection import choose

    if choose() != "cuda":
        return False
    if not torch.cuda.is_available():
        raise UsageError("this worker was started for GPUs, but its torch sees none (a CPU-only torch build, or no"
                         " device visible): install a CUDA build of torch, or launch with --device cpu")
    return True


def _device(local_rank: int) -> torch.device:
    if not _wants_cuda():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise UsageError(f"LOCAL_RANK {local_rank} has no GPU: only {count} visible (CUDA_VISIBLE_DEVICES)")
    # With a node-level CUDA_VISIBLE_DEVICES list, LOCAL_RANK indexes into it.
    return torch.device("cuda", local_rank)


def _fill_single_process_env() -> None:
    if "RANK" in os.environ or "WORLD_SIZE" in os.environ:
        return
    from dsrun.launcher.plan.ports import free_port  # no torch there; just a free local port

    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def _quiet_exit() -> None:
    """Let gloo's worker threads finish before the interpreter shuts down.

    A gloo worker thread drops the last reference to a collective's tensors just after waking the caller; if that
    falls inside interpreter shutdown, it cannot take the GIL, is unwound, and the process aborts ("terminate called
    without an active exception", exit 134; seen in core dumps in ProcessGroupGloo::AsyncWork's destructor). A
    short pause closes that window; destroying the group then joins its threads while Python still runs.
    """
    if dist.is_initialized():
        time.sleep(0.05)
        dist.destroy_process_group()


# Backends that need an accelerator; on a CPU worker a script asking for one of them gets gloo instead.
_ACCELERATOR_BACKENDS = ("nccl", "ccl", "xccl", "hccl")


def _backend(asked: str | None, device: torch.device) -> str:
    if asked is None:
        return "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cpu" and asked.lower() in _ACCELERATOR_BACKENDS:
        # Scripts written for GPUs name "nccl" outright (DeepSpeedExamples do); the job is a CPU job, where gloo is
        # the backend that works, so say so once instead of failing in torch's device checks.
        if os.environ.get("RANK", "0") == "0":
            say(f"note: dist_backend {asked!r} needs GPUs; this job runs on CPU workers, so gloo is used")
        return "gloo"
    return asked


def _stack_on_request() -> None:
    """`kill -USR1 <dsrun pid>` has the launcher send SIGUSR1 to every rank that catches it: this rank then writes
    every thread's Python stack to stderr and goes on. A script that handles SIGUSR1 itself keeps its handler."""
    if signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL and threading.current_thread() is threading.main_thread():
        faulthandler.register(signal.SIGUSR1, file=2, all_threads=True, chain=False)  # fd 2: the launcher's pipe


def init_distributed(
    dist_backend: str | None = None,
    timeout: timedelta = timedelta(minutes=30),
    dist_init_required: bool | None = None,
    **_ignored,
) -> Placement:
    """Initialise the default process group once (DeepSpeed's name and arguments); return where this rank runs."""
    _fill_single_process_env()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before the process group, so NCCL binds the right GPU
    # Before the rendezvous: a rank waiting there for one that never comes can show its stack, and the launcher
    # (--hang-timeout) sees which ranks arrived.
    _stack_on_request()
    heartbeat.start()
    if not dist.is_initialized() and dist_init_required is not False:
        backend = _backend(dist_backend, device)
        dist.init_process_group(backend=backend, timeout=timeout, device_id=device if backend == "nccl" else None)
        atexit.register(_quiet_exit)
    heartbeat.joined()
    if dist.is_initialized():
        return Placement(dist.get_rank(), local_rank, dist.get_world_size(), device, dist.get_backend())
    return Placement(0, local_rank, 1, device, "none")
