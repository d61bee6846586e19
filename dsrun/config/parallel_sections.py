"""The `pipeline` and `activation_checkpointing` sections, declared key by key (see dsrun.config.declare).

Defaults are DeepSpeed 0.19.8's. DeepSpeed's pipeline engine reads only `activation_checkpoint_interval` and
`use_reentrant` from its section (the partitioning comes from PipelineModule's arguments), and the
`activation_checkpointing` section only takes effect through `deepspeed.checkpointing.configure()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

from dsrun.config.checks import anything, boolean, choice, integer
from dsrun.config.declare import Section, Unacted, because, key

_MODULE_ARGUMENT = ("DeepSpeed's engine does not read it either: give it to PipelineModule (num_stages=,"
                    " partition_method=, seed_layers=)")
_NO_TENSOR_PARALLEL = ("it partitions across tensor-parallel ranks, and dsrun's pipeline stages have no tensor"
                       " parallelism")


@dataclass(frozen=True)
class PipelineConfig(Section):
    # > 0: recompute every N layers in the backward (overrides PipelineModule's activation_checkpoint_interval).
    activation_checkpoint_interval: int = key(integer(minimum=0), 0)
    # None: torch.utils.checkpoint's non-reentrant form (dsrun's default); true: the reentrant one (DeepSpeed's).
    use_reentrant: bool | None = key(boolean, None)
    # dsrun's own: torch.distributed.pipelining's schedule. 1F1B keeps at most one micro-batch's activations per stage
    # in flight; GPipe runs every forward first (and is what 1F1B becomes with fewer micro-batches than stages).
    schedule: str = key(choice("1F1B", "GPipe", fold_case=True), "1F1B")

    unacted: ClassVar[Mapping[str, Unacted]] = {
        **because(_MODULE_ARGUMENT, stages=anything, partition=anything, seed_layers=anything),
        **because(_NO_TENSOR_PARALLEL, pipe_partitioned=boolean, grad_partitioned=boolean),
    }


@dataclass(frozen=True)
class ActivationCheckpointingConfig(Section):
    # Keep the activations a checkpointed function saves in CPU memory (torch.autograd.graph.save_on_cpu).
    cpu_checkpointing: bool = key(boolean, False)
    # Wait for the device at each checkpoint boundary (CUDA only; on the CPU there is nothing to wait for).
    synchronize_checkpoint_boundary: bool = key(boolean, False)

    unacted: ClassVar[Mapping[str, Unacted]] = {
        "partition_activations": Unacted(boolean, "it splits saved activations over model-parallel ranks (the mpu),"
                                         " and dsrun has no model parallelism"),
        **because("they lay out partitioned activations in one buffer, and dsrun partitions none",
                  contiguous_memory_optimization=boolean, number_checkpoints=integer(minimum=0)),
        "profile": Unacted(boolean, "dsrun does not time checkpointed functions"),
    }
