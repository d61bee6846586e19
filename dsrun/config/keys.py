"""The catalogue of config keys: every key DeepSpeed 0.19.8 accepts (plus dsrun's own few), with its value check.

A section is a dict mapping key names to entries; an entry is either a nested section (another dict) or a check
from dsrun.config.checks, which validates and normalises the value. Which of these keys dsrun acts on is decided in
dsrun.config.acted, not here: this file only records what DeepSpeed accepts.
"""

from __future__ import annotations

from typing import Any, Iterator

from dsrun.config import keys_other as other
from dsrun.config.checks import anything, boolean, choice, integer, mapping, number, show, string
from dsrun.config.keys_zero import ZERO_OPTIMIZATION
from dsrun.errors import UsageError

Section = dict[str, Any]

FP16 = {
    "enabled": boolean,
    "auto_cast": boolean,
    "loss_scale": number(minimum=0),
    "initial_scale_power": integer(),
    "loss_scale_window": integer(),
    "hysteresis": integer(),
    "consecutive_hysteresis": boolean,
    "min_loss_scale": number(),
    "fp16_master_weights_and_grads": boolean,
}

BF16 = {
    "enabled": boolean,
    "immediate_grad_update": boolean,
    "check_grad_overflow": boolean,
    "bf16_master_weights_and_grads": boolean,
    "bf16_optimizer_states": boolean,
}

AMP_OPT_LEVELS = ("O0", "O1", "O2", "O3")
_opt_level_choice = choice(*AMP_OPT_LEVELS, fold_case=True)


def opt_level(path: str, value: Any) -> str:
    """Apex's opt levels start with the letter O; "01" (zero-one) is the classic slip, so name it."""
    if isinstance(value, str) and value[:1] == "0" and f"O{value[1:]}" in AMP_OPT_LEVELS:
        raise UsageError(f'{path} must be one of "O0", "O1", "O2", "O3", got {show(value)}: the first character is'
                         f' the letter O, not zero ("O{value[1:]}")')
    return _opt_level_choice(path, value)


# DeepSpeed 0.16 passed every `amp` key but `enabled` to apex.amp.initialize; these are the ones Apex takes.
AMP = {
    "enabled": boolean,
    "opt_level": opt_level,
    **dict.fromkeys(
        ("cast_model_type", "patch_torch_functions", "keep_batchnorm_fp32", "master_weights", "loss_scale",
         "cast_model_outputs", "num_losses", "verbosity", "min_loss_scale", "max_loss_scale"),
        anything,
    ),
}

OPTIMIZER = {"type": string, "params": mapping, "legacy_fusion": boolean, "torch_adam": boolean}
SCHEDULER = {"type": string, "params": mapping}

TENSORBOARD = {"enabled": boolean, "output_path": string, "job_name": string}
CSV_MONITOR = {"enabled": boolean, "output_path": string, "job_name": string}
WANDB = {"enabled": boolean, "group": string, "team": string, "project": string}

TAG_VALIDATION_MODES = ("Ignore", "Warn", "Fail")

CHECKPOINT = {
    "tag_validation": choice(*TAG_VALIDATION_MODES, fold_case=True),
    "keep_last": integer(minimum=1),  # dsrun's own: how many checkpoint tags to keep in the save directory
    "load_rng_state": boolean,  # dsrun's own: whether load_checkpoint restores the Python/numpy/torch RNG states
    "load_universal": boolean,
    "use_node_local_storage": boolean,
    "parallel_write": other.CHECKPOINT_PARALLEL_WRITE,
    "checkpoint_serialization": anything,
    "writer": other.CHECKPOINT_WRITER,
}

BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")

TOP_LEVEL: Section = {
    # Batch keys are checked by dsrun.config.batch, which owns their rules.
    **dict.fromkeys(BATCH_KEYS, anything),
    "optimizer": OPTIMIZER,
    "scheduler": SCHEDULER,
    "fp16": FP16,
    "bf16": BF16,
    "bfloat16": BF16,  # DeepSpeed's older name, read when `bf16` is absent
    "amp": AMP,  # removed from DeepSpeed 0.19; dsrun maps it to torch autocast
    "torch_autocast": other.TORCH_AUTOCAST,
    "data_types": other.DATA_TYPES,
    "gradient_clipping": number(minimum=0),
    "zero_optimization": ZERO_OPTIMIZATION,
    "zero_allow_untested_optimizer": boolean,
    "prescale_gradients": boolean,
    "gradient_predivide_factor": number(positive=True),
    "steps_per_print": integer(minimum=1),
    "wall_clock_breakdown": boolean,
    "dump_state": boolean,
    "dataloader_drop_last": boolean,
    "seed": integer(minimum=0, maximum=2**32 - 1),  # dsrun's own: seeds Python, NumPy and torch on every rank
    "tensorboard": TENSORBOARD,
    "csv_monitor": CSV_MONITOR,
    "wandb": WANDB,
    "comet": other.COMET,
    "checkpoint": CHECKPOINT,
    "activation_checkpointing": other.ACTIVATION_CHECKPOINTING,
    "flops_profiler": other.FLOPS_PROFILER,
    "comms_logger": other.COMMS_LOGGER,
    "aio": other.AIO,
    "autotuning": other.AUTOTUNING,
    "compile": other.COMPILE,
    "pipeline": other.PIPELINE,
    "tensor_parallel": other.TENSOR_PARALLEL,
    "hybrid_engine": other.HYBRID_ENGINE,
    "data_efficiency": other.DATA_EFFICIENCY,
    "weight_quantization": other.WEIGHT_QUANTIZATION,
    "timers": other.TIMERS,
    "expert_parallel": other.EXPERT_PARALLEL,
    **other.OTHER_TOP_LEVEL,
    **dict.fromkeys(other.REMOVED_TOP_LEVEL, anything),
    # Not DeepSpeed keys, but carried by configs in DeepSpeedExamples (imagenet), which DeepSpeed runs: a run with
    # them must not stop, and the note says where the setting belongs.
    "cuda_visible_devices": anything,
}


def iter_paths(section: Section = TOP_LEVEL, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted path, entry) in the catalogue, sections before their keys."""
    for key, entry in section.items():
        path = f"{prefix}{key}"
        yield path, entry
        if isinstance(entry, dict):
            yield from iter_paths(entry, f"{path}.")
