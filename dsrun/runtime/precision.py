"""Which dtypes a run computes, stores and reduces in, decided once from the config's fp16 / bf16 / amp sections.

Mapping (documented in the README):
  fp32            params, grads, optimizer in fp32.
  bf16 / fp16     module params stored in half precision (as DeepSpeed casts the module), fp32 master weights and
                  optimizer state, gradients reduced in fp32; floating inputs cast to the half dtype; fp16 adds
                  DeepSpeed's dynamic loss scaling.
  amp O0          fp32.
  amp O1          fp32 params, forward under torch.autocast(float16), dynamic loss scaling.
  amp O2          as fp16 (half params, fp32 masters, dynamic loss scaling).
  amp O3          pure fp16: half params and optimizer, no master copy, static loss scale 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dsrun.config.run_config import RunConfig
from dsrun.errors import UsageError


@dataclass(frozen=True)
class Precision:
    name: str
    param_dtype: torch.dtype  # what the module's parameters are stored (stages 0-2) or computed (stage 3) in
    master_weights: bool  # the optimizer steps fp32 copies, written back to the half params after each update
    autocast_dtype: torch.dtype | None = None  # forward runs under torch.autocast with this dtype
    loss_scaling: bool = False
    static_loss_scale: float | None = None  # forced static scale (amp O3); None: from the fp16 section

    @property
    def cast_inputs(self) -> bool:
        """Floating inputs are cast to the half parameters' dtype before forward (DeepSpeed's fp16.auto_cast).

        Always on: a half module fed fp32 tensors can only fail, and inputs already in half are left alone.
        """
        return self.half

    @property
    def half(self) -> bool:
        return self.param_dtype != torch.float32


def choose_precision(cfg: RunConfig, device: torch.device) -> Precision:
    if cfg.fp16.enabled:
        precision = Precision("fp16", torch.float16, True, loss_scaling=True)
    elif cfg.bf16.enabled:
        precision = Precision("bf16", torch.bfloat16, True)
    elif cfg.amp.enabled:
        precision = _amp(cfg.amp.opt_level)
    else:
        precision = Precision("fp32", torch.float32, False)
    _check_device_supports(precision, device)
    return precision


def _amp(opt_level: str) -> Precision:
    if opt_level == "O0":
        return Precision("amp-O0", torch.float32, False)
    if opt_level == "O1":
        return Precision("amp-O1", torch.float32, False, autocast_dtype=torch.float16, loss_scaling=True)
    if opt_level == "O2":
        return Precision("amp-O2", torch.float16, True, loss_scaling=True)
    if opt_level == "O3":
        return Precision("amp-O3", torch.float16, False, loss_scaling=True, static_loss_scale=1.0)
    raise UsageError(f"amp.opt_level must be O0, O1, O2 or O3, got {opt_level!r}")


def _check_device_supports(precision: Precision, device: torch.device) -> None:
    if precision.param_dtype == torch.bfloat16 and device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            raise UsageError(
                f"bf16 needs a GPU of compute capability 8.0 or newer; {torch.cuda.get_device_name(device)} is"
                f" {major}.{minor}: use fp16 instead"
            )


def cast_floating(value: Any, dtype: torch.dtype) -> Any:
    """Cast every floating-point tensor inside nested lists, tuples and dicts to `dtype` (fp16.auto_cast)."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        cast = [cast_floating(v, dtype) for v in value]
        return type(value)(cast) if not hasattr(value, "_fields") else type(value)(*cast)
    if isinstance(value, dict):
        return {k: cast_floating(v, dtype) for k, v in value.items()}
    return value
