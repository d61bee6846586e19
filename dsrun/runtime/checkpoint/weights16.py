"""engine.save_16bit_model: the model's weights as one plain state-dict file, in the training dtype (DeepSpeed's
"16-bit" model: fp16/bf16 when training in half precision, fp32 otherwise), loadable with model.load_state_dict.

Every rank must call it: at stage 3 each parameter is gathered from its shards (one at a time, straight to rank 0's
CPU memory, so no rank holds the whole model on its device). As in DeepSpeed, stage 3 writes the file only when
zero_optimization.stage3_gather_16bit_weights_on_model_save is true; otherwise it says so and returns False.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from dsrun.console import say
from dsrun.runtime.checkpoint.state import frozen_parameter_names

if TYPE_CHECKING:
    from dsrun.runtime.engine import Engine  # the engine imports these modules itself


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def sixteen_bit_state(engine: Engine, exclude_frozen_parameters: bool = False) -> dict[str, torch.Tensor] | None:
    """The module's state dict, whole, on the CPU, floating tensors in the training dtype; on rank 0 only (at stage 3
    the other ranks take part in gathering each parameter and keep nothing). None on the other ranks."""
    keep = engine.global_rank == 0
    if not keep and engine.zero_optimization_stage() < 3:
        return None  # nothing to gather: rank 0 holds every parameter whole
    dtype = engine.precision.param_dtype if engine.precision.half else None
    frozen = frozen_parameter_names(engine.module)
    state = {}
    for name, value in engine.module.state_dict().items():
        if exclude_frozen_parameters and name in frozen:
            continue
        whole = _whole(value).detach()  # a collective at stage 3: every rank, the same order
        if keep:
            state[name] = (whole.to(dtype) if dtype is not None and whole.is_floating_point() else whole).cpu()
    return state if keep else None


def save_16bit_model(engine: Engine, save_dir, save_filename: str = "pytorch_model.bin",
                     exclude_frozen_parameters: bool = False) -> bool:
    if engine.zero_optimization_stage() == 3 and not engine.config.zero.gather_16bit_weights_on_model_save:
        if engine.global_rank == 0:
            say("warning: save_16bit_model wrote nothing: at ZeRO stage 3 it needs"
                " zero_optimization.stage3_gather_16bit_weights_on_model_save true (as in DeepSpeed); a checkpoint"
                " saved with save_checkpoint converts with `dsrun consolidate`")
        return False
    state = sixteen_bit_state(engine, exclude_frozen_parameters)
    if state is not None:
        path = Path(save_dir) / save_filename
        os.makedirs(path.parent, exist_ok=True)
        staged = path.with_name(f".{path.name}.tmp")  # a kill mid-write leaves the previous file whole
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, str(staged))
        else:
            torch.save(state, staged)
        os.replace(staged, path)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
    return True
