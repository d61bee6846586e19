"""The keys DeepSpeed 0.19.8 accepts inside `zero_optimization` and its offload dicts, with their value checks.

Facts from DeepSpeed's pydantic models (zero/config.py, zero/offload_config.py, zenflow, leaf_module). Its models
accept both the `stage3_`-prefixed names and the bare field names, so both spellings are listed.
"""

from __future__ import annotations

from dsrun.config.checks import anything, boolean, choice, integer, number, string, strings

OFFLOAD_DEVICES = ("none", "cpu", "nvme")

OFFLOAD_OPTIMIZER = {
    "device": choice(*OFFLOAD_DEVICES),
    "nvme_path": string,
    "buffer_count": integer(minimum=0),
    "pin_memory": boolean,
    "pipeline_read": boolean,
    "pipeline_write": boolean,
    "fast_init": boolean,
    "ratio": number(minimum=0, maximum=1),
    "super_offload": boolean,
    "cpuadam_cores_perc": number(minimum=0, maximum=1),
}

OFFLOAD_PARAM = {
    "device": choice(*OFFLOAD_DEVICES),
    "nvme_path": string,
    "buffer_count": integer(minimum=0),
    "buffer_size": integer(minimum=0),
    "max_in_cpu": integer(minimum=0),
    "pin_memory": boolean,
}

ZENFLOW = {
    "topk_ratio": number(minimum=0, maximum=1),
    "select_strategy": choice("auto", "step", "epoch"),
    "select_interval": integer(),
    "update_interval": integer(minimum=1),
    "overlap_step": boolean,
    "offload": boolean,
    "auto_ratio": number(minimum=0, maximum=1),
    "full_warm_up_rounds": integer(),
    "pt_reserved_cores_perc": number(minimum=0, maximum=1),
    "steps_per_epoch": integer(),
}

LEAF_MODULE = {
    "classes": strings,
    "names": strings,
    "name_suffixes": strings,
}

# (prefixed name, bare field name): DeepSpeed accepts either spelling for these stage-3 settings.
_STAGE3_PAIRS = {
    ("stage3_prefetch_bucket_size", "prefetch_bucket_size"): integer(minimum=0),
    ("stage3_param_persistence_threshold", "param_persistence_threshold"): integer(minimum=0),
    ("stage3_model_persistence_threshold", "model_persistence_threshold"): integer(minimum=0),
    ("stage3_max_live_parameters", "max_live_parameters"): integer(minimum=0),
    ("stage3_max_reuse_distance", "max_reuse_distance"): integer(minimum=0),
    ("stage3_gather_16bit_weights_on_model_save", "gather_16bit_weights_on_model_save"): boolean,
    ("stage3_module_granularity_threshold", "module_granularity_threshold"): integer(),
    ("stage3_use_all_reduce_for_fetch_params", "use_all_reduce_for_fetch_params"): boolean,
    ("stage3_allgather_sequential", "allgather_sequential"): boolean,
}

ZERO_OPTIMIZATION = {
    "stage": integer(minimum=0, maximum=3),
    "contiguous_gradients": boolean,
    "reduce_scatter": boolean,
    "reduce_bucket_size": integer(minimum=1),
    "use_multi_rank_bucket_allreduce": boolean,
    "allgather_partitions": boolean,
    "allgather_bucket_size": integer(minimum=0),
    "overlap_comm": boolean,
    "compute_grad_norm": boolean,
    "load_from_fp32_weights": boolean,
    "elastic_checkpoint": boolean,
    "offload_param": OFFLOAD_PARAM,
    "offload_optimizer": OFFLOAD_OPTIMIZER,
    "zenflow": ZENFLOW,
    "sub_group_size": integer(minimum=0),
    "cpu_offload": boolean,  # deprecated: maps onto offload_optimizer
    "cpu_offload_param": boolean,  # deprecated: maps onto offload_param
    "cpu_offload_use_pin_memory": boolean,  # deprecated: maps onto the offload dicts' pin_memory
    "stage3_gather_fp16_weights_on_model_save": boolean,  # deprecated alias of gather_16bit_weights_on_model_save
    "ignore_unused_parameters": boolean,
    "legacy_stage1": boolean,
    "round_robin_gradients": boolean,
    "parameter_alignment": boolean,
    "zero_hpz_partition_size": integer(minimum=0),
    "zero_quantized_weights": boolean,
    "zero_quantized_nontrainable_weights": boolean,
    "zero_quantized_gradients": boolean,
    "memory_efficient_linear": boolean,
    "pipeline_loading_checkpoint": boolean,
    "override_module_apply": boolean,
    "log_trace_cache_warnings": boolean,
    "enable_sanity_checks": boolean,
    "save_muon_momentum_buffer_in_memory": boolean,
    "leaf_module": LEAF_MODULE,
    # Removed in DeepSpeed 0.19 (it now refuses them); accepted here so older configs still load, with a warning.
    "mics_shard_size": anything,
    "mics_hierarchical_params_gather": anything,
    "zeropp_loco_param": anything,
}
ZERO_OPTIMIZATION.update({name: check for names, check in _STAGE3_PAIRS.items() for name in names})
