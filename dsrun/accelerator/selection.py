"""Which accelerator this process uses: decided once, from the environment, then shared (DeepSpeed's singleton).

Order: DSRUN_ACCELERATOR, which the dsrun launcher gives every worker from its --device decision (the runtime
places the model and picks nccl/gloo from it too); then DS_ACCELERATOR, DeepSpeed's override, for scripts started
by torchrun or plain python; then CUDA if torch sees a GPU, else CPU.
"""

from __future__ import annotations

import os
from typing import Mapping

from dsrun.accelerator.base import Accelerator
from dsrun.errors import UsageError

ALLOWED = ("cuda", "cpu")
# DeepSpeed's other accelerators, named in the error so a user sees it is a dsrun limit rather than a typo.
_DEEPSPEED_ONLY = ("xpu", "xpu.external", "npu", "mps", "hpu", "mlu", "sdaa")

_current: Accelerator | None = None


class AcceleratorChoiceError(UsageError, ValueError):
    """A bad or contradictory accelerator setting. A ValueError, as DeepSpeed raises for a bad DS_ACCELERATOR."""


def _read(environ: Mapping[str, str], var: str) -> str | None:
    raw = environ.get(var)
    # An empty value is how shell scripts unset a variable they exported earlier.
    if raw is None or not raw.strip():
        return None
    value = raw.strip().lower()
    if value not in ALLOWED:
        why = "a DeepSpeed accelerator dsrun does not implement" if value in _DEEPSPEED_ONLY else "unknown"
        raise AcceleratorChoiceError(f"{var}={raw!r} is {why}: allowed values are {' or '.join(ALLOWED)}")
    return value


def choose(environ: Mapping[str, str] | None = None) -> str:
    """The accelerator name ("cuda" or "cpu") the environment asks for; torch is imported only to auto-detect."""
    env = os.environ if environ is None else environ
    launcher = _read(env, "DSRUN_ACCELERATOR")
    user = _read(env, "DS_ACCELERATOR")
    if launcher and user and launcher != user:
        # Following DS_ACCELERATOR here would leave the script on one device and dsrun's runtime on the other.
        raise AcceleratorChoiceError(
            f"DS_ACCELERATOR={user} but the dsrun launcher started this worker for {launcher} "
            f"(DSRUN_ACCELERATOR={launcher}): launch with `dsrun --device {user}`, or unset DS_ACCELERATOR")
    chosen = launcher or user
    if chosen:
        return chosen
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _build(name: str) -> Accelerator:
    if name == "cuda":
        from dsrun.accelerator.cuda import CUDAAccelerator

        return CUDAAccelerator()
    from dsrun.accelerator.cpu import CPUAccelerator

    return CPUAccelerator()


def get_accelerator() -> Accelerator:
    """This process's accelerator, chosen on the first call (see the module docstring) and the same object after."""
    global _current
    if _current is None:
        _current = _build(choose())
    return _current


def set_accelerator(accelerator: Accelerator) -> None:
    """Use `accelerator` from now on instead of the one chosen from the environment (DeepSpeed's set_accelerator)."""
    global _current
    if not isinstance(accelerator, Accelerator):
        raise TypeError(f"set_accelerator needs a dsrun accelerator (dsrun.accelerator.Accelerator), "
                        f"got {type(accelerator).__name__}")
    _current = accelerator


def is_current_accelerator_supported() -> bool:
    return get_accelerator().device_name() in ALLOWED
