"""Keys of the DeepSpeed 0.19.8 sections dsrun accepts but never acts on, with their value checks.

Sections DeepSpeed validates with pydantic keep typed checks (a value DeepSpeed would refuse is refused here too);
sections DeepSpeed reads with plain dict lookups accept any value (`loose`), since neither DeepSpeed's parser nor
dsrun interprets them — only the key names are checked, so a misspelt key still fails loudly.
"""

from __future__ import annotations

from typing import Any

from dsrun.config.checks import anything, boolean, choice, integer, mapping, number, strict_boolean, string, strings


def loose(*names: str) -> dict:
    return dict.fromkeys(names, anything)


# Every spelling DeepSpeed's DtypeEnum accepts.
DTYPE_NAMES = (
    "torch.float16", "fp16", "float16", "half",
    "torch.float32", "fp32", "float32", "float",
    "torch.bfloat16", "bf16", "bfloat16",
    "torch.int8", "int8",
)  # fmt: skip

TORCH_AUTOCAST = {
    "enabled": anything,
    "dtype": choice(*DTYPE_NAMES),
    "lower_precision_safe_modules": strings,
}

DATA_TYPES = {
    "grad_accum_dtype": choice(*DTYPE_NAMES),
    "param_dtype": choice(*DTYPE_NAMES),
    "buffer_dtype": choice(*DTYPE_NAMES),
    "keep_in_fp32_modules": strings,
}

ACTIVATION_CHECKPOINTING = loose(
    "partition_activations", "contiguous_memory_optimization", "cpu_checkpointing", "number_checkpoints",
    "synchronize_checkpoint_boundary", "profile",
)

FLOPS_PROFILER = loose(
    "enabled", "recompute_fwd_factor", "profile_step", "module_depth", "top_modules", "detailed", "output_file",
)

COMMS_LOGGER = {
    "enabled": boolean,
    "prof_all": boolean,
    "prof_ops": strings,
    "verbose": boolean,
    "debug": boolean,
}

# `thread_count` is the name DeepSpeed's docs page still uses for what the code calls intra_op_parallelism.
AIO = loose("block_size", "queue_depth", "intra_op_parallelism", "thread_count", "single_submit", "overlap_events",
            "use_gds")

AUTOTUNING = loose(
    "enabled", "fast", "results_dir", "exps_dir", "overwrite", "start_profile_step", "end_profile_step", "metric",
    "metric_path", "tuner_type", "tuner_early_stopping", "tuner_num_trials", "arg_mappings", "model_info_path",
    "mp_size", "max_train_batch_size", "min_train_batch_size", "max_train_micro_batch_size_per_gpu",
    "min_train_micro_batch_size_per_gpu", "num_tuning_micro_batch_sizes",
)
AUTOTUNING["model_info"] = loose("profile", "num_params", "hidden_size", "num_layers")

COMPILE: dict[str, Any] = {
    name: boolean
    for name in (
        "deepcompile", "autoep_non_moe", "free_activation", "offload_activation", "offload_activation_pin_memory",
        "offload_opt_states", "double_buffer", "symmetric_memory", "debug_log", "offload_parameters",
        "sync_before_reduce", "sync_after_reduce", "sync_before_allgather", "sync_after_allgather",
        "keep_int_input_tensors", "keep_all_input_tensors",
    )
}
COMPILE["free_activation_threshold"] = integer()
COMPILE["passes"] = strings

PIPELINE = loose("stages", "partition", "seed_layers", "activation_checkpoint_interval", "pipe_partitioned",
                 "grad_partitioned", "use_reentrant")

_TP_GROUPS = {"tp_size": integer(), "tp_grain_size": integer(), "mpu": anything, "tp_group": anything}
TENSOR_PARALLEL = {
    "dtype": choice(*DTYPE_NAMES),
    "autotp_size": integer(),
    "tp_overlap_comm": boolean,
    "vocab_parallel_lm_head": boolean,
    "vocab_parallel_ce_backend": choice("torch", "liger"),
    "tensor_parallel": _TP_GROUPS,
    "tp": _TP_GROUPS,
    "injection_policy_tuple": anything,
    "partition_config": mapping,
    "preset_model": string,
    "keep_module_on_host": boolean,
    "replace_with_kernel_inject": boolean,
    "kernel_inject": boolean,
}

HYBRID_ENGINE = {
    "enabled": boolean,
    "max_out_tokens": integer(minimum=1),
    "inference_tp_size": integer(),
    "release_inference_cache": boolean,
    "pin_parameters": boolean,
    "tp_gather_partition_size": integer(),
    "enable_cuda_graph": boolean,
}

DATA_EFFICIENCY = {
    "enabled": anything,
    "seed": anything,
    # Curriculum and dynamic-batching contents are handed to DeepSpeed's data sampler as they are.
    "data_sampling": loose("enabled", "num_epochs", "num_workers", "pin_memory", "curriculum_learning",
                           "dynamic_batching"),
    "data_routing": loose("enabled", "random_ltd"),
}

WEIGHT_QUANTIZATION = {
    "enabled": boolean,
    "num_bits": integer(),
    "q_type": choice("asymmetric", "symmetric"),
    "q_groups": integer(),
    "quantized_initialization": mapping,
    "post_init_quant": mapping,
}

TIMERS = {"throughput": {"enabled": boolean, "synchronized": boolean}}

EXPERT_PARALLEL = loose(
    "enabled", "autoep_size", "expert_tensor_parallel_size", "validate_folding_routing", "async_split_plan",
    "preset_model", "moe_layer_pattern", "expert_pattern", "router_pattern", "use_grouped_mm",
    "disable_triton_grouped_mm", "route_norm", "route_scale", "score_apply", "combine_impl", "row_weighting_impl",
    "gate_up_impl", "comm_backend", "comm_num_sm", "comm_qp_margin", "comm_max_tokens_per_rank", "num_expert_groups",
    "num_limited_groups", "score_func", "top_k", "load_balance_coeff", "routed_scaling_factor", "expert_w1",
    "expert_w2", "expert_w3", "num_experts_attr", "top_k_attr", "has_shared_experts", "shared_experts_pattern",
    "shared_experts_gate_pattern", "expert_activation",
)

COMET = {
    "enabled": boolean,
    "samples_log_interval": integer(),
    "project": string,
    "workspace": string,
    "api_key": string,
    "experiment_name": string,
    "experiment_key": string,
    "online": boolean,
    "mode": string,
}

CHECKPOINT_WRITER = {
    "type": choice("MOCK", "PYTHON", "FAST", fold_case=True),
    "io_buffer_size": anything,
    "io_buffer_double": anything,
    "show_statistics": anything,
    "data_parallel": choice("REPLICA", "SOCKET", "MACHINE", fold_case=True),
    "decoupled": anything,
    "io_multiplier": anything,
}

CHECKPOINT_PARALLEL_WRITE = {"pipeline_stage": strict_boolean}

# Top-level blocks DeepSpeed 0.19 removed and now refuses. Older configs still carry them, so dsrun loads them
# and says in a warning what is lost; their contents are not inspected.
REMOVED_TOP_LEVEL = (
    "nebula", "compression_training", "quantize_training", "sparse_gradients", "eigenvalue", "sparse_attention",
    "elasticity", "graph_harvesting", "curriculum_learning", "progressive_layer_drop",
)

# Scalar top-level keys DeepSpeed reads that dsrun has no use for; their values are checked as DeepSpeed does.
OTHER_TOP_LEVEL = {
    "managed_gradient_accumulation": boolean,
    "zero_force_ds_cpu_optimizer": boolean,
    "memory_breakdown": boolean,
    "disable_allgather": boolean,
    "disable_python_gc": boolean,
    "log_level": string,
    "communication_data_type": choice("fp16", "bf16", "fp32", fold_case=True),
    "seq_parallel_communication_data_type": choice("fp16", "bf16", "fp32", fold_case=True),
    "gradient_allreduce_op": choice("mean", "sum", fold_case=True),
    "sequence_parallel_size": number(positive=True),
    "data_parallel_size": integer(minimum=1),
    "vocabulary_size": integer(minimum=0),
    "use_data_before_expert_parallelism": boolean,
    "allgather_size": integer(minimum=0),
    "datastates_ckpt": anything,
}
