"""The `zero_optimization` section, declared key by key: stage, offload, bucket sizes, and DeepSpeed's old spellings.

Keys and defaults are DeepSpeed 0.19.8's (zero/config.py, zero/offload_config.py): offload `pin_memory` true,
5e8-element buckets; its models accept both the `stage3_`-prefixed names and the bare field names. Deprecated forms
are mapped the way DeepSpeed maps them and noted: `"zero_optimization": true` is stage 1 (and `false` stage 0),
`cpu_offload: true` is `offload_optimizer` on the CPU, `cpu_offload_param: true` is `offload_param` on the CPU.
`cpu_offload_use_pin_memory`, which DeepSpeed 0.19 reads but ignores, sets `pin_memory` of the offload dicts that do
not set it themselves, as it did when it was current.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from dsrun.config.checks import anything, boolean, choice, integer, number, string, strings
from dsrun.config.declare import Mapped, Section, Unacted, because, key, section
from dsrun.errors import UsageError

DEFAULT_BUCKET_SIZE = 500_000_000
DEFAULT_PREFETCH_BUCKET_SIZE = 50_000_000  # DeepSpeed's stage3_prefetch_bucket_size
ZERO = "zero_optimization"
OFFLOAD_DEVICES = ("none", "cpu", "nvme")

_OFFLOAD_REST = "only device and pin_memory are read; torch's CPU offload has no further settings"


@dataclass(frozen=True)
class OffloadConfig(Section):
    """`offload_param`, and the settings `offload_optimizer` shares with it."""

    device: str = key(choice(*OFFLOAD_DEVICES), "none", auto=True)  # Accelerate fills it in
    pin_memory: bool = key(boolean, True)

    unacted: ClassVar[Mapping[str, Unacted]] = because(
        _OFFLOAD_REST, nvme_path=string, buffer_count=integer(minimum=0), buffer_size=integer(minimum=0),
        max_in_cpu=integer(minimum=0))


@dataclass(frozen=True)
class OptimizerOffloadConfig(OffloadConfig):
    unacted: ClassVar[Mapping[str, Unacted]] = because(
        _OFFLOAD_REST, nvme_path=string, buffer_count=integer(minimum=0), pipeline_read=boolean,
        pipeline_write=boolean, fast_init=boolean, ratio=number(minimum=0, maximum=1), super_offload=boolean,
        cpuadam_cores_perc=number(minimum=0, maximum=1))


_ZERO_ON_TORCH = "dsrun builds the ZeRO stages on torch collectives and FSDP2, which have no such setting"
_NO_PERSISTENT = "stage 3 shards every parameter, however small (FSDP2 keeps no parameters whole)"
_LIVE = ("stage 3 frees each unit's gathered parameters after its forward and its backward; the units are"
         " stage3_prefetch_bucket_size elements at most")
_REMOVED = "removed in DeepSpeed 0.19, which refuses it"


def _both_spellings(reason: str, **checks: Any) -> dict[str, Unacted]:
    """Stage-3 settings DeepSpeed accepts as `stage3_<name>` and as `<name>`."""
    return {spelling: Unacted(check, reason, auto=name == "param_persistence_threshold")  # HF fills that one in
            for name, check in checks.items() for spelling in (f"stage3_{name}", name)}


@dataclass(frozen=True)
class ZeroConfig(Section):
    stage: int = key(integer(minimum=0, maximum=3), 0, auto=True)  # Accelerate fills it in
    offload_optimizer: OptimizerOffloadConfig | None = section(OptimizerOffloadConfig, optional=True)
    offload_param: OffloadConfig | None = section(OffloadConfig, optional=True)
    reduce_bucket_size: int = key(integer(minimum=1), DEFAULT_BUCKET_SIZE, auto=True)
    allgather_bucket_size: int = key(integer(minimum=0), DEFAULT_BUCKET_SIZE)
    prefetch_bucket_size: int = key(integer(minimum=0), DEFAULT_PREFETCH_BUCKET_SIZE,
                                    name="stage3_prefetch_bucket_size", aliases=("prefetch_bucket_size",), auto=True)
    ignore_unused_parameters: bool = key(boolean, True)
    # Stage 3: whether save_16bit_model writes a file. The fp16 spelling is DeepSpeed's deprecated one.
    gather_16bit_weights_on_model_save: bool = key(
        boolean, False, name="stage3_gather_16bit_weights_on_model_save",
        aliases=("gather_16bit_weights_on_model_save", "stage3_gather_fp16_weights_on_model_save"), auto=True)

    mapped: ClassVar[Mapping[str, Mapped]] = {
        "cpu_offload": Mapped(boolean, "offload_optimizer.device"),
        "cpu_offload_param": Mapped(boolean, "offload_param.device"),
        "cpu_offload_use_pin_memory": Mapped(boolean, "offload_optimizer.pin_memory"),
    }

    unacted: ClassVar[Mapping[str, Unacted]] = {
        "contiguous_gradients": Unacted(boolean, "stages 0-1 always keep gradients in one flat buffer and FSDP2"
                                        " manages its own"),
        "reduce_scatter": Unacted(boolean, "the collective follows the stage and backend: stages 0-1 all-reduce,"
                                  " stage 2 reduce-scatters on NCCL and all-reduces on gloo (5x faster there), FSDP2"
                                  " reduce-scatters"),
        "allgather_partitions": Unacted(boolean, "stages 1-2 gather with all-gather on NCCL and all-reduce on gloo;"
                                        " FSDP2 all-gathers"),
        "overlap_comm": Unacted(boolean, "stages 0-1 average once after the cycle's last backward (as DeepSpeed's"
                                " stage 0 does; on gloo as fast as overlapping), stage 2 after each backward, FSDP2"
                                " always overlaps"),
        "sub_group_size": Unacted(integer(minimum=0), "dsrun chooses its own optimizer-step pieces (1/16 of a rank's"
                                  " gradients when they need converting to fp32)"),
        "elastic_checkpoint": Unacted(boolean, "dsrun's checkpoints (torch.distributed.checkpoint) load at any world"
                                      " size already"),
        "load_from_fp32_weights": Unacted(boolean, "dsrun's checkpoints always restore the fp32 weights"),
        **_both_spellings(_NO_PERSISTENT, param_persistence_threshold=integer(minimum=0),
                          model_persistence_threshold=integer(minimum=0)),
        **_both_spellings(_LIVE, max_live_parameters=integer(minimum=0), max_reuse_distance=integer(minimum=0)),
        **_both_spellings(_ZERO_ON_TORCH, module_granularity_threshold=integer(),
                          use_all_reduce_for_fetch_params=boolean, allgather_sequential=boolean),
        **because(_ZERO_ON_TORCH,
                  use_multi_rank_bucket_allreduce=boolean, compute_grad_norm=boolean, legacy_stage1=boolean,
                  round_robin_gradients=boolean, parameter_alignment=boolean,
                  zero_hpz_partition_size=integer(minimum=0), zero_quantized_weights=boolean,
                  zero_quantized_nontrainable_weights=boolean, zero_quantized_gradients=boolean,
                  memory_efficient_linear=boolean, pipeline_loading_checkpoint=boolean,
                  override_module_apply=boolean, log_trace_cache_warnings=boolean, enable_sanity_checks=boolean,
                  save_muon_momentum_buffer_in_memory=boolean,
                  leaf_module={"classes": strings, "names": strings, "name_suffixes": strings},
                  zenflow={
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
                  }),
        # Removed in DeepSpeed 0.19 (it now refuses them); accepted here so older configs still load, with a note.
        "mics_shard_size": Unacted(anything, f"{_REMOVED} (MiCS sharding)"),
        "mics_hierarchical_params_gather": Unacted(anything, f"{_REMOVED} (MiCS sharding)"),
        "zeropp_loco_param": Unacted(anything, f"{_REMOVED} (LoCo ZeRO++)"),
    }

    @classmethod
    def prepare(cls, clean: dict[str, Any], notes: list[str]) -> dict[str, Any]:
        zero = dict(clean)
        for old, new in (("cpu_offload", "offload_optimizer"), ("cpu_offload_param", "offload_param")):
            if old not in zero:
                continue
            if new in zero:
                raise UsageError(f"{ZERO}.{old} and {ZERO}.{new} are both set: remove the deprecated {old}")
            if zero.pop(old):
                notes.append(f'{ZERO}.{old} is deprecated: dsrun reads it as {new} {{"device": "cpu"}}; write that'
                             " instead")
                zero[new] = {"device": "cpu"}
            else:
                notes.append(f"{ZERO}.{old} is deprecated: false means no {new}, as dsrun reads it; remove the key")
        if "cpu_offload_use_pin_memory" in zero:
            pin = zero.pop("cpu_offload_use_pin_memory")
            notes.append(f"{ZERO}.cpu_offload_use_pin_memory is deprecated: dsrun reads it as pin_memory of the"
                         " offload dicts; write pin_memory inside offload_optimizer / offload_param instead")
            for name in ("offload_optimizer", "offload_param"):
                if name in zero:
                    zero[name] = {"pin_memory": pin, **zero[name]}
        return zero

    def settle(self, clean: Mapping[str, Any], notes: list[str]) -> ZeroConfig:
        stage = self.stage
        if self.offload_param is not None and self.offload_param.device != "none" and stage < 3:
            notes.append(f"{ZERO}.offload_param is accepted but dsrun does not act on it: only stage 3 partitions"
                         f" parameters, and stage is {stage} (DeepSpeed ignores it there too)")
        ratio = clean.get("offload_optimizer", {}).get("ratio", 1.0)
        if ratio < 1 and stage < 3:
            raise UsageError(
                f"{ZERO}.offload_optimizer.ratio {ratio:g} offloads only part of the optimizer, which needs stage 3,"
                f" but stage is {stage}: set stage to 3 or set ratio to 1"
            )
        optimizer = self.offload_optimizer
        if optimizer is not None and optimizer.device != "none" and stage == 0:
            notes.append(f"{ZERO}.offload_optimizer is accepted but dsrun does not act on it: offloading needs ZeRO"
                         " stage 1-3, and stage is 0 (DeepSpeed ignores it there too)")
        for name, offload in (("offload_optimizer", optimizer), ("offload_param", self.offload_param)):
            if offload is not None and offload.device == "nvme":
                notes.append(f'{ZERO}.{name}.device "nvme" is accepted but dsrun does not act on it: dsrun offloads'
                             ' to CPU memory only, so "nvme" offloads to the CPU')
        if stage == 3 and not self.ignore_unused_parameters:
            notes.append(f"{ZERO}.ignore_unused_parameters false is accepted but dsrun does not act on it at stage 3:"
                         " FSDP2 reduces a zero gradient for a parameter a forward left unused")
        return self


def expand_legacy_zero(raw: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
    """Rewrite DeepSpeed's oldest form, `"zero_optimization": true|false`, as a section; returns the note to show."""
    value = raw.get(ZERO)
    if not isinstance(value, bool):
        return raw, None
    stage = 1 if value else 0
    zero: dict[str, Any] = {"stage": stage}
    if stage and "allgather_size" in raw:
        zero["allgather_bucket_size"] = raw["allgather_size"]
    expanded = {**raw, ZERO: zero}
    note = (f'"{ZERO}": {str(value).lower()} is deprecated: dsrun reads it as {{"stage": {stage}}};'
            f' write "{ZERO}": {{"stage": {stage}}} instead')
    return expanded, note
