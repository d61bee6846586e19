"""init_inference's config: DeepSpeed's DeepSpeedInferenceConfig keys, from a dict, a JSON/YAML path or kwargs.

Only what changes the result is acted on (dtype, tensor parallel size, checkpoint, the user's plan); DeepSpeed's
kernel, quantization and MoE-inference keys are accepted so configs written for DeepSpeed load, and get one note
saying they have no effect here. A key DeepSpeed does not have is an error with the nearest known key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from dsrun.config.checks import show
from dsrun.errors import UsageError
from dsrun.runtime.schedules.base import did_you_mean

# DeepSpeed's dtype names (DtypeEnum in deepspeed/inference/config.py), int8 left out: dsrun does not quantize.
DTYPES: dict[str, torch.dtype] = {
    **dict.fromkeys(("fp32", "float32", "float", "torch.float32"), torch.float32),
    **dict.fromkeys(("fp16", "float16", "half", "torch.float16"), torch.float16),
    **dict.fromkeys(("bf16", "bfloat16", "bfloat", "torch.bfloat16"), torch.bfloat16),
}

# Keys that select DeepSpeed's fused kernels, Triton, quantization or its MoE-inference path: accepted, no effect.
KERNEL_KEYS = frozenset({
    "replace_with_kernel_inject", "kernel_inject", "use_triton", "triton_autotune", "triangular_masking", "tm",
    "quant", "moe", "ep_size", "ep_group", "expert_group", "ep_mp_group", "expert_mp_group", "moe_experts",
    "moe_type", "transposed_mode", "injection_policy", "injection_dict", "injection_policy_tuple", "replace_method",
    "return_tuple", "min_out_tokens", "min_tokens", "keep_module_on_host", "set_empty_params", "zero",
    "save_mp_checkpoint_path", "checkpoint_config", "ckpt_config", "base_dir", "training_mp_size", "config", "args",
    "use_ds_kernel",
})  # fmt: skip
# Keys acted on (aliases as DeepSpeed spells them).
ACTED_KEYS = frozenset({"dtype", "tensor_parallel", "tp", "mp_size", "checkpoint", "max_out_tokens", "max_tokens",
                        "enable_cuda_graph", "tp_plan"})
TP_KEYS = frozenset({"enabled", "tp_size", "tp_grain_size", "mpu", "tp_group"})


@dataclass
class InferenceConfig:
    dtype: torch.dtype | None = None  # None: the model keeps its own
    tp_size: int | None = None  # None: the world size
    checkpoint: Path | None = None
    max_out_tokens: int = 1024  # DeepSpeed's default
    enable_cuda_graph: bool = False
    tp_plan: dict[str, str] | None = None  # module name pattern -> "colwise" / "rowwise"
    ignored: list[str] = field(default_factory=list)  # kernel keys given with a value that asks for something


def _dtype(value: Any) -> torch.dtype:
    if isinstance(value, torch.dtype):
        if value in DTYPES.values():
            return value
        raise UsageError(f"dtype {value} is not one init_inference runs in: use torch.float32, float16 or bfloat16")
    if isinstance(value, str) and value.strip().lower() in DTYPES:
        return DTYPES[value.strip().lower()]
    raise UsageError(f"dtype {show(value)} is not a dtype: use torch.float32/float16/bfloat16 or one of"
                     f" \"fp32\", \"fp16\", \"bf16\"{did_you_mean(str(value), sorted(DTYPES))}")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {show(value)}")
    return value


def _tp_size(raw: Mapping[str, Any]) -> int | None:
    section = raw.get("tensor_parallel", raw.get("tp"))
    size = None
    if section is not None:
        if not isinstance(section, Mapping):
            raise UsageError(f'tensor_parallel must be a mapping such as {{"tp_size": 2}}, got {show(section)}')
        for key in section:
            if key not in TP_KEYS:
                raise UsageError(f"tensor_parallel.{key} is not a DeepSpeed inference key"
                                 f"{did_you_mean(str(key), sorted(TP_KEYS))}")
        for key in ("mpu", "tp_group"):
            if section.get(key) is not None:
                raise UsageError(f"tensor_parallel.{key}: dsrun builds its tensor-parallel groups itself (tp_size"
                                 " consecutive ranks each); leave it out")
        if section.get("enabled") is False:
            size = 1
        elif "tp_size" in section:
            size = _positive_int("tensor_parallel.tp_size", section["tp_size"])
    if raw.get("mp_size") is not None:
        mp = _positive_int("mp_size", raw["mp_size"])
        if size is not None and size != mp:
            raise UsageError(f"mp_size={mp} and tensor_parallel.tp_size={size} disagree: give one (tp_size is the"
                             " newer name)")
        size = mp
    return size


def _plan(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not value:
        raise UsageError(f'tp_plan must map module name patterns to "colwise" or "rowwise", got {show(value)}')
    for pattern, style in value.items():
        if style not in ("colwise", "rowwise"):
            raise UsageError(f'tp_plan[{show(pattern)}] must be "colwise" or "rowwise", got {show(style)}'
                             f"{did_you_mean(str(style), ['colwise', 'rowwise'])}")
    return dict(value)


def _raw(config: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    if config is None:
        base: dict[str, Any] = {}
    elif isinstance(config, Mapping):
        base = dict(config)
    elif isinstance(config, (str, os.PathLike)):
        from dsrun.config import load_config

        base = dict(load_config(config))
    else:
        raise UsageError(f"config must be a dict or a path to a JSON/YAML file, got {type(config).__name__}")
    return {**base, **kwargs}  # kwargs win, as in DeepSpeed


def parse(config: Any = None, **kwargs: Any) -> InferenceConfig:
    raw = _raw(config, kwargs)
    for key in raw:
        if key not in ACTED_KEYS and key not in KERNEL_KEYS:
            raise UsageError(f"{key} is not a DeepSpeed inference config key"
                             f"{did_you_mean(str(key), sorted(ACTED_KEYS | KERNEL_KEYS))}")
    out = InferenceConfig()
    if raw.get("dtype") is not None:
        out.dtype = _dtype(raw["dtype"])
    out.tp_size = _tp_size(raw)
    if raw.get("checkpoint") is not None:
        if not isinstance(raw["checkpoint"], (str, os.PathLike)):
            raise UsageError("checkpoint must be a path (a dsrun checkpoint directory, or a .pt/.safetensors file);"
                             " DeepSpeed's checkpoint description dicts are not read")
        out.checkpoint = Path(raw["checkpoint"])
    tokens = raw.get("max_out_tokens", raw.get("max_tokens"))
    if tokens is not None:
        out.max_out_tokens = _positive_int("max_out_tokens", tokens)
    graph = raw.get("enable_cuda_graph")
    if graph not in (None, False, True):
        raise UsageError(f"enable_cuda_graph must be true or false, got {show(graph)}")
    out.enable_cuda_graph = bool(graph)
    if raw.get("tp_plan") is not None:
        out.tp_plan = _plan(raw["tp_plan"])
    # A kernel key set to something other than off/empty asks for something that does not happen here.
    out.ignored = sorted(key for key in raw if key in KERNEL_KEYS and raw[key] not in (None, False, {}, [], ""))
    return out
