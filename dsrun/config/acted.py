"""Which config keys dsrun acts on, and for every other key, why not. This is the one place that decides it.

dsrun accepts every key DeepSpeed does (see dsrun.config.keys), but builds training on torch's collectives / FSDP2 /
torch.distributed.checkpoint instead of DeepSpeed's own engine, so many DeepSpeed knobs have nothing to turn.
Each such key present in a config gets one warning line, "<key> is accepted but dsrun does not act on it: <why>",
so a user never believes a setting is in force when it is not.
"""

from __future__ import annotations

from typing import Any, Mapping

# The keys the engine reads (exactly the attributes of RunConfig it uses). A section listed whole is read whole.
ACTED_ON = frozenset({
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
    "optimizer.type", "optimizer.params",
    "scheduler.type", "scheduler.params",
    "fp16.enabled", "fp16.loss_scale", "fp16.initial_scale_power", "fp16.loss_scale_window",
    "fp16.hysteresis", "fp16.consecutive_hysteresis", "fp16.min_loss_scale",
    "bf16.enabled", "bfloat16.enabled",
    "amp.enabled", "amp.opt_level",
    "gradient_clipping",
    "zero_optimization.stage", "zero_optimization.reduce_bucket_size", "zero_optimization.allgather_bucket_size",
    "zero_optimization.ignore_unused_parameters",
    # Whether engine.save_16bit_model writes a file at stage 3 (and its deprecated fp16 spelling).
    "zero_optimization.stage3_gather_16bit_weights_on_model_save",
    "zero_optimization.gather_16bit_weights_on_model_save",
    "zero_optimization.stage3_gather_fp16_weights_on_model_save",
    "zero_optimization.stage3_prefetch_bucket_size", "zero_optimization.prefetch_bucket_size",
    "zero_optimization.offload_optimizer.device", "zero_optimization.offload_optimizer.pin_memory",
    "zero_optimization.offload_param.device", "zero_optimization.offload_param.pin_memory",
    # Deprecated spellings that dsrun maps onto offload_optimizer / offload_param.
    "zero_optimization.cpu_offload", "zero_optimization.cpu_offload_param",
    "zero_optimization.cpu_offload_use_pin_memory",
    "zero_allow_untested_optimizer", "prescale_gradients", "gradient_predivide_factor", "communication_data_type",
    "steps_per_print", "wall_clock_breakdown", "dump_state", "dataloader_drop_last", "seed",
    "tensorboard", "csv_monitor", "wandb",
    "checkpoint.tag_validation", "checkpoint.keep_last", "checkpoint.load_rng_state",
})  # fmt: skip

_ZERO_ON_TORCH = "dsrun builds the ZeRO stages on torch collectives and FSDP2, which have no such setting"
_NO_PERSISTENT = "stage 3 shards every parameter, however small (FSDP2 keeps no parameters whole)"
_LIVE = ("stage 3 frees each unit's gathered parameters after its forward and its backward; the units are"
         " stage3_prefetch_bucket_size elements at most")
_REMOVED = "removed in DeepSpeed 0.19, which refuses it"

# Why a key is not acted on. A key without its own entry takes its nearest listed ancestor's reason.
REASONS: dict[str, str] = {
    # Top-level scalars.
    "cuda_visible_devices": "it is not a DeepSpeed key either (DeepSpeed ignores it); choose GPUs with --include"
    " or CUDA_VISIBLE_DEVICES",
    "fp16.auto_cast": "floating inputs are always cast to the half-precision parameters' dtype before the forward"
    " (a half module fed fp32 tensors can only fail); inputs already in half are left alone",
    "optimizer.torch_adam": "dsrun always steps torch's Adam/AdamW (fused where torch has the kernel), as DeepSpeed"
    " does with torch_adam true",
    "managed_gradient_accumulation": "dsrun always steps the optimizer at the gradient-accumulation boundary",
    "zero_force_ds_cpu_optimizer": "dsrun has no DeepSpeed CPU optimizers to force; the configured torch optimizer"
    " runs wherever its states live",
    "memory_breakdown": "dsrun does not log accelerator memory around each step",
    "disable_allgather": "dsrun has no such switch; parameter gathering follows the ZeRO stage",
    "disable_python_gc": "dsrun leaves Python's garbage collector as it is",
    "log_level": "dsrun's messages do not go through DeepSpeed's logger",
    "seq_parallel_communication_data_type": "dsrun has no Ulysses sequence parallelism",
    "gradient_allreduce_op": "gradients are always averaged over the data-parallel ranks",
    "sequence_parallel_size": "dsrun has no sequence parallelism: every rank is a data-parallel rank",
    "data_parallel_size": "dsrun takes the data-parallel size from the launch: every rank is a data-parallel rank",
    "vocabulary_size": "DeepSpeed only uses it for a tensor-core alignment warning",
    "use_data_before_expert_parallelism": "dsrun has no mixture-of-experts support",
    "allgather_size": "it only sizes all-gather buckets of the legacy `\"zero_optimization\": true` form, and"
    " dsrun does not bucket all-gathers",
    "datastates_ckpt": "dsrun checkpoints with torch.distributed.checkpoint",
    # Precision.
    "fp16.fp16_master_weights_and_grads": "dsrun keeps master weights in fp32",
    "bf16": "only bf16.enabled is read; dsrun keeps master weights and optimizer states in fp32 and reduces"
    " gradients in fp32 (or communication_data_type)",
    "bfloat16": "only bfloat16.enabled is read; dsrun keeps master weights and optimizer states in fp32 and"
    " reduces gradients in fp32 (or communication_data_type)",
    "amp": "these are Apex options; dsrun runs amp as torch autocast from amp.opt_level",
    "torch_autocast": "dsrun does not run DeepSpeed's torch_autocast mode; use bf16, fp16 or amp.opt_level",
    "data_types": "dsrun derives dtypes from fp16 / bf16 / amp: fp32 master weights and optimizer state,"
    " gradients reduced in fp32 (or communication_data_type), stage 2 accumulating gradient shards in the"
    " parameters' dtype",
    "optimizer.legacy_fusion": "dsrun builds torch optimizers, which have no legacy fused mode",
    # ZeRO.
    "zero_optimization": _ZERO_ON_TORCH,
    "zero_optimization.contiguous_gradients": "stages 0-1 always keep gradients in one flat buffer and FSDP2"
    " manages its own",
    "zero_optimization.reduce_scatter": "the collective follows the stage and backend: stages 0-1 all-reduce,"
    " stage 2 reduce-scatters on NCCL and all-reduces on gloo (5x faster there), FSDP2 reduce-scatters",
    "zero_optimization.allgather_partitions": "stages 1-2 gather with all-gather on NCCL and all-reduce on gloo;"
    " FSDP2 all-gathers",
    "zero_optimization.overlap_comm": "stages 0-1 average once after the cycle's last backward (as DeepSpeed's"
    " stage 0 does; on gloo as fast as overlapping), stage 2 after each backward, FSDP2 always overlaps",
    "zero_optimization.sub_group_size": "dsrun chooses its own optimizer-step pieces (1/16 of a rank's gradients"
    " when they need converting to fp32)",
    "zero_optimization.elastic_checkpoint": "dsrun's checkpoints (torch.distributed.checkpoint) load at any world"
    " size already",
    "zero_optimization.load_from_fp32_weights": "dsrun's checkpoints always restore the fp32 weights",
    "zero_optimization.stage3_param_persistence_threshold": _NO_PERSISTENT,
    "zero_optimization.param_persistence_threshold": _NO_PERSISTENT,
    "zero_optimization.stage3_model_persistence_threshold": _NO_PERSISTENT,
    "zero_optimization.model_persistence_threshold": _NO_PERSISTENT,
    "zero_optimization.stage3_max_live_parameters": _LIVE,
    "zero_optimization.max_live_parameters": _LIVE,
    "zero_optimization.stage3_max_reuse_distance": _LIVE,
    "zero_optimization.max_reuse_distance": _LIVE,
    "zero_optimization.offload_optimizer": "only device and pin_memory are read; torch's CPU offload has no"
    " further settings",
    "zero_optimization.offload_param": "only device and pin_memory are read; torch's CPU offload has no further"
    " settings",
    "zero_optimization.mics_shard_size": f"{_REMOVED} (MiCS sharding)",
    "zero_optimization.mics_hierarchical_params_gather": f"{_REMOVED} (MiCS sharding)",
    "zero_optimization.zeropp_loco_param": f"{_REMOVED} (LoCo ZeRO++)",
    # Checkpoint.
    "checkpoint": "dsrun writes checkpoints with torch.distributed.checkpoint, which has no such setting",
    "checkpoint.load_universal": "dsrun's checkpoints (torch.distributed.checkpoint) load at any world size, so"
    " there is no separate universal format",
    # Whole sections dsrun has no counterpart for.
    "comet": "dsrun's monitors are tensorboard, csv_monitor and wandb",
    "activation_checkpointing": "DeepSpeed reads it only in deepspeed.checkpointing.configure(), which dsrun"
    " does not provide; checkpoint activations with torch.utils.checkpoint in the model",
    "flops_profiler": "dsrun has no FLOPs profiler",
    "comms_logger": "dsrun does not log collectives",
    "aio": "dsrun has no NVMe offload, so there is no async I/O to tune",
    "autotuning": "dsrun has no autotuner",
    "compile": "dsrun has no DeepCompile; call torch.compile on the model yourself",
    "pipeline": "dsrun's engine is data-parallel only; it has no DeepSpeed pipeline engine",
    "tensor_parallel": "dsrun has no automatic tensor parallelism",
    "hybrid_engine": "dsrun has no RLHF hybrid engine",
    "data_efficiency": "dsrun has no curriculum sampler or random-LTD",
    "weight_quantization": "dsrun does not quantize weights",
    "timers": "dsrun has no throughput timer",
    "expert_parallel": "dsrun has no mixture-of-experts support",
    "nebula": f"{_REMOVED} (Nebula checkpointing); checkpoints go through torch.distributed.checkpoint",
    "compression_training": f"{_REMOVED} (compression library): the model trains unquantized",
    "quantize_training": f"{_REMOVED} (MoQ): the model trains unquantized",
    "sparse_gradients": f"{_REMOVED}: embedding gradients are reduced dense",
    "eigenvalue": f"{_REMOVED} (eigenvalue MoQ)",
    "sparse_attention": f"{_REMOVED} (sparse attention)",
    "elasticity": f"{_REMOVED} (elastic training): set the batch keys directly",
    "graph_harvesting": f"{_REMOVED} (graph harvesting)",
    "curriculum_learning": f"{_REMOVED}: DeepSpeed moved it to data_efficiency.data_sampling, which dsrun does"
    " not act on either",
    "progressive_layer_drop": f"{_REMOVED} (progressive layer dropping)",
}


def is_acted_on(path: str) -> bool:
    """Whether dsrun reads `path`: listed itself, or inside a section that is read whole."""
    parts = path.split(".")
    return any(".".join(parts[:end]) in ACTED_ON for end in range(1, len(parts) + 1))


def holds_acted_keys(path: str) -> bool:
    """Whether a section contains keys dsrun acts on (so its other keys are judged one by one)."""
    return any(acted.startswith(path + ".") for acted in ACTED_ON)


def reason_for(path: str) -> str | None:
    """Why dsrun does not act on `path`: its own entry in REASONS or its nearest ancestor's."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        reason = REASONS.get(".".join(parts[:end]))
        if reason is not None:
            return reason
    return None


def unacted_warnings(clean: Mapping[str, Any], prefix: str = "") -> list[str]:
    """One line per key in a validated config that dsrun does not act on.

    A section dsrun does not act on at all gets one line for the whole section, and none when it says
    `"enabled": false`: DeepSpeed ignores such a section too, so nothing is lost.
    """
    lines = []
    for key, value in clean.items():
        path = f"{prefix}{key}"
        if is_acted_on(path):
            continue
        if isinstance(value, Mapping) and value.get("enabled") is False:
            continue  # DeepSpeed judges a section's settings only when it is on: nothing is lost
        if isinstance(value, Mapping) and holds_acted_keys(path):
            lines.extend(unacted_warnings(value, f"{path}."))
        elif not (isinstance(value, Mapping) and value.get("enabled") is False):
            lines.append(f"{path} is accepted but dsrun does not act on it: {reason_for(path)}")
    return lines
