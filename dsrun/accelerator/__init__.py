"""`dsrun.accelerator`: DeepSpeed's accelerator API (`deepspeed.accelerator.get_accelerator()`) for CUDA and CPU.

Importing this package does not import torch; the accelerator's methods do, when called.
"""

from dsrun.accelerator.base import Accelerator
from dsrun.accelerator.cpu import CPUAccelerator
from dsrun.accelerator.cuda import CUDAAccelerator
from dsrun.accelerator.ops import NoCustomOpError
from dsrun.accelerator.selection import (
    AcceleratorChoiceError,
    get_accelerator,
    is_current_accelerator_supported,
    set_accelerator,
)

# DeepSpeed's names, for scripts that subclass or type-check against them.
DeepSpeedAccelerator = Accelerator
CPU_Accelerator = CPUAccelerator
CUDA_Accelerator = CUDAAccelerator

__all__ = [
    "Accelerator",
    "AcceleratorChoiceError",
    "CPUAccelerator",
    "CPU_Accelerator",
    "CUDAAccelerator",
    "CUDA_Accelerator",
    "DeepSpeedAccelerator",
    "NoCustomOpError",
    "get_accelerator",
    "is_current_accelerator_supported",
    "set_accelerator",
]
