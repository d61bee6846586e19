"""The top-level keys and whole sections of DeepSpeed 0.19.8 that dsrun accepts but does not act on, each with
its value checks and the reason it has no effect here.

Sections DeepSpeed validates with pydantic keep typed checks (a value DeepSpeed would refuse is refused here too);
sections DeepSpeed reads with plain dict lookups accept any value (`loose`), since neither DeepSpeed's parser nor
dsrun interprets them — only the key names are checked, so a misspelt key still fails loudly.
"""

from __future__ import annotations

from typing import Any

from dsrun.config.checks import anything, boolean, choice, integer, mapping, number, string, strings
from dsrun.config.declare import Unacted


def loose(*names: str) -> dict[str, Any]:
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

_REMOVED = "removed in DeepSpeed 0.19, which refuses it"

# Top-level blocks DeepSpeed 0.19 removed and now refuses. Older configs still carry them, so dsrun loads them
# and says in a note what is lost; their contents are not inspected.
_REMOVED_BLOCKS = {
    "nebula": f"{_REMOVED} (Nebula checkpointing); checkpoints go through torch.distributed.checkpoint",
    "compression_training": f"{_REMOVED} (compression library): the model trains unquantized",
    "quantize_training": f"{_REMOVED} (MoQ): the model trains unquantized",
    "sparse_gradients": f"{_REMOVED}: embedding gradients are reduced dense",
    "eigenvalue": f"{_REMOVED} (eigenvalue MoQ)",
    "sparse_attention": f"{_REMOVED} (sparse attention)",
    "elasticity": f"{_REMOVED} (elastic training): set the batch keys directly",
    "graph_harvesting": f"{_REMOVED} (graph harvesting)",
    "curriculum_learning": f"{_REMOVED}: DeepSpeed moved it to data_efficiency.data_sampling, which dsrun does not"
    " act on either",
    "progressive_layer_drop": f"{_REMOVED} (progressive layer dropping)",
}

_SEQUENCE_DTYPE = choice("fp16", "bf16", "fp32", fold_case=True)

UNACTED_TOP_LEVEL: dict[str, Unacted] = {
    # Scalars DeepSpeed reads that dsrun has no use for; their values are checked as DeepSpeed does.
    "managed_gradient_accumulation": Unacted(boolean, "dsrun always steps the optimizer at the gradient-accumulation"
                                             " boundary"),
    "zero_force_ds_cpu_optimizer": Unacted(boolean, "dsrun has no DeepSpeed CPU optimizers to force; the configured"
                                           " torch optimizer runs wherever its states live"),
    "memory_breakdown": Unacted(boolean, "dsrun does not log accelerator memory around each step"),
    "disable_allgather": Unacted(boolean, "dsrun has no such switch; parameter gathering follows the ZeRO stage"),
    "disable_python_gc": Unacted(boolean, "dsrun leaves Python's garbage collector as it is"),
    "log_level": Unacted(string, "dsrun's messages do not go through DeepSpeed's logger"),
    "seq_parallel_communication_data_type": Unacted(_SEQUENCE_DTYPE, "dsrun has no Ulysses sequence parallelism"),
    "gradient_allreduce_op": Unacted(choice("mean", "sum", fold_case=True), "gradients are always averaged over the"
                                     " data-parallel ranks"),
    "sequence_parallel_size": Unacted(number(positive=True), "dsrun has no sequence parallelism: every rank is a"
                                      " data-parallel rank"),
    "data_parallel_size": Unacted(integer(minimum=1), "dsrun takes the data-parallel size from the launch: every"
                                  " rank is a data-parallel rank"),
    "vocabulary_size": Unacted(integer(minimum=0), "DeepSpeed only uses it for a tensor-core alignment warning"),
    "allgather_size": Unacted(integer(minimum=0), "it only sizes all-gather buckets of the legacy"
                              " `\"zero_optimization\": true` form, and dsrun does not bucket all-gathers"),
    "datastates_ckpt": Unacted(anything, "dsrun checkpoints with torch.distributed.checkpoint"),
    # Not DeepSpeed keys, but carried by configs in DeepSpeedExamples (imagenet), which DeepSpeed runs: a run with
    # them must not stop, and the note says where the setting belongs.
    "cuda_visible_devices": Unacted(anything, "it is not a DeepSpeed key either (DeepSpeed ignores it); choose GPUs"
                                    " with --include or CUDA_VISIBLE_DEVICES"),
    # Whole sections.
    "torch_autocast": Unacted(TORCH_AUTOCAST, "dsrun does not run DeepSpeed's torch_autocast mode; use bf16, fp16 or"
                              " amp.opt_level"),
    "data_types": Unacted(DATA_TYPES, "dsrun derives dtypes from fp16 / bf16 / amp: fp32 master weights and"
                          " optimizer state, gradients reduced in fp32 (or communication_data_type), stage 2"
                          " accumulating gradient shards in the parameters' dtype"),
    "comet": Unacted(COMET, "dsrun's monitors are tensorboard, csv_monitor and wandb"),
    "flops_profiler": Unacted(FLOPS_PROFILER, "dsrun has no FLOPs profiler"),
    "comms_logger": Unacted(COMMS_LOGGER, "dsrun does not log collectives"),
    "aio": Unacted(AIO, "dsrun has no NVMe offload, so there is no async I/O to tune"),
    "autotuning": Unacted(AUTOTUNING, "dsrun has no autotuner"),
    "compile": Unacted(COMPILE, "dsrun has no DeepCompile; call torch.compile on the model yourself"),
    "tensor_parallel": Unacted(TENSOR_PARALLEL, "dsrun has no automatic tensor parallelism"),
    "hybrid_engine": Unacted(HYBRID_ENGINE, "dsrun has no RLHF hybrid engine"),
    "data_efficiency": Unacted(DATA_EFFICIENCY, "dsrun has no curriculum sampler or random-LTD"),
    "weight_quantization": Unacted(WEIGHT_QUANTIZATION, "dsrun does not quantize weights"),
    "timers": Unacted(TIMERS, "dsrun has no throughput timer"),
    "expert_parallel": Unacted(EXPERT_PARALLEL, "it configures DeepSpeed's AutoEP (expert parallelism applied to an"
                               " existing model), which dsrun does not have: build the model with dsrun.moe.layer.MoE"),
    **{name: Unacted(anything, reason) for name, reason in _REMOVED_BLOCKS.items()},
}
