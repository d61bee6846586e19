"""`dsrun.runtime.utils`: the helpers DeepSpeed scripts import from `deepspeed.runtime.utils`."""

from __future__ import annotations

import gc
import random

import psutil
import torch
import torch.distributed as dist

from dsrun.utils.logging import logger

_GB = 1024**3


def set_random_seed(seed: int) -> None:
    """Seed Python's, NumPy's (when installed) and torch's generators (torch's seeds every GPU too), as DeepSpeed's
    helper does: the same seed on every rank, no rank offset."""
    random.seed(seed)
    try:
        import numpy
    except ImportError:
        pass
    else:
        numpy.random.seed(seed)
    torch.manual_seed(seed)


def see_memory_usage(message: str, force: bool = False) -> None:
    """Log accelerator memory (allocated / peak / reserved) and the machine's memory, on rank 0, when `force`; then
    start a new peak. Without `force` it does nothing, as in DeepSpeed (callers leave it in and turn it on)."""
    if not force or (dist.is_initialized() and dist.get_rank() != 0):
        return
    gc.collect()
    machine = psutil.virtual_memory()
    line = f"{message} | CPU used {(machine.total - machine.available) / _GB:.2f} GB ({machine.percent:.1f}%)"
    if torch.cuda.is_available():
        cuda = torch.cuda
        figures = (("MA", cuda.memory_allocated()), ("Max_MA", cuda.max_memory_allocated()),
                   ("CA", cuda.memory_reserved()), ("Max_CA", cuda.max_memory_reserved()))
        line += " | " + " ".join(f"{name} {value / _GB:.2f} GB" for name, value in figures)
        torch.cuda.reset_peak_memory_stats()
    else:
        line += f" | process RSS {psutil.Process().memory_info().rss / _GB:.2f} GB"
    logger.info(line)
